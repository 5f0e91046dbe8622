"""`mrl-eval` on a briefly trained Fashion-MNIST checkpoint writes embeddings and every table."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_eval, compose_train, requires_fmnist

from mrl.errors import ConfigError
from mrl.evaluate import evaluate
from mrl.train import train

NESTING = [4, 16, 64]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    cfg = compose_train(
        run_dir, "logger=csv", f"nesting=[{','.join(map(str, NESTING))}]",
        "encoder.widths=[16,32,32,64]", "data.limit_train=3000", "data.limit_val=500",
        "data.limit_test=600", "data.batch_size=64", "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false", "callbacks.lr_monitor=null",
    )  # fmt: skip
    train(cfg)
    return run_dir


def read_rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@requires_fmnist
@pytest.mark.slow
def test_eval_writes_embeddings_and_every_table(trained_run: Path):
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    summary = evaluate(
        compose_eval(
            f"ckpt_path={ckpt}", "robustness.severities=[1,5]", "probe.max_iter=30",
            "retrieval.ks=[10,25]",
        )
    )  # fmt: skip
    emb = trained_run / "embeddings"
    db = np.load(emb / "database" / "features.npy", mmap_mode="r")
    query = np.load(emb / "query" / "features.npy", mmap_mode="r")
    assert db.shape == (3000, 64) and query.shape == (600, 64)
    assert np.load(emb / "query" / "labels.npy").shape == (600,)
    assert (emb / "query-gaussian_noise-5" / "features.npy").exists()

    rows = read_rows(trained_run / "eval" / "metrics.csv")
    assert list(rows[0]) == ["dataset", "split", "method", "dim", "metric", "value"]
    clean = {(int(r["dim"]), r["metric"]): float(r["value"]) for r in rows if r["split"] == "query"}
    for m in NESTING:
        for metric in ["head_top1", "head_top5", "probe_top1", "1nn", "knn@5", "map@10",
                       "precision@25", "recall@25"]:  # fmt: skip
            assert 0.0 <= clean[(m, metric)] <= 1.0, (m, metric)
        assert clean[(m, "head_top1")] > 0.25  # chance is 0.1
    assert clean[(NESTING[-1], "head_top1")] > 0.6
    # The heads' numbers equal what training logged for the same test set.
    results = json.loads((trained_run / "results.json").read_text())
    for row in results["per_dim"]:
        # One borderline example may flip between batched and stored-feature numerics.
        assert clean[(row["dim"], "head_top1")] == pytest.approx(row["top1"], abs=1.01 / 600)
    noisy = {
        (int(r["dim"]), r["metric"]): float(r["value"])
        for r in rows
        if r["split"] == "query-gaussian_noise-5"
    }
    assert noisy[(64, "head_top1")] < clean[(64, "head_top1")]
    assert (64, "map@10") in noisy

    sweep = read_rows(trained_run / "eval" / "adaptive_classification.csv")
    assert len(sweep) > 3 and {"accuracy", "expected_dim"} <= set(sweep[0])
    adaptive = read_rows(trained_run / "eval" / "adaptive_retrieval.csv")
    assert {"exact", "adaptive", "funnel"} <= {r["method"] for r in adaptive}
    on_disk = json.loads((trained_run / "eval" / "summary.json").read_text())
    assert on_disk["per_dim"]["64"]["head_top1"] == summary["per_dim"]["64"]["head_top1"]
    assert "oracle" in on_disk["adaptive_classification"]


@requires_fmnist
@pytest.mark.slow
def test_eval_reuses_current_embeddings(trained_run: Path):
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    fast = [
        f"ckpt_path={ckpt}", "probe.enabled=false", "robustness.corruptions=[]",
        "adaptive_retrieval.enabled=false", "adaptive_classification.enabled=false",
    ]  # fmt: skip
    evaluate(compose_eval(*fast))
    features = trained_run / "embeddings" / "query" / "features.npy"
    stamp = features.stat().st_mtime_ns
    evaluate(compose_eval(*fast))
    assert features.stat().st_mtime_ns == stamp
    evaluate(compose_eval(*fast, "reuse_embeddings=false"))
    assert features.stat().st_mtime_ns != stamp


def test_eval_of_a_missing_checkpoint_is_one_line(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        evaluate(compose_eval(f"ckpt_path={tmp_path / 'nope.ckpt'}"))
