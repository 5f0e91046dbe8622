"""Quality retention (each dim as a percentage of the full dim) and where it is reported."""

import csv
from pathlib import Path

import pytest

from mrl.eval.retention import retention
from mrl.report import load, plots
from mrl.runs.format import EVAL_METRIC_COLUMNS, TEXT_BENCHMARK_FILE


def test_retention_by_hand():
    rows = [
        {"method": "mrl", "dim": 8, "metric": "recall@10", "value": 0.25},
        {"method": "mrl", "dim": 32, "metric": "recall@10", "value": 0.5},
        {"method": "mrl", "dim": 16, "metric": "recall@10", "value": 0.4},
        {"method": "mrl", "dim": 8, "metric": "map@10", "value": 0.01},
        {"method": "mrl", "dim": 32, "metric": "map@10", "value": 0.04},
        {"method": "zero", "dim": 32, "metric": "recall@10", "value": 0.0},
        {"method": "zero", "dim": 8, "metric": "recall@10", "value": 0.0},
    ]
    kept = {(r["method"], r["dim"], r["metric"]): r["retention"] for r in retention(rows)}
    assert kept == pytest.approx({
        ("mrl", 8, "recall@10"): 50.0, ("mrl", 16, "recall@10"): 80.0,
        ("mrl", 32, "recall@10"): 100.0, ("mrl", 8, "map@10"): 25.0,
        ("mrl", 32, "map@10"): 100.0,
    })  # fmt: skip
    assert {r["full_dim"] for r in retention(rows)} == {32}


def test_mrl_report_draws_the_text_retention(tmp_path: Path):
    folder = tmp_path / "results" / "text"
    folder.mkdir(parents=True)
    with (folder / TEXT_BENCHMARK_FILE).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(EVAL_METRIC_COLUMNS)
        for method, values in (("zero_shot", (0.1, 0.3, 0.4)), ("mrl", (0.2, 0.36, 0.4))):
            for dim, value in zip((8, 16, 32), values):
                writer.writerow(["wordnet", "test", method, dim, "recall@10", value])
    tables = load.load_results(tmp_path / "results")
    drawn = plots.plot_text_retention(tables.text)
    assert drawn.figure is not None
    rows = drawn.table.to_dict("records")
    table = {(r["method"], r["dim"]): r["retention (%)"] for r in rows}
    assert table[("MRL", 8)] == 50.0 and table[("zero-shot (truncated)", 16)] == 75.0
    assert "text_retention" in [d.name for d in plots.render_all(tables)]
