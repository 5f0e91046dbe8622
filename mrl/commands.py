"""Every command's error handling and exit codes: known failures end with one line on stderr and
a status (2 bad input, 1 a failed run or I/O error, 130/143/138 a signal), and Hydra's report of
a config it cannot compose becomes one line too, as does a sweep sent to SLURM's launcher
(`-m hydra/launcher=slurm`) from a machine without SLURM or without the launcher plugin.
`MRL_DEBUG=1` shows the tracebacks instead."""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from mrl.core.errors import ConfigError, DataNotFoundError, NonFiniteError, RunInterrupted, one_line

_COMMAND_STARTED = False

# What submitit's SLURM executor runs: `srun` (it looks for it first) and `sbatch` (it submits).
SLURM_TOOLS = ("sbatch", "srun")
# An override choosing submitit's SLURM launcher: this package's `slurm` or the plugin's own.
_SLURM_LAUNCHER = re.compile(r"\+{0,2}hydra/launcher=(submitit_)?slurm")


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


def slurm_launcher_requested(argv: Sequence[str]) -> bool:
    """Whether a Hydra command line sweeps (`-m`) through submitit's SLURM launcher."""
    multirun = any(arg in ("-m", "--multirun") for arg in argv)
    return multirun and any(_SLURM_LAUNCHER.fullmatch(arg) for arg in argv)


def slurm_launcher_problem() -> str | None:
    """What the SLURM launcher lacks on this machine (its plugin, or SLURM's commands on PATH)
    and the fix, in one line; None when it has everything."""
    from mrl.extras import missing_message

    lacking = missing_message("hydra/launcher=slurm", "slurm")
    if lacking is not None:
        return lacking
    missing = [tool for tool in SLURM_TOOLS if shutil.which(tool) is None]
    if not missing:
        return None
    tools = " and ".join(missing)
    return (f"hydra/launcher=slurm needs SLURM's {tools} on PATH (not found): run on a cluster "
            "login node, or drop hydra/launcher=slurm to run the sweep here")  # fmt: skip


def _causes(err: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def launcher_failure(err: BaseException | None) -> str | None:
    """The one-line report of a sweep whose SLURM launcher failed for want of SLURM (submitit
    found no `srun` or `sbatch`) or of the launcher plugin (Hydra found no `submitit_slurm`
    config); None when `err` and its causes are any other failure."""
    from mrl.extras import missing_message

    for cause in _causes(err):
        text = str(cause)
        if "hydra/launcher/submitit_slurm" in text:  # the config the plugin registers
            return missing_message("hydra/launcher=slurm", "slurm")
        if 'Could not detect "srun"' in text or (
            isinstance(cause, FileNotFoundError) and cause.filename in SLURM_TOOLS
        ):
            return slurm_launcher_problem()
    return None


def hydra_cli(hydra_main: Callable[[], None], prog: str) -> Callable[[], None]:
    """The console entry of a Hydra command. Hydra reports a config it cannot compose (an
    unknown group option, a bad override) itself, in several lines, and exits 1; that is bad
    input, so it becomes one line `<prog>: error: ...` and status 2. So does a sweep through the
    SLURM launcher where SLURM or the launcher plugin is missing. `MRL_DEBUG=1` (or Hydra's
    own `HYDRA_FULL_ERROR=1`) leaves Hydra's report as it is."""

    def entry() -> None:
        # Hydra reads the launcher only once it sweeps, after writing the sweep folder; the
        # command line names it in the usual case, so that case fails before anything is made.
        problem = slurm_launcher_problem() if slurm_launcher_requested(sys.argv[1:]) else None
        if problem:
            print(f"{prog}: error: {problem}", file=sys.stderr)
            sys.exit(2)
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
                    # Hydra's report of an error it caught is this exit's context.
                    message = launcher_failure(stop.__context__) or condense_hydra_error(report)
                    print(f"{prog}: error: {message}", file=sys.stderr)
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
