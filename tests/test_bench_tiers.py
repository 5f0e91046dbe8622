"""The tier benchmark (`experiments/bench/tiers.py`) on a tiny export of a briefly trained small
CNN: one row per (dim, precision) with positive timings and sizes, int8 files smaller than float
ones, the embedding's bytes per item, quality measured through ONNX Runtime equal to the same
evaluation of the PyTorch model, the tables and the figure; a rerun measures only what is
missing and refuses rows of other settings."""

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import FAST, compose_train
from hydra.utils import instantiate

from mrl.cli.train import train
from mrl.eval.retrieval import evaluate_retrieval
from mrl.export import export_run
from mrl.saved import load_saved

pytest.importorskip("onnxruntime")


def _load_script():
    """`experiments/bench/tiers.py` as a module, without putting `experiments/bench` on the
    path (a script there named like an installed package would shadow it)."""
    path = Path(__file__).resolve().parents[1] / "experiments" / "bench" / "tiers.py"
    spec = importlib.util.spec_from_file_location("tiers_bench", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


tiers = _load_script()

DIMS = [8, 32]
TIERS = [(8, "float32"), (8, "int8"), (32, "float32"), (32, "int8")]
# Seconds, not minutes: few calls, a small search database.
TINY = [
    "--calls", "20", "--warmup", "2", "--batch", "8", "--batches", "2", "--rounds", "2",
    "--queries", "8", "--search-rows", "2000", "--search-queries", "8", "--search-repeats", "1",
    "--search-single", "3",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """A 3-step small-CNN run on synthetic data and its int8 export at dims 8 and 32."""
    root = tmp_path_factory.mktemp("tiers")
    train(compose_train(root / "run", *FAST, "trainer.max_steps=3", "trainer.max_epochs=1"))
    export_run(root / "run", DIMS, root / "export", int8=True)
    return root / "run", root / "export"


@pytest.fixture(scope="module")
def bench(tiny, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("bench") / "tiers.csv"
    tiers.main(["--export", str(tiny[1]), "--out", str(out), *TINY])
    return out, pd.read_csv(out)


def test_one_row_per_tier_with_positive_timings_and_sizes(tiny, bench):
    _, export = tiny
    _, frame = bench
    assert sorted(zip(frame["dim"], frame["precision"])) == TIERS
    timed = ["latency_p50_ms", "latency_p99_ms", "throughput_items_per_s", "model_bytes",
             "search_ms_per_query", "search_p50_ms", "db_search_ms_per_query"]  # fmt: skip
    assert (frame[timed] > 0).all().all()
    assert (frame["latency_p99_ms"] >= frame["latency_p50_ms"]).all()
    assert (frame["latency_calls"] == 20).all() and (frame["threads"] == 1).all()
    np.testing.assert_allclose(
        frame["serve_p50_ms"], frame["latency_p50_ms"] + frame["search_p50_ms"]
    )
    for row in frame.itertuples():
        name = "model.onnx" if row.precision == "float32" else "model.int8.onnx"
        assert row.model_bytes == (export / name).stat().st_size  # one file for every dim
        assert row.embedding_bytes_float32 == 4 * row.dim
        assert row.embedding_bytes_int8 == row.dim
        assert row.embedding_bytes_binary == math.ceil(row.dim / 8)
    by = frame.set_index(["dim", "precision"])
    for dim in DIMS:
        assert by.loc[(dim, "int8"), "model_bytes"] < by.loc[(dim, "float32"), "model_bytes"]
        assert 0 < by.loc[(dim, "int8"), "int8_min_cosine"] <= 1
    assert by["db_rows"].eq(512).all()  # the synthetic training split: mrl-eval's database


def test_quality_through_onnx_equals_the_pytorch_models(tiny, bench):
    """The card of an unevaluated image run has no retrieval figures: every tier is measured,
    and the float tiers score what the PyTorch model's embeddings score."""
    run_dir, _ = tiny
    _, frame = bench
    assert frame["quality_source"].str.startswith("measured: ONNX Runtime").all()
    model = load_saved(run_dir / "checkpoints" / "last.ckpt").module
    datamodule = instantiate(compose_train(run_dir, *FAST).data)
    datamodule.setup("test")

    def encode(dataset) -> tuple[np.ndarray, np.ndarray]:
        x, y = map(torch.stack, zip(*[(dataset[i][0], torch.as_tensor(dataset[i][1]))
                                      for i in range(len(dataset))]))  # fmt: skip
        with torch.no_grad():
            return model(x).numpy(), y.numpy()

    database, database_labels = encode(datamodule.database_set())
    queries, query_labels = encode(datamodule.test_set)
    by = frame.set_index(["dim", "precision"])
    for dim in DIMS:
        rows = evaluate_retrieval(database, database_labels, queries, query_labels, dims=[dim],
                                  ks=(10,), knn_ks=(1,), tie_aware_max_dim=8)  # fmt: skip
        want = {r["metric"]: r["value"] for r in rows}
        got = by.loc[(dim, "float32")]
        assert got["recall@10"] == pytest.approx(want["recall@10"], abs=1e-4)
        assert got["map@10"] == pytest.approx(want["map@10"], abs=1e-4)
        int8 = by.loc[(dim, "int8")]
        assert 0 < int8["recall@10"] <= 1 and abs(int8["recall@10"] - want["recall@10"]) < 0.05


def test_tables_and_figure(bench):
    out, frame = bench
    md = out.with_suffix(".md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ") and "|---" not in line]
    assert len(table) == 1 + len(frame)  # header + a row per tier
    assert "1 intra-op thread(s)" in md and "experiments/bench/tiers.py --export" in md
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_rerun_measures_only_what_is_missing(tiny, tmp_path, monkeypatch):
    out = tmp_path / "tiers.csv"
    argv = ["--export", str(tiny[1]), "--out", str(out), *TINY]
    tiers.main(argv)
    first = pd.read_csv(out)
    timed: list[list[tuple]] = []
    real = tiers.time_tiers

    def record(pending, work, args):
        timed.append([t.key for t in pending])
        return real(pending, work, args)

    monkeypatch.setattr(tiers, "time_tiers", record)
    tiers.main(argv)  # everything is there: the tables are rewritten, nothing is measured
    assert timed == []
    pd.testing.assert_frame_equal(pd.read_csv(out), first)
    first[~((first["dim"] == 32) & (first["precision"] == "int8"))].to_csv(out, index=False)
    tiers.main(argv)
    assert timed == [[(32, "int8")]]
    again = pd.read_csv(out)
    assert sorted(zip(again["dim"], again["precision"])) == TIERS
    pd.testing.assert_frame_equal(again.iloc[:3], first.iloc[:3])


@pytest.mark.parametrize(
    "change, recorded",
    [(["--threads", "2"], "threads=1"), (["--search-queries", "4"], "search_queries=8")],
)
def test_rows_of_other_settings_are_refused(tiny, bench, capsys, change, recorded):
    out, frame = bench
    with pytest.raises(SystemExit) as info:
        tiers.main(["--export", str(tiny[1]), "--out", str(out), *TINY, *change])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and recorded in err[0] and "--fresh" in err[0], err
    pd.testing.assert_frame_equal(pd.read_csv(out), frame)
