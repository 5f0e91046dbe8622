"""Checkpoints are replaced atomically: an interrupted save leaves the previous file intact."""

from pathlib import Path

import pytest
import torch

from mrl.training.checkpoint_io import AtomicCheckpointIO


def test_save_replaces_atomically_and_survives_a_failed_write(tmp_path: Path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    assert torch.load(path, weights_only=False)["step"] == 1

    def dies_mid_write(obj, f):
        f.write(b"partial bytes")
        raise KeyboardInterrupt  # a kill during the write

    monkeypatch.setattr(torch, "save", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False)["step"] == 1  # the old checkpoint is intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temp left
    io.save_checkpoint({"step": 3}, path)
    assert torch.load(path, weights_only=False)["step"] == 3
