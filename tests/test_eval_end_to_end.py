"""`mrl-eval` on a briefly trained Fashion-MNIST checkpoint writes embeddings and every table."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_eval, compose_train, requires_fmnist

from mrl.cli.evaluate import evaluate
from mrl.cli.train import train
from mrl.core.errors import ConfigError

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


@requires_fmnist
@pytest.mark.slow
def test_eval_with_augmented_copies_and_a_cached_ivf_first_stage(trained_run: Path, tmp_path):
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    overrides = [
        f"ckpt_path={ckpt}", f"out_dir={tmp_path}", "database.augmented_copies=2", "heads=false",
        "probe.enabled=false", "robustness.corruptions=[]", "adaptive_classification.enabled=false",
        "retrieval.ks=[10]", "retrieval.knn_ks=[1]", "adaptive_retrieval.first_stage=ivf",
        "retrieval.index.nlist=8", "retrieval.index.nprobe=8", "retrieval.index.coarse_dim=4",
    ]  # fmt: skip
    summary = evaluate(compose_eval(*overrides))
    assert summary["database_size"] == 3 * 3000
    split = tmp_path / "embeddings" / "database-copies2-seed0-shift2"
    features = np.load(split / "features.npy", mmap_mode="r")
    plain = [o for o in overrides if not o.startswith(("out_dir", "database."))]
    evaluate(compose_eval(*plain, f"out_dir={tmp_path / 'plain'}", "retrieval.enabled=false",
                          "adaptive_retrieval.enabled=false"))  # fmt: skip
    original = np.load(tmp_path / "plain" / "embeddings" / "database" / "features.npy")
    # Copy 0 is the training split itself; the copies are different images of the same labels.
    np.testing.assert_allclose(features[:3000], original, atol=1e-5)
    assert not np.allclose(features[3000:6000], original, atol=1e-3)
    labels = np.load(split / "labels.npy")
    np.testing.assert_array_equal(labels[:3000], labels[3000:6000])
    rows = read_rows(tmp_path / "eval" / "adaptive_retrieval.csv")
    stages = {r["method"]: r["first_stage"] for r in rows}
    assert stages["exact"] == "exact" and stages["adaptive"] == "ivf" == stages["funnel"]
    # nprobe = nlist scans every list: the cascades are as good as with an exact first stage.
    assert all(float(r["recall_vs_exact@10"]) > 0.5 for r in rows)
    indexes = sorted((split / "indexes").glob("ivf-*.faiss"))
    assert indexes
    mtimes = [p.stat().st_mtime_ns for p in indexes]
    evaluate(compose_eval(*overrides))
    assert [p.stat().st_mtime_ns for p in indexes] == mtimes  # reused, not rebuilt
    metrics = read_rows(tmp_path / "eval" / "metrics.csv")
    names = {(int(r["dim"]), r["metric"]) for r in metrics}
    assert (4, "tied_queries@10") in names and (64, "zero_prefix_fraction") in names
    assert (64, "tied_queries@10") not in names  # tie-aware only up to dim 8
