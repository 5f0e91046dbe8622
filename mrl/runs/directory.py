"""A run directory before any work: its name, that it can be written, the lock that keeps one
live process per directory, and the temporary files that killed writers left."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from mrl.core.errors import ConfigError
from mrl.runs.checkpoints import CHECKPOINT_DIR

log = logging.getLogger("mrl.runs.directory")

LOCK_FILE = ".lock"


def is_rank_zero_process() -> bool:
    """Whether this process is global rank 0 of its job, from the launchers' environment
    (torchrun, SLURM, Lightning's DDP launcher); True for a plain single process."""
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"):
        value = os.environ.get(key)
        if value not in (None, "", "0"):
            return False
    return True


def check_run_id(run_id: Any) -> None:
    """`run_id` must be a plain directory name (no separators, not `.` or `..`)."""
    if run_id in (None, ""):
        return
    text = str(run_id)
    if "/" in text or "\\" in text or text in (".", "..") or text.startswith(".") or "\0" in text:
        raise ConfigError(
            f"run_id={text!r} is not a plain name: use letters, digits, '-', '_' (no '/', no "
            f"leading '.'); to choose a directory elsewhere pass hydra.run.dir=<dir>"
        )


def check_writable(
    run_dir: Path, fix: str = "choose another with paths.output_root=<dir> (or MRL_OUTPUT_ROOT)"
) -> None:
    """Create `run_dir` and check that files can be written into it (one line with `fix` if
    not)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test.{os.getpid()}.tmp"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(
            f"cannot write the run directory {run_dir}: {err.strerror or err}; {fix}"
        ) from err


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """An exclusive lock on a run directory: the file `.lock` holds the owner's pid, host and
    SLURM job. A lock whose process is gone (same host, dead pid) or that belongs to this very
    SLURM job (a requeued job) is stale and taken over; any other is refused in one line."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_FILE
        self.owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "slurm_job": os.environ.get("SLURM_JOB_ID"),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self.held = False

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable or half-written: written by a process killed at once

    def _stale(self, holder: dict) -> bool:
        if not holder:
            return True
        job = holder.get("slurm_job")
        if job and job == self.owner["slurm_job"]:
            return True
        return holder.get("host") == self.owner["host"] and not _pid_alive(int(holder["pid"]))

    def acquire(self) -> None:
        """Take the lock or raise `ConfigError` naming the live process that holds it."""
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue
                if not self._stale(holder):
                    raise ConfigError(
                        f"{self.path.parent} is in use by process {holder.get('pid')} on "
                        f"{holder.get('host')} (since {holder.get('since')}): wait for it, or "
                        f"choose another run_id=; if that process is gone, delete {self.path}"
                    ) from None
                log.info("taking over the stale lock of process %s", holder.get("pid"))
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.owner, f)
            self.held = True
            return
        raise ConfigError(f"could not lock {self.path.parent}: another process keeps taking it")

    def release(self) -> None:
        if self.held and self._holder() == self.owner:
            self.path.unlink(missing_ok=True)
        self.held = False


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the `.<name>.<...>.tmp` files that killed writers left (the run is locked)."""
    removed = []
    for folder in (run_dir, run_dir / CHECKPOINT_DIR, run_dir / "eval"):
        for tmp in folder.glob(".*.tmp") if folder.is_dir() else []:
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    if removed:
        log.info("removed %d temporary file(s) left by killed processes", len(removed))
    return removed
