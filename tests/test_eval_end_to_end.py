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
from mrl.eval.pipeline import remove_stale_tables, zero_prefix_rows
from mrl.eval.summary import format_speedup, format_summary

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
        all_zero = np.mean(~np.asarray(query[:, :m]).any(axis=1))
        assert clean[(m, "zero_prefix")] == pytest.approx(all_zero)
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


@requires_fmnist
@pytest.mark.slow
def test_a_study_switched_off_removes_its_stale_table(trained_run: Path, tmp_path, capsys):
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    quick = [
        f"ckpt_path={ckpt}", f"out_dir={tmp_path}", "probe.enabled=false",
        "robustness.corruptions=[]", "retrieval.ks=[10]", "retrieval.knn_ks=[1]",
    ]  # fmt: skip
    eval_dir = tmp_path / "eval"
    summary = evaluate(compose_eval(*quick))
    printed = capsys.readouterr().out
    tables = [eval_dir / "adaptive_classification.csv", eval_dir / "adaptive_retrieval.csv"]
    assert all(p.is_file() for p in tables)
    # The cascade's reference is the largest head on the report half, the table's on all.
    ac = summary["adaptive_classification"]
    n_report, n_cal = ac["n_report"], ac["n_calibration"]
    assert n_report + n_cal == summary["query_size"] == 600
    assert f"measured on the other {n_report}" in printed
    full = summary["per_dim"][str(NESTING[-1])]["head_top1"]
    assert f"{100 * full:.2f}% on all 600 queries" in printed
    # Class-level recall@10 (ceiling 10 / ~300 same-class items) leaves the table for a line.
    ceiling = summary["recall_ceiling"]["recall@10"]
    assert 0 < ceiling < 0.05
    header = next(line for line in printed.splitlines() if line.lstrip().startswith("dim"))
    assert "recall@10" not in header
    assert f"recall@10 (ceiling {100 * ceiling:.2f}% here" in printed
    for row in read_rows(eval_dir / "adaptive_retrieval.csv"):
        assert 0 <= float(row["map@10"]) <= float(row["map_standard@10"]) + 1e-12 <= 1 + 1e-12
    assert (64, "map_standard@10") in {
        (int(r["dim"]), r["metric"]) for r in read_rows(eval_dir / "metrics.csv")
    }

    mine = eval_dir / "notes.txt"  # not a file mrl-eval writes: it stays
    mine.write_text("keep me")
    evaluate(compose_eval(*quick, "adaptive_classification.enabled=false",
                          "adaptive_retrieval.enabled=false"))  # fmt: skip
    assert not any(p.exists() for p in tables)
    assert mine.read_text() == "keep me"
    assert (eval_dir / "metrics.csv").is_file() and (eval_dir / "summary.json").is_file()


def test_remove_stale_tables_removes_only_the_studies_not_written(tmp_path: Path):
    for name in ("adaptive_classification.csv", "adaptive_retrieval.csv", "metrics.csv", "x.csv"):
        (tmp_path / name).write_text("old")
    removed = remove_stale_tables(tmp_path, {"adaptive_retrieval"})
    assert removed == [tmp_path / "adaptive_classification.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "adaptive_retrieval.csv", "metrics.csv", "x.csv",
    ]  # fmt: skip
    assert remove_stale_tables(tmp_path / "missing", set()) == []


def fake_summary(recall_ceiling: float, speedup: float) -> dict:
    per_dim = {
        str(m): {"head_top1": 0.8 + m / 1000, "1nn": 0.78, "map@10": 0.7, "map_standard@10": 0.71,
                 "precision@10": 0.72, "recall@10": 0.0012}
        for m in (4, 64)
    }  # fmt: skip
    adaptive = {"method": "adaptive", "dims": "4>64", "shortlists": "200>10", "map@10": 0.69,
                "map_standard@10": 0.7, "mflops_per_query": 1.0,
                "speedup_vs_exact": speedup}  # fmt: skip
    exact = {**adaptive, "method": "exact", "dims": "64", "speedup_vs_exact": 1.0}
    return {
        "method": "mrl", "checkpoint": "last.ckpt", "nesting": [4, 64], "query_size": 1000,
        "per_dim": per_dim, "recall_ceiling": {"recall@10": recall_ceiling},
        "adaptive_classification": {
            "largest_dim_accuracy": 0.8606, "smallest_expected_dim": 20.0, "dim_reduction": 3.2,
            "tolerance": 0.001, "smallest_fixed_dim": None, "n_calibration": 500,
            "n_report": 500, "oracle": {"accuracy": 0.95, "expected_dim": 6.0},
        },
        "adaptive_retrieval": [exact, adaptive],
    }  # fmt: skip


def test_summary_puts_informative_metrics_first_and_names_both_maps():
    text = format_summary(fake_summary(0.0018, 1.5), [], Path("eval"))
    header = text.splitlines()[1].split("  ")
    labels = [h.strip() for h in header if h.strip()]
    assert labels == ["dim", "head top-1", "1-NN", "mAP@10 (standard)", "mAP@10 (paper, ÷k)",
                      "P@10"]  # fmt: skip
    # The capped recall comes after the table with its ceiling, still per dim.
    assert "recall@10 (ceiling 0.18% here: k / same-class database items): 0.12% at dim 4, " \
        "0.12% at dim 64" in text  # fmt: skip
    # An informative recall (ceiling 100%) stays a column.
    text = format_summary(fake_summary(1.0, 1.5), [], Path("eval"))
    assert "recall@10" in text.splitlines()[1] and "ceiling" not in text
    assert "mAP@10 (paper, ÷k)  69.00  mAP@10 (standard)  70.00" in text


def test_zero_prefix_rows_are_the_share_of_all_zero_prefixes():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(400, 64)).astype(np.float16)
    features[rng.random(400) < 0.3, :4] = 0
    features[rng.random(400) < 0.05, :16] = 0
    features[:3, 1:] = 0  # zero after the first coordinate: no zero prefix
    rows = zero_prefix_rows(features, NESTING)
    assert [(r["dim"], r["metric"]) for r in rows] == [(m, "zero_prefix") for m in NESTING]
    for row in rows:
        m = row["dim"]
        by_hand = sum(np.count_nonzero(f[:m]) == 0 for f in features) / len(features)
        assert row["value"] == by_hand
    assert rows[0]["value"] > rows[1]["value"] > rows[2]["value"] == 0
    assert np.isnan(zero_prefix_rows(features[:0], [4])[0]["value"])


def test_summary_prints_the_share_of_zero_prefixes_per_dim():
    summary = fake_summary(1.0, 1.5)
    summary["per_dim"]["4"]["zero_prefix"] = 0.048
    summary["per_dim"]["64"]["zero_prefix"] = 0.0
    lines = format_summary(summary, [], Path("eval")).splitlines()
    assert lines[1].split()[-1] == "zero_prefix"
    assert lines[2].split()[-1] == "4.80" and lines[3].split()[-1] == "0.00"


def test_summary_flags_a_speedup_below_one():
    slow = format_summary(fake_summary(1.0, 0.8), [], Path("eval")).splitlines()
    assert slow[-2].endswith("speed-up 0.80x — slower than exact search at this size")
    assert slow[-3].endswith("speed-up 1.00x")  # exact itself
    fast = format_summary(fake_summary(1.0, 1.75), [], Path("eval"))
    assert fast.splitlines()[-2].endswith("speed-up 1.75x") and "slower" not in fast
    assert format_speedup(0.999) == "1.00x — slower than exact search at this size"


def test_summary_says_which_queries_the_cascade_is_measured_on():
    text = format_summary(fake_summary(1.0, 1.5), [], Path("eval"))
    line = next(li for li in text.splitlines() if li.startswith("adaptive classification"))
    # 86.06% on the report half against the table's 86.40% on all queries: both named.
    assert line.startswith(
        "adaptive classification (thresholds fitted on 500 queries, measured on the other 500): "
        "largest head 86.06% on those 500 (86.40% on all 1000 queries, as in the table); "
    )
