"""Exceptions that carry a one-line message for the user, and the one line an error becomes."""

import signal
from pathlib import Path

# The exit status of a command stopped by each signal it handles (128 + the signal's number).
SIGNAL_EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGUSR1: 138}


class ConfigError(ValueError):
    """A configuration value is invalid; the message names it and the fix."""


class DataNotFoundError(FileNotFoundError):
    """A data set's files are absent; the message names the path and how to get them."""


class NonFiniteError(FloatingPointError):
    """A loss or a tensor to be saved is NaN or infinite; the message names the step."""


class DataError(ConfigError):
    """A data set's files are there but unusable (corrupt, truncated, inconsistent)."""


class RunInterrupted(Exception):
    """The run stopped on a signal after saving what a rerun resumes from."""

    def __init__(self, signum: int, saved: Path | None) -> None:
        self.signum, self.saved = signum, saved
        self.exit_code = SIGNAL_EXIT_CODES.get(signum, 128 + int(signum))
        name = signal.Signals(signum).name
        where = f"saved {saved}" if saved else "nothing new to save"
        super().__init__(f"stopped by {name} ({where})")


def one_line(err: BaseException) -> str:
    """An exception as one line: an OS error names its path and cause."""
    if isinstance(err, OSError) and err.strerror:
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{err.strerror}"
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
