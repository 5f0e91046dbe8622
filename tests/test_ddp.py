"""A 2-process CPU DDP run (gloo) logs exactly the per-dim accuracy of a one-process evaluation."""

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mrl.saved import load_saved

MRL_TRAIN = Path(sys.executable).parent / "mrl-train"
# Odd split sizes: a padding sampler would count some examples twice.
COMMON = [
    "data=synthetic", "data.num_val=101", "data.num_test=77", "logger=csv", "optimizer=adamw",
    "encoder.widths=[8,16,16,32]", "nesting=[2,8,32]", "trainer.max_epochs=4",
    "trainer.enable_progress_bar=false",
]  # fmt: skip


# Lightning gives each process cpu_count / local processes threads, which differs between one
# node with two processes and two nodes with one; fixing it keeps the float sums identical.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


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


@pytest.fixture(scope="module")
def one_node_run(tmp_path_factory) -> Path:
    """A 2-process DDP run on one node; returns its run directory."""
    root = tmp_path_factory.mktemp("ddp")
    cmd = [str(MRL_TRAIN), "trainer=ddp_cpu", *COMMON, "run_id=ddp", f"paths.output_root={root}"]
    done = subprocess.run(
        cmd, cwd=root, env=ONE_THREAD, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "synthetic" / "ddp"


@pytest.mark.slow
def test_two_process_ddp_metrics_equal_single_process_evaluation(one_node_run: Path):
    run_dir = one_node_run
    results = json.loads((run_dir / "results.json").read_text())
    assert results["config"]["trainer"]["devices"] == 2

    model = load_saved(run_dir / "checkpoints" / "last.ckpt").module
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_simulated_on_one_machine_match_one_node_with_two_processes(
    tmp_path: Path, one_node_run: Path
):
    """Two launches with NODE_RANK 0 and 1 (one process each), as a 2-node job runs them."""
    port = free_port()
    launches = []
    for node_rank in (0, 1):
        env = {**ONE_THREAD, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "NODE_RANK": str(node_rank), "LOCAL_RANK": "0", "WORLD_SIZE": "2"}  # fmt: skip
        root = tmp_path / f"node{node_rank}"
        cmd = [str(MRL_TRAIN), "trainer=ddp_cpu", "trainer.devices=1", "trainer.num_nodes=2",
               *COMMON, "run_id=two_nodes", f"paths.output_root={root}"]  # fmt: skip
        launches.append(
            subprocess.Popen(
                cmd,
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
        )
    outputs = [p.communicate(timeout=600) for p in launches]
    for p, (_, err) in zip(launches, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]

    single = json.loads((one_node_run / "results.json").read_text())
    node0 = tmp_path / "node0" / "synthetic" / "two_nodes"
    multi = json.loads((node0 / "results.json").read_text())
    assert not (
        tmp_path / "node1" / "synthetic" / "two_nodes" / "results.json"
    ).exists()  # rank 0 only
    assert multi["config"]["trainer"]["num_nodes"] == 2
    assert multi["per_dim"] == single["per_dim"]
    a = load_saved(one_node_run / "checkpoints" / "last.ckpt").module
    b = load_saved(node0 / "checkpoints" / "last.ckpt").module
    for key, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[key], value, msg=key)
