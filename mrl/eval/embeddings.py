"""Encode a data split once into memory-mapped `.npy` files; every dim is a slice of them.

Layout of one split: `<dir>/features.npy` (N x D, float32 or float16), `<dir>/labels.npy` (N,
int64) and `<dir>/meta.json` (what produced them). A split is written into a `.partial` folder
next to its final place and renamed when complete, so an interrupted encoding leaves nothing
that looks finished.
"""

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from mrl.eval.stages import stdout_is_terminal
from mrl.runs.files import atomic_write_json

log = logging.getLogger("mrl.eval")


def checkpoint_fingerprint(path: str | Path) -> dict[str, Any]:
    """Path, size and modification time of a checkpoint: enough to tell when it changed."""
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime": stat.st_mtime}


def read_split(split_dir: str | Path, mmap: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """`(features, labels)` of an encoded split; features memory-mapped unless `mmap=False`."""
    split_dir = Path(split_dir)
    features = np.load(split_dir / "features.npy", mmap_mode="r" if mmap else None)
    return features, np.load(split_dir / "labels.npy")


def split_is_current(split_dir: str | Path, meta: dict[str, Any]) -> bool:
    """Whether `split_dir` holds a complete encoding whose recorded meta agrees with `meta`."""
    path = Path(split_dir) / "meta.json"
    if not path.is_file() or not (Path(split_dir) / "features.npy").is_file():
        return False
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    wanted = json.loads(json.dumps(meta))  # the same JSON normalisation as the stored copy
    return all(stored.get(key) == value for key, value in wanted.items())


def _reserve(path: Path) -> None:
    """Allocate a sparse file's blocks now: a disk too small fails here as `OSError` (no space
    left) rather than as a bus error while the memory map is written."""
    with open(path, "r+b") as f:
        os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)


def _dist() -> tuple[int, int]:
    """`(rank, world_size)` of the current process group, `(0, 1)` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _barrier() -> None:
    if _dist()[1] > 1:
        torch.distributed.barrier()


@torch.no_grad()
def encode_to_disk(
    encoder: nn.Module,
    dataset: Dataset,
    split_dir: str | Path,
    meta: dict[str, Any],
    batch_size: int = 256,
    num_workers: int = 0,
    dtype: str = "float32",
    device: str | torch.device = "cpu",
    desc: str = "encoding",
) -> Path:
    """Encode `dataset` with `encoder` and stream the features to `split_dir`, in dataset order.

    Rows go straight into memory-mapped files, so memory stays at one batch whatever the data
    set's size. Under `torch.distributed` every process encodes the rows `rank::world_size` and
    writes them at their own positions of the shared files (no gather, no padding duplicates);
    rank 0 creates the files and publishes the finished folder. `meta` is stored alongside (with
    N, D and dtype added) for `split_is_current`. Call it on every rank.
    """
    rank, world = _dist()
    split_dir = Path(split_dir)
    tmp = split_dir.parent / f".{split_dir.name}.partial"
    num_examples, dim = len(dataset), int(encoder.num_features)
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            for name, kind, shape in (
                ("features.npy", dtype, (num_examples, dim)),
                ("labels.npy", np.int64, (num_examples,)),
            ):
                np.lib.format.open_memmap(tmp / name, "w+", kind, shape).flush()
                _reserve(tmp / name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    _barrier()
    try:
        features = np.load(tmp / "features.npy", mmap_mode="r+")
        labels = np.load(tmp / "labels.npy", mmap_mode="r+")
        rows = np.arange(rank, num_examples, world)
        loader = DataLoader(
            Subset(dataset, rows.tolist()) if world > 1 else dataset,
            batch_size=batch_size, shuffle=False, num_workers=num_workers,
        )  # fmt: skip
        encoder = encoder.to(device).eval()
        done = 0
        # Off a terminal the bar gives way to the stage's plain lines (see mrl.eval.stages).
        show = rank == 0 and stdout_is_terminal()
        with tqdm(total=len(rows), desc=desc, unit="img", disable=not show) as bar:
            for x, y in loader:
                z = encoder(x.to(device, non_blocking=True)).float().cpu().numpy()
                if z.shape[1] != dim:
                    raise ValueError(f"the encoder gave {z.shape[1]} features, expected {dim}")
                at = rows[done : done + len(z)]
                features[at] = z
                labels[at] = y.numpy()
                done += len(z)
                bar.update(len(z))
        if done != len(rows):
            raise ValueError(f"the loader gave {done} rows, expected {len(rows)}")
        if rank == 0 and not show:
            log.info("%s: %d rows", desc, done)
        features.flush()
        labels.flush()
        del features, labels
        _barrier()
        if rank == 0:
            full_meta = {**meta, "num_examples": num_examples, "dim": dim, "dtype": dtype}
            atomic_write_json(tmp / "meta.json", full_meta)
            if split_dir.exists():
                shutil.rmtree(split_dir)
            os.replace(tmp, split_dir)
        _barrier()
    except BaseException:
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return split_dir
