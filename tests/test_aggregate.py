"""`mrl-aggregate` on fabricated sweep folders: the tidy CSV, the Markdown tables, the errors."""

import csv
import json
from pathlib import Path

import pytest
import yaml

from mrl.cli.aggregate import main
from mrl.runs.reader import derive_method

STUDY = "fmnist_table1"
NESTING = [2, 4, 8]


def write_hydra(job: Path, head_nesting, tied: bool, overrides: list[str], seed: int) -> None:
    """`.hydra/config.yaml` (as Hydra saves it: unresolved) and `.hydra/overrides.yaml`."""
    cfg = {
        "name": STUDY,
        "nesting": NESTING,
        "seed": seed,
        "head": {"_target_": "mrl.MRLHead", "nesting": head_nesting, "tied": tied},
    }
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))


def write_results(job: Path, method: str, top1: dict[int, float], seed: int) -> None:
    per_dim = [{"dim": d, "top1": v, "top5": 0.99} for d, v in top1.items()]
    results = {
        "experiment": STUDY,
        "method": method,
        "nesting": list(top1),
        "per_dim": per_dim,
        "seed": seed,
        "wall_time_s": 12.5,
        "run_dir": str(job),
        "config": {"name": STUDY, "seed": seed},
    }
    (job / "results.json").write_text(json.dumps(results))


def write_metrics(job: Path, rows: list[tuple[str, str, int, str, float]]) -> None:
    """`eval/metrics.csv` from `(split, method, dim, metric, value)` tuples."""
    (job / "eval").mkdir()
    lines = ["dataset,split,method,dim,metric,value"]
    lines += [f"FashionMNIST,{s},{m},{d},{k},{v}" for s, m, d, k, v in rows]
    (job / "eval" / "metrics.csv").write_text("\n".join(lines) + "\n")


def mrl_eval_rows(head_top1: dict[int, float], one_nn: dict[int, float]) -> list[tuple]:
    rows = [("query", "mrl", d, "head_top1", v) for d, v in head_top1.items()]
    rows += [("query", "mrl", d, "1nn", v) for d, v in one_nn.items()]
    rows += [("query", "mrl", d, "map@10", v - 0.05) for d, v in one_nn.items()]
    # A robustness split: must stay out of the default (clean) tables.
    rows += [("query-contrast-1", "mrl", d, "1nn", 0.10) for d in one_nn]
    return rows


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """A Hydra multirun layout: MRL (2 seeds, evaluated), MRL-E, FF-2, FF-8 and a failed FF-4."""
    root = tmp_path / "multirun" / STUDY / "2026-01-01_00-00-00"
    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text("hydra:\n  mode: MULTIRUN\n")
    jobs = {n: root / str(n) for n in range(6)}

    write_hydra(jobs[0], "${nesting}", False, ["head=mrl", "seed=0"], seed=0)
    write_results(jobs[0], "mrl", {2: 0.79, 4: 0.88, 8: 0.91}, seed=0)
    write_metrics(
        jobs[0], mrl_eval_rows({2: 0.802, 4: 0.881, 8: 0.912}, {2: 0.70, 4: 0.84, 8: 0.90})
    )

    write_hydra(jobs[1], "${nesting}", True, ["head=mrl_e", "nesting=[4,8]"], seed=0)
    write_results(jobs[1], "mrl_e", {4: 0.8833, 8: 0.905}, seed=0)

    for n, dim, top1 in ((2, 2, 0.75), (3, 8, 0.915)):
        write_hydra(jobs[n], [dim], False, ["head=ff", f"head.nesting=[{dim}]"], seed=0)
        write_results(jobs[n], "ff", {dim: top1}, seed=0)

    # Failed: Hydra made the folder and saved the config, training never wrote results.json.
    write_hydra(jobs[4], [4], False, ["head=ff", "head.nesting=[4]"], seed=0)
    (jobs[4] / "train.log").write_text("Traceback (most recent call last): ...\n")

    write_hydra(jobs[5], "${nesting}", False, ["head=mrl", "seed=1"], seed=1)
    write_results(jobs[5], "mrl", {2: 0.80, 4: 0.87, 8: 0.92}, seed=1)
    write_metrics(
        jobs[5], mrl_eval_rows({2: 0.812, 4: 0.885, 8: 0.914}, {2: 0.72, 4: 0.85, 8: 0.90})
    )
    return root


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def table_cells(markdown: str) -> dict[str, dict[str, str]]:
    """`{method: {dim: cell}}` of the Markdown table in `markdown`."""
    rows = [line for line in markdown.splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    cells = {}
    for line in rows[2:]:
        parts = [c.strip() for c in line.strip("|").split("|")]
        cells[parts[0]] = dict(zip(header[1:], parts[1:]))
    return cells


def test_results_csv_has_every_run_with_its_status_and_values(sweep: Path, capsys):
    main([str(sweep)])
    rows = read_csv(sweep / "aggregate" / "results.csv")
    assert list(rows[0]) == [
        "study", "run", "status", "seed", "method", "dim", "source", "metric", "value"
    ]  # fmt: skip
    status = {r["run"]: r["status"] for r in rows}
    assert status == {"0": "ok", "1": "no-eval", "2": "no-eval", "3": "no-eval", "4": "failed",
                      "5": "ok"}  # fmt: skip
    assert {r["study"] for r in rows} == {STUDY}

    failed = [r for r in rows if r["run"] == "4"]
    assert failed == [
        {"study": STUDY, "run": "4", "status": "failed", "seed": "0", "method": "ff", "dim": "4",
         "source": "", "metric": "", "value": ""}
    ]  # fmt: skip

    def value(run: str, source: str, metric: str, dim: str) -> float:
        (match,) = [
            r for r in rows
            if (r["run"], r["source"], r["metric"], r["dim"]) == (run, source, metric, dim)
        ]  # fmt: skip
        return float(match["value"])

    assert value("0", "train", "top1", "2") == 0.79
    assert value("0", "eval", "head_top1", "2") == 0.802
    assert value("5", "eval", "1nn", "4") == 0.85
    assert value("1", "train", "top1", "4") == 0.8833
    assert value("3", "train", "top1", "8") == 0.915
    # Only the clean split by default.
    assert not [r for r in rows if "contrast" in r["metric"]]
    assert {r["seed"] for r in rows if r["run"] == "5"} == {"1"}

    out = capsys.readouterr().out
    assert "6 runs: 5 ok (3 not evaluated), 1 failed" in out
    assert "failed: 4 (no results.json)" in out


def test_top1_table_cells(sweep: Path):
    main([str(sweep)])
    text = (sweep / "aggregate" / f"{STUDY}__top1.md").read_text()
    cells = table_cells(text)
    assert list(cells) == ["mrl", "mrl_e", "ff"]
    assert list(cells["mrl"]) == ["2", "4", "8"]
    # Eval head_top1 wins over the train top1: 80.2 and 81.2, sample std = 0.7071.
    assert cells["mrl"]["2"] == "80.70 ± 0.71 (n=2)"
    assert cells["mrl"]["8"] == "91.30 ± 0.14 (n=2)"
    # MRL-E was not evaluated: its train top1; it has no dim 2.
    assert cells["mrl_e"]["4"] == "88.33"
    assert cells["mrl_e"]["2"] == "–"
    # FF: one run per dim, the dim 4 run failed.
    assert cells["ff"] == {"2": "75.00", "4": "FAILED", "8": "91.50"}
    assert "Failed runs: `4` (ff, dim 4): no results.json." in text


def test_retrieval_tables_use_the_clean_split_and_list_unevaluated_runs(sweep: Path):
    main([str(sweep), "--metrics", "1nn"])
    out = sweep / "aggregate"
    text = (out / f"{STUDY}__1nn.md").read_text()
    cells = table_cells(text)
    assert cells["mrl"] == {
        "2": "71.00 ± 1.41 (n=2)", "4": "84.50 ± 0.71 (n=2)", "8": "90.00 ± 0.00 (n=2)"
    }  # fmt: skip
    assert cells["ff"] == {"2": "–", "4": "FAILED", "8": "–"}
    assert "mrl_e" not in cells
    assert "Runs without 1nn: `1` (mrl_e): not evaluated, `2` (ff, dim 2): not evaluated" in text
    assert not (out / f"{STUDY}__map@10.md").exists()


def test_robustness_split_is_kept_apart(sweep: Path):
    main([str(sweep), "--metrics", "1nn", "--split", "query,query-contrast-1"])
    out = sweep / "aggregate"
    rows = read_csv(out / "results.csv")
    contrast = [r for r in rows if r["metric"] == "query-contrast-1/1nn"]
    assert len(contrast) == 6 and {r["value"] for r in contrast} == {"0.1"}
    cells = table_cells((out / f"{STUDY}__query-contrast-1__1nn.md").read_text())
    assert cells["mrl"]["4"] == "10.00 ± 0.00 (n=2)"
    assert table_cells((out / f"{STUDY}__1nn.md").read_text())["mrl"]["2"] == "71.00 ± 1.41 (n=2)"


def test_baselines_use_probe_top1_and_come_after_the_paper_methods(sweep: Path):
    write_metrics(
        sweep / "3",
        [("query", "ff", 8, "head_top1", 0.916), ("query", "ff", 8, "probe_top1", 0.5),
         ("query", "random", 2, "probe_top1", 0.30), ("query", "svd", 2, "probe_top1", 0.60),
         ("query", "svd", 8, "probe_top1", 0.90), ("query", "svd", 8, "head_top1", 0.1)],
    )  # fmt: skip
    main([str(sweep), "--metrics", "top1"])
    cells = table_cells((sweep / "aggregate" / f"{STUDY}__top1.md").read_text())
    assert list(cells) == ["mrl", "mrl_e", "ff", "svd", "random"]
    assert cells["ff"]["8"] == "91.60"
    assert cells["svd"] == {"2": "60.00", "4": "–", "8": "10.00"}
    assert cells["random"]["2"] == "30.00"


def test_relative_top1_with_reference(sweep: Path, tmp_path: Path):
    reference = tmp_path / "paper.csv"
    reference.write_text(
        "metric,method,8,16,32\n"
        "top1,MRL,60.00,75.00,80.00\n"
        "top1,SVD,10.00,40.00,\n"
        "1nn,MRL,1.00,2.00,3.00\n"
    )
    main([str(sweep), "--reference", str(reference)])
    out = sweep / "aggregate"
    by_file = (out / f"{STUDY}__relative_top1.md").read_text()
    # The folder, as mrl-report takes it, gives the same table.
    folder = tmp_path / "reference"
    folder.mkdir()
    (folder / "paper_resnet50_imagenet1k.csv").write_text(reference.read_text())
    main([str(sweep), "--reference", str(folder)])
    assert (out / f"{STUDY}__relative_top1.md").read_text() == by_file
    cells = table_cells(by_file)
    assert list(cells) == ["mrl", "mrl_e", "ff", "paper:MRL", "paper:SVD"]
    mrl_2 = (0.802 + 0.812) / (0.912 + 0.914)
    assert cells["mrl"]["2"] == f"{mrl_2:.4f}"
    assert cells["mrl"]["8"] == "1.0000" and cells["mrl"]["32"] == "–"
    assert cells["ff"]["2"] == f"{0.75 / 0.915:.4f}" and cells["ff"]["4"] == "–"
    assert cells["paper:MRL"] == {"2": "–", "4": "–", "8": "0.7500", "16": "0.9375",
                                  "32": "1.0000", "relative to dim": "32"}  # fmt: skip
    # SVD has no value at the largest dim: relative to its largest filled dim.
    assert cells["paper:SVD"]["8"] == "0.2500" and cells["paper:SVD"]["relative to dim"] == "16"

    rows = read_csv(out / f"{STUDY}__relative_top1.csv")
    (paper_row,) = [r for r in rows if r["method"] == "paper:MRL" and r["dim"] == "16"]
    assert float(paper_row["top1"]) == pytest.approx(0.75)
    assert float(paper_row["fraction"]) == pytest.approx(0.9375)
    (ff_row,) = [r for r in rows if r["method"] == "ff" and r["dim"] == "2"]
    assert float(ff_row["fraction"]) == pytest.approx(0.75 / 0.915)
    assert ff_row["ref_dim"] == "8"


def test_corrupt_results_is_a_failed_run_with_a_note(sweep: Path):
    job = sweep / "6"
    write_hydra(job, "${nesting}", True, ["head=mrl_e", "seed=2"], seed=2)
    (job / "results.json").write_text('{"experiment": "fmnist_ta')
    main([str(sweep), "--out", str(sweep / "tables")])
    rows = read_csv(sweep / "tables" / "results.csv")
    (row,) = [r for r in rows if r["run"] == "6"]
    assert (row["status"], row["method"], row["seed"], row["dim"]) == ("failed", "mrl_e", "2", "")
    text = (sweep / "tables" / f"{STUDY}__top1.md").read_text()
    assert "`6` (mrl_e): corrupt results.json" in text
    # One seed of MRL-E failed next to a finished one: the value stays, the failure shows.
    assert table_cells(text)["mrl_e"]["4"] == "88.33 (1 FAILED)"
    assert table_cells(text)["mrl_e"]["2"] == "FAILED"


def test_a_single_run_folder_outside_a_sweep(sweep: Path):
    main([str(sweep / "0"), "--metrics", "top1"])
    rows = read_csv(sweep / "0" / "aggregate" / "results.csv")
    assert {r["run"] for r in rows} == {"."}
    assert table_cells((sweep / "0" / "aggregate" / f"{STUDY}__top1.md").read_text())["mrl"] == {
        "2": "80.20", "4": "88.10", "8": "91.20"
    }  # fmt: skip


def test_derive_method_from_unresolved_configs():
    cfg = {"nesting": [2, 4, 16]}
    ff_default = {**cfg, "head": {"nesting": ["${mrl.max:${nesting}}"], "tied": False}}
    assert derive_method(ff_default) == ("ff", [16])
    assert derive_method({**cfg, "head": {"nesting": "${nesting}", "tied": True}}) == (
        "mrl_e", [2, 4, 16]
    )  # fmt: skip
    assert derive_method({**cfg, "head": {"nesting": "${nesting}", "tied": False}}) == (
        "mrl", [2, 4, 16]
    )  # fmt: skip
    # The head of `head/matryoshka.yaml` follows `method` (as Hydra saves it: unresolved).
    by_method = {**cfg, "head": {"nesting": "${mrl.head_nesting:${method},${nesting}}"}}
    for method, expected in [("mrl", ("mrl", [2, 4, 16])), ("mrl_e", ("mrl_e", [2, 4, 16])),
                             ("ff", ("ff", [16])), ("ff8", ("ff", [8]))]:  # fmt: skip
        assert derive_method({**by_method, "method": method}) == expected
        assert derive_method(by_method, [f"method={method}"]) == expected
    assert derive_method(by_method, ["method=ff", "head.nesting=[4]"]) == ("ff", [4])
    # No config: the overrides alone.
    assert derive_method(None, ["head=ff", "head.nesting=[8]"]) == ("ff", [8])
    assert derive_method(None, ["seed=3"]) == (None, [])


@pytest.mark.parametrize("make", ["missing", "empty", "no_runs"])
def test_no_runs_is_an_error_with_exit_status_2(tmp_path: Path, capsys, make: str):
    target = tmp_path / "sweep"
    if make != "missing":
        target.mkdir()
    if make == "no_runs":
        (target / "0").mkdir()
        (target / "0" / "train.log").write_text("nothing\n")
        (target / "multirun.yaml").write_text("hydra: {}\n")
    with pytest.raises(SystemExit) as exc:
        main([str(target)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("mrl-aggregate: error: ") and err.count("\n") == 1
    assert str(target) in err
    assert not (target / "aggregate").exists()


def test_a_diverged_run_shows_why_it_failed(sweep: Path, capsys):
    from mrl.runs.files import write_status

    job = sweep / "7"
    write_hydra(job, "${nesting}", False, ["seed=3"], seed=3)
    write_status(job, "failed", reason="non-finite training loss nan at step 8", step=8)
    main([str(sweep), "--out", str(sweep / "tables")])
    assert "failed: 7 (failed at step 8: non-finite training loss nan at step 8)" in (
        capsys.readouterr().out
    )
    (row,) = [r for r in read_csv(sweep / "tables" / "results.csv") if r["run"] == "7"]
    assert row["status"] == "failed"


def test_the_shipped_reference_is_the_default(sweep: Path, monkeypatch):
    from mrl.reference import REFERENCE_DIR

    monkeypatch.delenv("MRL_REFERENCE_DIR", raising=False)
    main([str(sweep), "--metrics", "top1"])
    cells = table_cells((sweep / "aggregate" / f"{STUDY}__relative_top1.md").read_text())
    # Read back by hand from the shipped CSV: MRL's top-1 at 8 over its top-1 at 2048.
    with (REFERENCE_DIR / "paper_resnet50_imagenet1k.csv").open(newline="") as f:
        (mrl,) = [r for r in csv.DictReader(f) if (r["metric"], r["method"]) == ("top1", "MRL")]
    assert cells["paper:MRL"]["8"] == f"{float(mrl['8']) / float(mrl['2048']):.4f}"
    assert cells["paper:MRL"]["relative to dim"] == "2048"


@pytest.mark.parametrize("content", [None, "dim,method\n1,2\n", "metric,method,8\ntop1,MRL,x\n"])
def test_an_unreadable_reference_is_an_error(sweep: Path, tmp_path: Path, capsys, content):
    reference = tmp_path / "paper.csv"
    if content is not None:
        reference.write_text(content)
    with pytest.raises(SystemExit) as exc:
        main([str(sweep), "--reference", str(reference)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("mrl-aggregate: error: ") and err.count("\n") == 1
    assert str(reference) in err


def test_title_says_plus_minus_std_only_where_a_cell_has_several_seeds(sweep: Path):
    main([str(sweep), "--metrics", "top1,1nn"])
    top1 = (sweep / "aggregate" / f"{STUDY}__top1.md").read_text().splitlines()[0]
    assert top1.endswith("(%; mean ± std over seeds; one value where a cell has 1 seed)")
    main([str(sweep / "1"), "--metrics", "top1"])
    single = (sweep / "1" / "aggregate" / f"{STUDY}__top1.md").read_text()
    assert single.splitlines()[0].endswith("(%; 1 seed)") and "±" not in single
