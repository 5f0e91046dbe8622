"""Provenance of runs: what made a result (code revision, config, seed, hardware, wall time).

- `current_provenance()`: the machine and code of the running process, for the training code to
  store under `results.json["provenance"]`;
- `collect_provenance(run_dir)`: read back what travels with a finished run;
- `summarize(provenances)`: the one-line figure footer, "made from N runs, git <rev>, <hardware>";
- `is_recorded(provenance)`: whether a run stored any of it (runs older than the record do not);
- `cpu_name()`: the CPU model of this machine, for benchmarks that state where they ran.
"""

from __future__ import annotations

import datetime as _dt
import platform
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from mrl.runs.files import read_json, read_yaml

UNKNOWN = "unknown"
# What `current_provenance` records; a run holding none of these predates the record.
RECORDED_KEYS = (
    "git_revision", "git_dirty", "mrl_version", "command", "date", "hostname", "platform",
    "python", "torch", "cuda_device",
)  # fmt: skip
# The package's own checkout, not the caller's working directory (Hydra changes it per run).
_PACKAGE_DIR = Path(__file__).resolve().parent


def _git(*args: str, cwd: Path = _PACKAGE_DIR) -> str | None:
    """Output of a read-only git command, or None when git or the checkout is unavailable."""
    try:
        done = subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _gpu_name() -> str | None:
    """Name of CUDA device 0, only where torch is already imported (never pulls torch in)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(0))
    except Exception:  # a broken driver must not fail the run that records provenance
        return None
    return None


def current_provenance() -> dict[str, Any]:
    """The code and machine of this process, for `results.json["provenance"]`.

    Keys: `git_revision` (short hash, or "unknown" outside a git checkout), `git_dirty`
    (tracked files modified; None when unknown), `mrl_version` (the installed package's
    version, or None), `command` (this process's command line), `date` (UTC, ISO 8601, to the
    second), `hostname`, `platform`, `python`, `torch` (installed version, or None),
    `cuda_device` (GPU 0's name where torch is imported and sees one, else None).
    """
    revision = _git("rev-parse", "--short", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if revision else None
    return {
        "git_revision": revision or UNKNOWN,
        "git_dirty": None if status is None else bool(status),
        "mrl_version": _version("mrl"),
        "command": _command(sys.argv),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "cuda_device": _gpu_name(),
    }


def cpu_name() -> str:
    """The CPU's model name as `/proc/cpuinfo` gives it, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _command(argv: list[str]) -> str | None:
    """The command line as typed: the program's name, not its full path, then its arguments."""
    if not argv or not argv[0]:
        return None
    return shlex.join([Path(argv[0]).name, *argv[1:]])


def _hydra_command(run_dir: Path) -> str | None:
    """The command line a Hydra run was started with, rebuilt from `.hydra/`: the job name
    (`train` -> `mrl-train`) and the overrides of that job."""
    overrides = read_yaml(run_dir / ".hydra" / "overrides.yaml")
    if not isinstance(overrides, list):
        return None
    hydra = read_yaml(run_dir / ".hydra" / "hydra.yaml")
    name = None
    if isinstance(hydra, dict) and isinstance(hydra.get("hydra"), dict):
        job = hydra["hydra"].get("job")
        name = job.get("name") if isinstance(job, dict) else None
    program = f"mrl-{name.replace('_', '-')}" if isinstance(name, str) and name else "mrl-train"
    return shlex.join([program, *(str(o) for o in overrides)])


def collect_provenance(run_dir: str | Path) -> dict[str, Any]:
    """What travels with a run folder: config, seed, wall time, git revision and hardware.

    Reads `results.json` (`config`, `seed`, `wall_time_s`, `experiment`, and `provenance` when
    the training code stored one) and falls back to `.hydra/config.yaml` for the config and to
    `.hydra/overrides.yaml` for the command. Keys always present: `run_dir`, `experiment`,
    `seed`, `wall_time_s`, `git_revision`, `git_dirty`, `mrl_version`, `command`, `date`,
    `hostname`, `platform`, `python`, `torch`, `cuda_device`, `hardware` (the GPU name, else the
    host name, else "unknown") and `config` (a dict, or None); unknown values are None, except
    `git_revision` which is "unknown".
    """
    run_dir = Path(run_dir)
    results = read_json(run_dir / "results.json") or {}
    config = results.get("config") if isinstance(results.get("config"), dict) else None
    if config is None:
        config = read_yaml(run_dir / ".hydra" / "config.yaml")
        config = config if isinstance(config, dict) else None
    stored = results.get("provenance") if isinstance(results.get("provenance"), dict) else {}
    seed = results.get("seed", (config or {}).get("seed"))
    out: dict[str, Any] = {
        "run_dir": str(run_dir),
        "experiment": results.get("experiment") or (config or {}).get("name"),
        "seed": seed,
        "wall_time_s": results.get("wall_time_s"),
        "git_revision": stored.get("git_revision") or UNKNOWN,
        "git_dirty": stored.get("git_dirty"),
        "mrl_version": stored.get("mrl_version"),
        "command": stored.get("command") or _hydra_command(run_dir),
        "date": stored.get("date"),
        "hostname": stored.get("hostname"),
        "platform": stored.get("platform"),
        "python": stored.get("python"),
        "torch": stored.get("torch"),
        "cuda_device": stored.get("cuda_device"),
        "config": config,
    }
    out["hardware"] = out["cuda_device"] or out["hostname"] or UNKNOWN
    return out


def is_recorded(provenance: dict[str, Any]) -> bool:
    """Whether a run's provenance holds anything recorded (the command rebuilt from Hydra's
    overrides does not count: every Hydra run has it)."""
    return any(
        provenance.get(k) not in (None, "", UNKNOWN) for k in RECORDED_KEYS if k != "command"
    )


def _joined(values: Iterable[Any], what: str) -> str:
    known = sorted({str(v) for v in values if v not in (None, "", UNKNOWN)})
    if not known:
        return f"{what} unknown"
    if len(known) > 2:
        return f"{what} {known[0]}, {known[1]} +{len(known) - 2} more"
    return f"{what} " + ", ".join(known)


def summarize(provenances: Iterable[dict[str, Any]]) -> str:
    """Footer line "made from N runs, git <rev>, <hardware>" of the runs behind a figure."""
    runs = list(provenances)
    noun = "run" if len(runs) == 1 else "runs"
    revisions = [
        f"{p.get('git_revision')}{'+dirty' if p.get('git_dirty') else ''}"
        if p.get("git_revision") not in (None, UNKNOWN)
        else None
        for p in runs
    ]
    git = _joined(revisions, "git")
    hardware = _joined((p.get("hardware") for p in runs), "hardware")
    if hardware != "hardware unknown":
        hardware = hardware.removeprefix("hardware ")
    return f"made from {len(runs)} {noun}, {git}, {hardware}"
