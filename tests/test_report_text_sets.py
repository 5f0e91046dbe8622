"""`mrl-report` on text runs scored on evaluation sets: the heat map of each set's retention over
dims and its table, from `eval/text_sets.csv` or `results.json`'s `eval_sets`."""

import json
from pathlib import Path

import pandas as pd
import pytest

from mrl.report import load, plots
from mrl.report.write import write_report

DIMS = [8, 16, 32]
# (set, kind, metric) -> score per dim; the headline metrics are nDCG@10 and Spearman.
SCORES = {
    ("gcide", "retrieval", "ndcg@10"): [0.2, 0.3, 0.4],
    ("gcide", "retrieval", "recall@100"): [0.5, 0.6, 0.8],
    ("stsb", "sts", "spearman"): [0.7, 0.76, 0.8],
    ("stsb", "sts", "pearson"): [0.6, 0.7, 0.75],
}
# The headline rows' retention (%), by hand.
EXPECTED = pd.DataFrame(
    {8: [50.0, 87.5], 16: [75.0, 95.0], 32: [100.0, 100.0]},
    index=pd.Index(["gcide · nDCG@10", "stsb · Spearman"], name="evaluation set"),
).rename_axis(columns="dim")


def set_rows(scale: float = 1.0) -> list[dict]:
    """The tidy rows `mrl-train-text` writes: two sets x three dims, two metrics each."""
    rows = []
    for (name, kind, metric), values in SCORES.items():
        for dim, value in zip(DIMS, values):
            kept = 100 * value / values[-1]
            rows.append({"set": name, "kind": kind, "dim": dim, "metric": metric,
                         "value": scale * value, "retention": kept})  # fmt: skip
    return rows


def write_text_run(folder: Path, seed: int = 0, csv: bool = True) -> Path:
    """A finished text run: `results.json` (with `eval_sets`) and, with `csv`, the same rows in
    `eval/text_sets.csv`."""
    rows = set_rows()
    per_dim = [{"dim": d, **{f"{r['set']}/{r['metric']}": r["value"] for r in rows
                            if r["dim"] == d}} for d in DIMS]  # fmt: skip
    results = {"experiment": "pairs", "task": "contrastive", "nesting": DIMS, "seed": seed,
               "per_dim": per_dim, "eval_sets": rows}  # fmt: skip
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(results))
    if csv:
        (folder / "eval").mkdir()
        pd.DataFrame(rows).to_csv(folder / "eval" / "text_sets.csv", index=False)
    return folder


def write_image_run(folder: Path) -> Path:
    """A finished image run with train-time top-1 only: no evaluation sets."""
    folder.mkdir(parents=True)
    results = {"experiment": "toy", "nesting": DIMS, "seed": 0,
               "per_dim": [{"dim": d, "top1": 0.5 + d / 100} for d in DIMS]}  # fmt: skip
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def section(page: str, name: str) -> str:
    start = page.index(f'<section id="{name}">')
    return page[start : page.index("</section>", start)]


def test_the_heat_map_data_is_each_sets_headline_retention(tmp_path: Path) -> None:
    tables = load.load_results(write_text_run(tmp_path / "run"))
    assert len(tables.text_sets) == 12 and set(tables.text_sets["run"]) == {"."}
    assert not tables.empty
    pd.testing.assert_frame_equal(plots.retention_grid(tables.text_sets), EXPECTED)


def test_rows_come_from_results_json_where_the_csv_is_absent(tmp_path: Path) -> None:
    tables = load.load_results(write_text_run(tmp_path / "run", csv=False))
    pd.testing.assert_frame_equal(plots.retention_grid(tables.text_sets), EXPECTED)


def test_the_csv_is_read_before_results_json(tmp_path: Path) -> None:
    run = write_text_run(tmp_path / "run")
    pd.DataFrame(set_rows(scale=0.5)).to_csv(run / "eval" / "text_sets.csv", index=False)
    tables = load.load_results(run)
    full = tables.text_sets[(tables.text_sets["dim"] == 32) & (tables.text_sets["set"] == "stsb")]
    assert sorted(full["value"]) == pytest.approx([0.375, 0.4])


def test_report_writes_the_heat_map_and_its_table(tmp_path: Path) -> None:
    run = write_text_run(tmp_path / "run")
    out = tmp_path / "report"
    report = write_report(run, out, reference=tmp_path / "absent", formats=["png"])
    png = out / "text_sets.png"
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    (drawn,) = [d for d in report.drawn if d.group == "text_sets"]
    (heat,) = [ax for ax in drawn.figure.axes if ax.get_images()]
    assert [t.get_text() for t in heat.get_yticklabels()] == list(EXPECTED.index)
    printed = sorted(t.get_text() for t in heat.texts)
    assert printed == sorted(["50.0", "75.0", "100.0", "87.5", "95.0", "100.0"])

    page = (out / "index.html").read_text()
    assert "Text evaluation sets" in page
    shown = section(page, "text_sets")
    assert "evaluation sets, each dim" in shown
    for cell in ("gcide · nDCG@10", "stsb · Spearman", "<td>50</td>", "<td>87.5</td>",
                 "<td>95</td>", "<td>75</td>"):  # fmt: skip
        assert cell in shown, cell
    assert "<td>40</td>" in shown and "<td>80</td>" in shown  # the full-dim scores (%)


def test_several_runs_one_panel_each_in_one_figure(tmp_path: Path) -> None:
    for seed in (0, 1):
        write_text_run(tmp_path / "sweep" / str(seed), seed=seed)
    tables = load.load_results(tmp_path / "sweep")
    (drawn,) = plots.text_set_figures(tables)
    panels = [ax for ax in drawn.figure.axes if ax.get_images()]
    assert [ax.get_title() for ax in panels] == ["0 (MRL, seed 0)", "1 (MRL, seed 1)"]
    assert list(drawn.table.index.names) == ["run", "evaluation set"]
    pd.testing.assert_frame_equal(drawn.table.loc["1"].iloc[:, :3], EXPECTED.rename(columns=str),
                                  check_names=False)  # fmt: skip


def test_no_evaluation_sets_no_section(tmp_path: Path) -> None:
    run = write_image_run(tmp_path / "run")
    tables = load.load_results(run)
    assert tables.text_sets.empty
    assert plots.text_set_figures(tables) == []
    out = tmp_path / "report"
    report = write_report(run, out, reference=tmp_path / "absent", formats=["png"])
    assert "text_sets" not in [d.group for d in report.drawn]
    assert not (out / "text_sets.png").exists()
    page = (out / "index.html").read_text()
    assert 'id="text_sets"' not in page and "Text evaluation sets" not in page


def test_the_report_names_the_files_and_headlines_of_the_evaluation() -> None:
    from mrl.text.evaluation import HEADLINE, TEXT_SETS_FILE

    assert load.TEXT_SETS_FILE == TEXT_SETS_FILE
    assert plots.HEADLINE_METRICS == HEADLINE
