"""A 2-process CPU DDP run (gloo) logs exactly the per-dim accuracy of a one-process evaluation."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mrl.builders import model_from_checkpoint


def accuracy_per_dim(model, loader) -> dict[int, float]:
    """Top-1 per nesting dim by a plain loop, without torchmetrics."""
    correct = {m: 0 for m in model.nesting}
    seen = 0
    with torch.no_grad():
        for x, y in loader:
            logits = model.head(model(x))
            for m, logits_m in zip(model.nesting, logits, strict=True):
                correct[m] += int((logits_m.argmax(dim=1) == y).sum())
            seen += len(y)
    return {m: c / seen for m, c in correct.items()}


@pytest.mark.slow
def test_two_process_ddp_metrics_equal_single_process_evaluation(tmp_path: Path):
    # Odd split sizes: a padding sampler would count some examples twice.
    cmd = [
        str(Path(sys.executable).parent / "mrl-train"),
        "trainer=ddp_cpu",
        "data=synthetic",
        "data.num_val=101",
        "data.num_test=77",
        "logger=csv",
        "encoder.widths=[8,16,16,32]",
        "nesting=[2,8,32]",
        "trainer.max_epochs=4",
        "trainer.enable_progress_bar=false",
        "run_id=ddp",
        f"paths.output_root={tmp_path}",
    ]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "fmnist" / "ddp"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["config"]["trainer"]["devices"] == 2

    model = model_from_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    dm = instantiate(OmegaConf.create(results["config"]["data"]))
    dm.setup("fit")
    dm.setup("test")
    val = accuracy_per_dim(model, dm.val_dataloader())
    test = accuracy_per_dim(model, dm.test_dataloader())
    assert len(dm.val_dataloader().dataset) == 101

    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/top1@32")]
    logged = rows[-1]
    for m in model.nesting:
        assert float(logged[f"val/top1@{m}"]) == pytest.approx(val[m], abs=1e-6)
    for row in results["per_dim"]:
        assert row["top1"] == pytest.approx(test[row["dim"]], abs=1e-6)
    # Not a trivially perfect model, so a counting error would show.
    assert 0.2 < test[32] < 1.0
