"""Checkpoint files: where a run keeps them, reading one safely, checking its tensors are finite
and that its weights fit a model. Plain PyTorch: every command reads checkpoints through here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mrl.core.errors import ConfigError, NonFiniteError

CHECKPOINT_DIR = "checkpoints"
LAST, INTERRUPTED = "last.ckpt", "interrupted.ckpt"


def load_checkpoint(
    path: str | Path, where: str = "ckpt_path", lightning: bool = True
) -> dict[str, Any]:
    """Load a checkpoint on the CPU; an absent, empty, truncated or (with `lightning`, the
    default) non-Lightning file is one `ConfigError` line naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{where}={path} does not exist (or is not a file)")
    if path.stat().st_size == 0:
        raise ConfigError(f"{where}={path} is an empty file, not a checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many types for a bad file
        first = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise ConfigError(
            f"{where}={path} is not a readable checkpoint (truncated or corrupt?): {first}"
        ) from err
    if lightning and (not isinstance(ckpt, dict) or "state_dict" not in ckpt):
        raise ConfigError(f"{where}={path} is not a Lightning checkpoint (no state_dict)")
    return ckpt


def non_finite_tensors(state: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors in `state` holding NaN or infinity."""
    return [
        name
        for name, t in state.items()
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]


def check_finite_state(state: dict[str, Any], what: str) -> None:
    """Raise `NonFiniteError` naming the first non-finite tensors of `state`."""
    bad = non_finite_tensors(state)
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise NonFiniteError(f"{what} has {len(bad)} non-finite tensor(s): {shown}")


def resumable_checkpoints(run_dir: Path) -> list[Path]:
    """The run's resumable checkpoints (SLURM requeue, interrupted, last), newest first."""
    found = [
        *run_dir.glob("hpc_ckpt_*.ckpt"),
        run_dir / CHECKPOINT_DIR / INTERRUPTED,
        run_dir / CHECKPOINT_DIR / LAST,
    ]
    return sorted((p for p in found if p.is_file()), key=lambda p: p.stat().st_mtime, reverse=True)


def check_compatible(model: torch.nn.Module, ckpt: dict[str, Any], path: Path) -> None:
    """The checkpoint's weights must fit the model this config builds (same nesting, head,
    classes, channels, encoder): one line naming the first mismatch otherwise."""
    own = model.state_dict()
    theirs = ckpt["state_dict"]
    missing = [k for k in own if k not in theirs]
    unexpected = [k for k in theirs if k not in own]
    shapes = [
        f"{k} {tuple(theirs[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in theirs and torch.is_tensor(theirs[k]) and theirs[k].shape != own[k].shape
    ]
    problems = (
        [f"shape of {s}" for s in shapes[:2]]
        + [f"missing {k}" for k in missing[:2]]
        + [f"unexpected {k}" for k in unexpected[:2]]
    )
    if problems:
        raise ConfigError(
            f"checkpoint {path} does not fit the model of this config ({'; '.join(problems)}): "
            f"resume with the nesting, head, classes and encoder it was trained with, or start "
            f"a new run (another run_id=)"
        )


def checkpoint_path(source: str | Path, where: str = "checkpoint") -> Path:
    """The checkpoint file of `source`: itself, or a run directory's `checkpoints/last.ckpt`."""
    path = Path(source)
    if path.is_dir():
        last = path / CHECKPOINT_DIR / LAST
        if not last.is_file():
            raise ConfigError(
                f"{path} is a folder without {CHECKPOINT_DIR}/{LAST}: give a run directory of "
                f"mrl-train or mrl-train-text, or the checkpoint file itself"
            )
        return last
    if not path.is_file():
        raise ConfigError(f"{where}={path} does not exist: give a run directory or a .ckpt file")
    return path


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory a checkpoint belongs to (where its results files are)."""
    return (
        checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINT_DIR else checkpoint.parent
    )
