"""The run-folder vocabulary has one owner: the writers and readers use the same names."""

from pathlib import Path

from test_aggregate import STUDY, write_hydra, write_metrics, write_results

import mrl.eval.pipeline
import mrl.report.aggregate
import mrl.report.aggregate_tables
import mrl.report.load
import mrl.report.plots.tables
from mrl.runs import format as run_format
from mrl.runs import reader


def test_every_tool_uses_the_one_vocabulary():
    assert mrl.eval.pipeline.METRIC_COLUMNS is run_format.EVAL_METRIC_COLUMNS
    assert set(reader.EVAL_REQUIRED) <= set(run_format.EVAL_METRIC_COLUMNS)
    assert mrl.report.aggregate.COLUMNS is run_format.AGGREGATE_COLUMNS
    assert mrl.report.load.AGGREGATE_COLUMNS is run_format.AGGREGATE_COLUMNS
    methods = ["random", "zeta", "ff", "svd_classifier", "mrl_e", "alpha", "mrl", "svd"]
    expected = ["mrl", "mrl_e", "ff", "svd", "svd_classifier", "random", "alpha", "zeta"]
    # mrl-aggregate's tables and mrl-report's legends list methods in the same order.
    assert sorted(methods, key=mrl.report.aggregate_tables.method_sort_key) == expected
    assert sorted(methods, key=mrl.report.plots.tables.method_key) == expected


def test_reference_is_the_folder_or_one_of_its_files(tmp_path):
    folder = tmp_path / "reference"
    folder.mkdir()
    curves, adaptive = (folder / name for name in run_format.REFERENCE_FILES)
    assert run_format.reference_files(folder) == (curves, adaptive)
    assert run_format.reference_files(curves) == (curves, adaptive)
    assert run_format.reference_files(adaptive) == (curves, adaptive)
    other = tmp_path / "mine.csv"
    assert run_format.reference_files(other)[0] == other  # read as given, errors name it


def test_aggregate_and_report_read_the_same_values_from_the_same_runs(tmp_path: Path):
    """One reader, one set of rules: the top-1 of each (run, method, dim) is the same in
    `mrl-aggregate` and `mrl-report`, with the top-1 preference and the FF-m rule applied."""
    root = tmp_path / "sweep"
    mrl_run, ff_run, probe_run = root / "0", root / "1", root / "2"
    write_hydra(mrl_run, "${nesting}", False, ["head=mrl"], seed=0)
    write_results(mrl_run, "mrl", {2: 0.70, 4: 0.80, 8: 0.90}, seed=0)
    # eval head_top1 beats the train-time top1 where both exist (dim 8 only here).
    write_metrics(mrl_run, [("query", "mrl", 8, "head_top1", 0.905)])
    write_hydra(ff_run, [4], False, ["head=ff", "head.nesting=[4]"], seed=0)
    write_results(ff_run, "ff", {4: 0.85}, seed=0)
    # An FF-4 run stands for FF at 4 only; its SVD baseline at other dims is kept.
    write_metrics(ff_run, [("query", "ff", 2, "head_top1", 0.5), ("query", "ff", 4, "head_top1",
                   0.86), ("query", "svd", 2, "probe_top1", 0.6)])  # fmt: skip
    write_hydra(probe_run, [8], False, ["head=ff", "head.nesting=[8]"], seed=1)
    write_results(probe_run, "ff", {8: 0.88}, seed=1)
    write_metrics(probe_run, [("query", "svd", 8, "probe_top1", 0.7)])

    runs = [reader.load_run(p, root.resolve()) for p in reader.find_runs(root)]
    from_aggregate = {
        (run.name, method, dim): value
        for run in runs
        for (method, dim), value in reader.run_values(run, "top1", "query").items()
    }
    table = mrl.report.load.load_results(root).classification
    from_report = {(r.run, r.method, r.dim): r.top1 for r in table.itertuples()}
    assert from_aggregate == from_report
    assert from_aggregate == {
        ("0", "mrl", 2): 0.70, ("0", "mrl", 4): 0.80, ("0", "mrl", 8): 0.905,
        ("1", "ff", 4): 0.86, ("1", "svd", 2): 0.6, ("2", "ff", 8): 0.88, ("2", "svd", 8): 0.7,
    }  # fmt: skip
    assert {run.study for run in runs} == {STUDY}


def test_the_commands_default_to_no_committed_results_folder():
    """`mrl-report` and `mrl-aggregate` take result paths as arguments: no default (or any path)
    under experiments/results in their source."""
    package = Path(mrl.report.load.__file__).parents[1]
    sources = [*(package / "report").rglob("*.py"), package / "cli" / "report.py",
               package / "cli" / "aggregate.py"]  # fmt: skip
    assert [str(p) for p in sources if "experiments/results" in p.read_text()] == []


def test_config_changes_ignore_keys_the_config_schema_gained_or_lost():
    from mrl.runs.format import config_changes

    old = {"task": "contrastive", "loss": {"scale": 20.0, "fused": False}, "model": {"lr": 1}}
    new = {"task": "contrastive", "loss": {"scale": 20.0},
           "model": {"lr": 1, "_target_": "mrl.text.module.TextContrastiveModule",
                     "_partial_": True}}  # fmt: skip
    assert config_changes(old, new) == []
    # A real change is still named, and so is a removed key at another value than its default.
    old["loss"].update(fused=True, scale=10.0)
    assert config_changes(old, new) == ["loss.fused: True -> (unset)", "loss.scale: 10.0 -> 20.0"]
    # Both sides naming a module class, and different classes, is a change.
    other = {**old, "model": {**new["model"], "_target_": "my.Module"}}
    assert "model._target_: my.Module -> mrl.text.module.TextContrastiveModule" in config_changes(
        other, new
    )
