"""The run-folder vocabulary has one owner: the writers and readers use the same names."""

import mrl.cli.aggregate
import mrl.cli.evaluate
import mrl.report.load
import mrl.report.plots
from mrl.runs import format as run_format


def test_every_tool_uses_the_one_vocabulary():
    assert mrl.cli.evaluate.METRIC_COLUMNS is run_format.EVAL_METRIC_COLUMNS
    assert mrl.report.load.EVAL_COLUMNS is run_format.EVAL_METRIC_COLUMNS
    assert mrl.cli.aggregate.COLUMNS is run_format.AGGREGATE_COLUMNS
    assert mrl.report.load.AGGREGATE_COLUMNS is run_format.AGGREGATE_COLUMNS
    methods = ["random", "zeta", "ff", "svd_classifier", "mrl_e", "alpha", "mrl", "svd"]
    expected = ["mrl", "mrl_e", "ff", "svd", "svd_classifier", "random", "alpha", "zeta"]
    # mrl-aggregate's tables and mrl-report's legends list methods in the same order.
    assert sorted(methods, key=mrl.cli.aggregate.method_sort_key) == expected
    assert sorted(methods, key=mrl.report.plots.method_key) == expected


def test_reference_is_the_folder_or_one_of_its_files(tmp_path):
    folder = tmp_path / "reference"
    folder.mkdir()
    curves, adaptive = (folder / name for name in run_format.REFERENCE_FILES)
    assert run_format.reference_files(folder) == (curves, adaptive)
    assert run_format.reference_files(curves) == (curves, adaptive)
    assert run_format.reference_files(adaptive) == (curves, adaptive)
    other = tmp_path / "mine.csv"
    assert run_format.reference_files(other)[0] == other  # read as given, errors name it
