"""What the experiment scripts share: progress lines, CSV rows read back, a Lightning callback
timing training batches, and the database split of an `mrl-eval` embeddings folder.

A script imports it after putting this folder on `sys.path`:

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from _common import progress_log
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def progress_log(name: str) -> Callable[[str], None]:
    """A function printing `[name] message` on stderr at once (the scripts' progress lines)."""

    def log(message: str) -> None:
        print(f"[{name}] {message}", file=sys.stderr, flush=True)

    return log


def read_csv_rows(
    path: Path, ints: Sequence[str] = (), floats: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The rows of a CSV file as dicts, the `ints` and `floats` columns converted (no rows when
    the file does not exist)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [
            {**r, **{k: int(r[k]) for k in ints}, **{k: float(r[k]) for k in floats}}
            for r in csv.DictReader(f)
        ]


def batch_timer() -> Any:
    """A Lightning callback whose `times` lists the wall seconds of every training batch
    (forward, loss, logging, backward, optimizer step)."""
    import lightning.pytorch as pl

    class BatchTimer(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.started = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.times.append(time.perf_counter() - self.started)

    return BatchTimer()


def largest_database_split(embeddings: Path) -> Path | None:
    """The `database*` split of an `mrl-eval` embeddings folder with the largest
    `features.npy` (None when no split has one)."""
    splits = sorted(p for p in embeddings.glob("database*") if (p / "features.npy").is_file())
    return max(splits, key=lambda p: (p / "features.npy").stat().st_size, default=None)
