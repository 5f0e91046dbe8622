"""The run-folder format's shared vocabulary: the tidy tables' columns, the name of the clean
query split, and the order in which methods are listed. `mrl-eval` writes with these names,
`mrl-aggregate` and `mrl-report` read with them; change them here only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

# `<run>/eval/metrics.csv`, one row per (split, method, dim, metric).
EVAL_METRIC_COLUMNS = ["dataset", "split", "method", "dim", "metric", "value"]
# `mrl-aggregate`'s `results.csv`, one row per (run, method, dim, metric).
AGGREGATE_COLUMNS = ["study", "run", "status", "seed", "method", "dim", "source", "metric", "value"]
# Printed names of metrics whose key alone could be misread. `map@k` is the MRL paper's AP@k,
# divided by k whatever the number of relevant items; `map_standard@k` divides by min(k, relevant)
# (see mrl.eval.metrics). The text task logs the same without the "@": `map10`, `map_standard10`.
_METRIC_LABELS = {
    "map": "mAP@{k} (paper, ÷k)",
    "map_standard": "mAP@{k} (standard)",
    "head_top": "head top-{k}",
    "probe_top": "probe top-{k}",
    "precision": "P@{k}",
    "recall": "recall@{k}",
}


def metric_label(metric: str) -> str:
    """The printed name of a metric: `map@10` and `map10` -> "mAP@10 (paper, ÷k)",
    `map_standard@10` -> "mAP@10 (standard)", `head_top1` -> "head top-1", `1nn` -> "1-NN";
    any other name unchanged."""
    if metric == "1nn":
        return "1-NN"
    match = re.fullmatch(r"(?P<name>[a-z_]+?)@?(?P<k>\d+)", metric)
    if match and match["name"] in _METRIC_LABELS:
        return _METRIC_LABELS[match["name"]].format(k=match["k"])
    return metric


# The clean test split; a corrupted copy is `<CLEAN_SPLIT>-<corruption>-<severity>`, and a
# metric on it is named `<split>/<metric>` in aggregate tables.
CLEAN_SPLIT = "query"
# The paper's methods, then the baselines, in the order tables and legends list them.
METHOD_ORDER = ("mrl", "mrl_e", "ff", "svd", "svd_classifier", "slimmable", "random")


def method_sort_key(method: str) -> tuple[int, str]:
    """Sort key: the methods of `METHOD_ORDER` in that order, then any other by name."""
    m = str(method)
    return (METHOD_ORDER.index(m), "") if m in METHOD_ORDER else (len(METHOD_ORDER), m)


# The text benchmark's tidy table (experiments/text/reverse_dictionary.py), `EVAL_METRIC_COLUMNS`.
TEXT_BENCHMARK_FILE = "reverse_dictionary.csv"

# The paper's numbers: a folder with these two files (per-dim curves; adaptive studies).
REFERENCE_FILES = ("paper_resnet50_imagenet1k.csv", "paper_adaptive.csv")


def reference_files(path: Path) -> tuple[Path, Path]:
    """`(curves, adaptive)` files given `--reference`: the folder holding them, or one file (the
    other is taken from its folder). A path that does not exist is returned as the curves file,
    so that reading it fails naming it."""
    if path.is_dir():
        return path / REFERENCE_FILES[0], path / REFERENCE_FILES[1]
    if path.name == REFERENCE_FILES[1]:
        return path.parent / REFERENCE_FILES[0], path
    return path, path.parent / REFERENCE_FILES[1]


def top_k_sources(k: int) -> list[tuple[str, str]]:
    """Where a run's top-k comes from, most preferred first, as `(source, metric)`: the eval
    head accuracy, else the train-time test accuracy (the same quantity), else the linear probe
    (the only top-k of baselines such as SVD)."""
    return [("eval", f"head_top{k}"), ("train", f"top{k}"), ("eval", f"probe_top{k}")]


def stands_for(run_method: str | None, run_dims: list[int], row_method: str, dim: int) -> bool:
    """Whether a row of `(row_method, dim)` in a run of `run_method` counts: an FF-m run stands
    for FF at its own dim m only (the baselines computed from its features are kept)."""
    return not (row_method == "ff" == run_method and run_dims and dim not in run_dims)


# A finished run's record, `<run>/results.json`.
RESULTS_FILE = "results.json"
# Config keys that do not change what a run computes, left out of "what changed" on resume.
UNTRACKED_KEYS = ("paths.", "run_id", "ckpt_path", "eval_after", "if_finished",
                  "trainer.enable_progress_bar", "logger.", "callbacks.progress_bar")  # fmt: skip


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


# Keys the configs gained or lost without a change to what a run computes, each with the value
# a config without it stands for (None: any value). A text run's `model` node names its module
# class (before, the task chose it); `loss.fused` selected a form of the contrastive loss with
# the same sums, since removed. `data.name` names the run (the default `name`); an ImageFolder
# run's `data.test_dir` is null (`<root>/test` when it exists, else the val folder).
SCHEMA_CHANGES: dict[str, Any] = {"model._target_": None, "model._partial_": None,
                                  "loss.fused": False, "data.name": None,
                                  "data.test_dir": None}  # fmt: skip


def _same_by_schema(key: str, old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether `key`, set on one side only, is a `SCHEMA_CHANGES` key at the value its absence
    stands for."""
    if key not in SCHEMA_CHANGES or (key in old) == (key in new):
        return False
    value, implied = (new if key in new else old)[key], SCHEMA_CHANGES[key]
    return implied is None or value == implied


def config_changes(saved: dict | None, current: dict) -> list[str]:
    """`key: old -> new` for every setting that differs between two resolved configs."""
    if not isinstance(saved, dict):
        return []
    old, new = _flatten(saved), _flatten(current)
    changes = []
    for key in sorted(set(old) | set(new)):
        if key.startswith(UNTRACKED_KEYS) or old.get(key) == new.get(key):
            continue
        if _same_by_schema(key, old, new):
            continue
        changes.append(f"{key}: {old.get(key, '(unset)')} -> {new.get(key, '(unset)')}")
    return changes
