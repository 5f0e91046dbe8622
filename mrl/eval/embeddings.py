"""Encode a data split once into memory-mapped `.npy` files; every dim is a slice of them.

Layout of one split: `<dir>/features.npy` (N x D, float32 or float16), `<dir>/labels.npy` (N,
int64) and `<dir>/meta.json` (what produced them). A split is written into a temporary folder
next to its final place and renamed when complete, so an interrupted encoding leaves nothing
that looks finished.
"""

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mrl.results import atomic_write_json


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


@torch.no_grad()
def encode_to_disk(
    encoder: nn.Module,
    loader: DataLoader | Iterable[tuple[Tensor, Tensor]],
    num_examples: int,
    split_dir: str | Path,
    meta: dict[str, Any],
    dtype: str = "float32",
    device: str | torch.device = "cpu",
    desc: str = "encoding",
) -> Path:
    """Run `encoder` over `loader` (in dataset order) and stream the features to `split_dir`.

    Rows are written straight into a memory-mapped file, so memory stays at one batch whatever
    the data set's size. `meta` is stored alongside (with N, D and dtype added) for reuse checks.
    """
    split_dir = Path(split_dir)
    split_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=split_dir.parent, prefix=f".{split_dir.name}."))
    try:
        encoder = encoder.to(device).eval()
        labels = np.empty(num_examples, dtype=np.int64)
        features = None
        row = 0
        with tqdm(total=num_examples, desc=desc, unit="img", dynamic_ncols=True) as bar:
            for x, y in loader:
                z = encoder(x.to(device, non_blocking=True)).float().cpu().numpy()
                if features is None:
                    features = np.lib.format.open_memmap(
                        tmp / "features.npy",
                        mode="w+",
                        dtype=dtype,
                        shape=(num_examples, z.shape[1]),
                    )
                if row + len(z) > num_examples:
                    raise ValueError(f"the loader gave more than the expected {num_examples} rows")
                features[row : row + len(z)] = z
                labels[row : row + len(z)] = y.numpy()
                row += len(z)
                bar.update(len(z))
        if features is None or row != num_examples:
            raise ValueError(f"the loader gave {row} rows, expected {num_examples}")
        features.flush()
        del features
        np.save(tmp / "labels.npy", labels)
        full_meta = {**meta, "num_examples": num_examples, "dim": z.shape[1], "dtype": dtype}
        atomic_write_json(tmp / "meta.json", full_meta)
        if split_dir.exists():
            shutil.rmtree(split_dir)
        os.replace(tmp, split_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return split_dir
