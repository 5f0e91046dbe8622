"""Every command's error handling and exit codes: known failures end with one line on stderr and
a status (2 bad input, 1 a failed run or I/O error, 130/143/138 a signal), and Hydra's report of
a config it cannot compose becomes one line too. `MRL_DEBUG=1` shows the tracebacks instead."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from mrl.core.errors import ConfigError, DataNotFoundError, NonFiniteError, RunInterrupted, one_line

_COMMAND_STARTED = False


class _HeldStderr:
    """stderr that holds what is written until the command's body starts (Hydra reports a
    config it cannot compose in several lines before that), then passes everything through."""

    def __init__(self, real: Any) -> None:
        self.real, self.held = real, []

    def write(self, text: str) -> int:
        if _COMMAND_STARTED:
            self.release()
            return self.real.write(text)
        self.held.append(text)
        return len(text)

    def release(self) -> None:
        """Write what was held, unchanged."""
        if self.held:
            self.real.write("".join(self.held))
            self.held = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def condense_hydra_error(text: str) -> str:
    """Hydra's multi-line report of a config it cannot compose, as one line: its indented
    detail lines (available options, the full key) follow their heading after a colon."""
    parts: list[tuple[str, list[str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or "HYDRA_FULL_ERROR" in line:
            continue
        if line.startswith("Config search path"):
            break  # where Hydra looked: the paths of this installation, not the user's error
        if raw[0].isspace() and parts:
            parts[-1][1].append(line)
        else:
            parts.append((line, []))
    return "; ".join(
        f"{head.rstrip(':')}: {', '.join(items)}" if items else head.rstrip(".")
        for head, items in parts
    )


def hydra_cli(hydra_main: Callable[[], None], prog: str) -> Callable[[], None]:
    """The console entry of a Hydra command. Hydra reports a config it cannot compose (an
    unknown group option, a bad override) itself, in several lines, and exits 1; that is bad
    input, so it becomes one line `<prog>: error: ...` and status 2. `MRL_DEBUG=1` (or Hydra's
    own `HYDRA_FULL_ERROR=1`) leaves Hydra's report as it is."""

    def entry() -> None:
        verbose = any(
            os.environ.get(k, "") not in ("", "0") for k in ("MRL_DEBUG", "HYDRA_FULL_ERROR")
        )
        held = None if verbose else _HeldStderr(sys.stderr)
        if held is not None:
            sys.stderr = held
        try:
            hydra_main()
        except SystemExit as stop:
            if stop.code == 1 and not _COMMAND_STARTED:
                if held is not None:
                    report, held.held = "".join(held.held), []
                    sys.stderr = held.real
                    print(f"{prog}: error: {condense_hydra_error(report)}", file=sys.stderr)
                sys.exit(2)
            raise
        finally:
            if held is not None:
                held.release()
                if sys.stderr is held:
                    sys.stderr = held.real

    return entry


def run_command(prog: str, fn: Callable[[], Any]) -> Any:
    """Run a command's body; known failures end with one line on stderr and an exit status:
    2 bad input, 1 a failed run or I/O error, 130/143/138 a signal (the state was saved).
    `MRL_DEBUG=1` shows the traceback instead."""
    from omegaconf.errors import InterpolationResolutionError

    global _COMMAND_STARTED
    _COMMAND_STARTED = True
    debug = os.environ.get("MRL_DEBUG", "") not in ("", "0")
    try:
        try:
            return fn()
        except InterpolationResolutionError as err:
            # A resolver's own ConfigError (e.g. an unknown `method`), wrapped by OmegaConf.
            cause = err.__cause__ or err.__context__
            if isinstance(cause, ConfigError):
                raise cause from None
            raise
    except (ConfigError, DataNotFoundError) as err:
        code, message = 2, f"error: {one_line(err)}"
        if debug:
            raise
    except RunInterrupted as err:
        code, message = err.exit_code, f"{err}; rerun the same command to resume"
    except NonFiniteError as err:
        code, message = 1, f"error: {one_line(err)}"
        if debug:
            raise
    except OSError as err:
        if debug:
            raise
        code, message = 1, f"error: {one_line(err)}"
    print(f"{prog}: {message}", file=sys.stderr)
    sys.exit(code)
