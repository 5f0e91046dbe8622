"""Encoding under torch.distributed: every row written once, at its own position (dataset order)."""

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import TensorDataset

from mrl.eval.embeddings import encode_to_disk, read_split


class TinyEncoder(nn.Module):
    """A fixed linear map of the flattened input."""

    num_features = 5

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(12, self.num_features)
        with torch.no_grad():
            self.linear.weight.copy_(torch.arange(60.0).view(5, 12) / 60)
            self.linear.bias.zero_()

    def forward(self, x):
        return self.linear(x.flatten(1))


def dataset() -> TensorDataset:
    """11 examples: not divisible by 2 processes."""
    x = torch.arange(11 * 12, dtype=torch.float32).view(11, 3, 4) / 100
    return TensorDataset(x, torch.arange(11) % 3)


def encode_on_rank(rank: int, world: int, store: str, out: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world
    )
    try:
        encode_to_disk(TinyEncoder(), dataset(), Path(out), {"test": True}, batch_size=2)
    finally:
        torch.distributed.destroy_process_group()


def test_two_processes_write_the_same_file_as_one(tmp_path: Path):
    single = encode_to_disk(TinyEncoder(), dataset(), tmp_path / "single", {"test": True})
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    mp.spawn(encode_on_rank, args=(2, str(tmp_path / "store"), str(tmp_path / "double")), nprocs=2)
    f1, y1 = read_split(single, mmap=False)
    f2, y2 = read_split(tmp_path / "double", mmap=False)
    np.testing.assert_array_equal(y2, np.arange(11) % 3)
    np.testing.assert_allclose(f2, f1, rtol=1e-6)
    expected = TinyEncoder()(dataset().tensors[0]).detach().numpy()
    np.testing.assert_allclose(f1, expected, rtol=1e-6)
    meta = json.loads((tmp_path / "double" / "meta.json").read_text())
    assert meta["num_examples"] == 11 and meta["dim"] == 5
    assert not list(tmp_path.glob(".*.partial"))
