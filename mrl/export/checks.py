"""The checks an export makes before any work: the requested head and the output folder (the
dims are checked by `mrl.saved.check_dims`). Bad input is a `ConfigError` whose one line names
the problem and the fix."""

from __future__ import annotations

import os
from pathlib import Path

from mrl.core.errors import ConfigError
from mrl.saved import SavedModel


def check_head(source: SavedModel, head: bool) -> None:
    """Refuse `head=True` for a model without a classification head."""
    if head and source.head is None:
        raise ConfigError(
            f"the checkpoint has no classification head (a {source.task} run): drop --head"
        )


def check_out_dir(out_dir: str | Path) -> Path:
    """`out_dir`, which must be absent or an empty folder, inside a writable folder."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file: give a new folder")
    if out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"--out {out} is not empty: give a new folder or remove it")
    parent = out.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: cannot write into {parent}; give a folder you can write")
    return out
