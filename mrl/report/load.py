"""Finding and reading the tidy tables under a results folder.

`load_results(root)` walks `root` recursively and reads what it recognises:

- aggregate tables, `results.csv` with the `mrl-aggregate` columns
  (`study, run, status, seed, method, dim, source, metric, value`; a metric on a corrupted split
  is named `<split>/<metric>`);
- run folders: `results.json` (train-time `per_dim` top-1), `eval/metrics.csv`
  (`dataset, split, method, dim, metric, value`), `eval/adaptive_classification.csv`,
  `eval/adaptive_retrieval.csv` and `eval/summary.json`.

A run that an aggregate table already covers (its `run` resolves to the same folder) is taken
from the aggregate only, so nothing is counted twice. The result is a `Tables` of normalised
DataFrames, all with the columns `study, dataset, run, seed` (`run` is a key of `Tables.runs`):

- `classification`: `method, dim, top1, metric` (top-1 as a fraction: eval `head_top1`, else the
  train-time `top1`, else `probe_top1`, the only top-1 of baselines such as SVD; `metric` says
  which);
- `retrieval`: `method, dim, metric, value` (clean split; `1nn`, `knn@k`, `map@k`, ...);
- `adaptive_classification`: `method` (the run's), `kind` (`sweep` rows of the threshold sweep,
  `head` fixed-dim heads, `oracle`, `match` the smallest expected dim at the largest head's
  accuracy), `target, accuracy, expected_dim` and the sweep's `exit@m`/`threshold@m` columns;
- `adaptive_retrieval`: the `adaptive_retrieval.csv` columns (`method` is exact, adaptive or
  funnel) and `representation` (the run's method);
- `robustness`: `split, corruption, severity, method, dim, metric, value` for runs with
  corrupted splits, including their clean split (`corruption` "clean", severity 0); `metric` is
  `top1` or a retrieval metric;
- `text_sets`: `method, set, kind, dim, metric, value, retention` of text runs scored on
  evaluation sets: a run's `eval/text_sets.csv`, else its `results.json`'s `eval_sets` (also an
  `eval/text_sets.csv` that `mrl-eval` wrote outside a run).

Each run's provenance (`Tables.runs`) also holds `declared_methods`: the methods its study said
it would have (the run's own, and the `method` values of the Hydra sweep that started it), so
that a figure flags a method as missing only where the study declared it.

The paper's numbers (`Reference`, `load_reference`) are `mrl.reference`'s, named here too.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mrl.eval.retention import retention

# The paper's numbers have one reader, `mrl.reference`; the report's modules and the notebooks
# reach it through this module.
from mrl.reference import Reference as Reference
from mrl.reference import default_reference_dir as default_reference_dir
from mrl.reference import load_reference as load_reference
from mrl.runs.files import read_json, read_yaml
from mrl.runs.format import (
    AGGREGATE_COLUMNS,
    CLEAN_SPLIT,
    EVAL_METRIC_COLUMNS,
    TEXT_BENCHMARK_FILE,
    stands_for,
    top_k_sources,
)
from mrl.runs.provenance import collect_provenance
from mrl.runs.reader import Run, find_runs, load_run

KEYS = ["study", "dataset", "run", "seed"]
CLASSIFICATION_COLUMNS = [*KEYS, "method", "dim", "top1", "metric"]
LONG_COLUMNS = [*KEYS, "method", "dim", "metric", "value"]
ROBUSTNESS_COLUMNS = [*KEYS, "split", "corruption", "severity", "method", "dim", "metric", "value"]
ADAPTIVE_CLASSIFICATION_COLUMNS = [
    *KEYS, "method", "kind", "target", "accuracy", "expected_dim"
]  # fmt: skip
ADAPTIVE_RETRIEVAL_COLUMNS = [
    *KEYS, "representation", "method", "dims", "shortlists", "map@10", "mflops_per_query"
]  # fmt: skip
# Accuracy metrics that are not retrieval metrics; timings are not plotted.
_ACCURACY_METRICS = {"head_top1", "head_top5", "probe_top1", "probe_top5", "top1", "top5"}
# The tidy rows of a text run's evaluation sets (`mrl.text.evaluation.TEXT_SETS_FILE`, named here
# too: importing that module imports torch).
TEXT_SETS_FILE = "eval/text_sets.csv"
TEXT_SETS_ROW_COLUMNS = ["set", "kind", "dim", "metric", "value", "retention"]
TEXT_SETS_COLUMNS = [*KEYS, "method", *TEXT_SETS_ROW_COLUMNS]
_SPLIT = re.compile(r"^query-(?P<corruption>.+?)(?:-(?P<severity>\d+))?$")


@dataclass
class Tables:
    """The normalised tables found under `root` (see the module docstring for the columns)."""

    root: Path
    classification: pd.DataFrame
    retrieval: pd.DataFrame
    adaptive_classification: pd.DataFrame
    adaptive_retrieval: pd.DataFrame
    robustness: pd.DataFrame
    # The text benchmark's rows (`KEYS, method, dim, metric, value, retention, full_dim`).
    text: pd.DataFrame = field(default_factory=pd.DataFrame)
    # Text runs' evaluation-set rows (`TEXT_SETS_COLUMNS`).
    text_sets: pd.DataFrame = field(default_factory=pd.DataFrame)
    # Run key -> provenance (`collect_provenance`, or what an aggregate row tells).
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """Whether nothing drawable was found."""
        return all(
            f.empty
            for f in (
                self.classification,
                self.retrieval,
                self.adaptive_classification,
                self.adaptive_retrieval,
                self.robustness,
                self.text,
                self.text_sets,
            )
        )


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


def _read_csv(path: Path, notes: list[str]) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        notes.append(f"unreadable {path}: {err}")
        return None


def _header(path: Path) -> list[str]:
    try:
        with path.open() as f:
            return [c.strip() for c in f.readline().strip().split(",")]
    except (OSError, UnicodeDecodeError):
        return []


def parse_split(split: str) -> tuple[str, int]:
    """`(corruption, severity)` of a split: `query` -> ("clean", 0), `query-blur-3` -> ("blur", 3).

    A split without a severity (`query-blur`) has severity 0.
    """
    if split == CLEAN_SPLIT:
        return "clean", 0
    match = _SPLIT.match(split)
    if not match:
        return split, 0
    return match.group("corruption"), int(match.group("severity") or 0)


@dataclass
class _RunInfo:
    key: str
    path: Path | None
    study: str
    dataset: str
    seed: Any
    method: str | None
    dims: list[int]


def _method_family(name: str) -> str:
    """`ff256` -> `ff`: a sweep over FF sizes declares the FF method."""
    name = name.strip()
    return "ff" if name.startswith("ff") and name[2:].isdigit() else name


def sweep_methods(hydra_file: Path) -> set[str]:
    """The methods a Hydra sweep file (`.hydra/hydra.yaml` or `multirun.yaml`) sweeps over:
    its `hydra.sweeper.params.method` values; empty where it sweeps none or is unreadable."""
    data = read_yaml(hydra_file)
    hydra = data.get("hydra") if isinstance(data, dict) else None
    sweeper = hydra.get("sweeper") if isinstance(hydra, dict) else None
    params = sweeper.get("params") if isinstance(sweeper, dict) else None
    value = params.get("method") if isinstance(params, dict) else None
    if value is None:
        return set()
    items = value if isinstance(value, list) else str(value).split(",")
    return {_method_family(str(v)) for v in items if str(v).strip()}


def _declared(folder: Path | None, method: str | None, base: Path | None = None) -> list[str]:
    """Methods a run's study declared: the run's own, its sweep's, and its sweep folder's."""
    declared = {method} if method else set()
    if folder is not None:
        declared |= sweep_methods(folder / ".hydra" / "hydra.yaml")
        declared |= sweep_methods(folder.parent / "multirun.yaml")
    if base is not None:
        declared |= sweep_methods(base / "multirun.yaml")
    return sorted(declared)


def _key(path: Path, root: Path) -> str:
    try:
        rel = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())
    return rel or "."


def _text_tables(root: Path, notes: list[str]) -> pd.DataFrame:
    """Every text benchmark table under `root`, with each dim's retention of the full dim's."""
    frames = []
    for path in sorted(root.rglob(TEXT_BENCHMARK_FILE)):
        frame = _read_csv(path, notes)
        if frame is None or not set(EVAL_METRIC_COLUMNS) <= set(frame.columns):
            continue
        kept = pd.DataFrame(retention(frame.to_dict("records")))
        study = path.parent.name
        frames.append(kept.assign(study=study, run=_key(path.parent, root), seed=None))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _set_rows(folder: Path, notes: list[str]) -> pd.DataFrame:
    """A folder's evaluation-set rows (`TEXT_SETS_ROW_COLUMNS`): its `eval/text_sets.csv`, else
    the `eval_sets` of its `results.json`; empty where it has neither."""
    path = folder / TEXT_SETS_FILE
    frame = _read_csv(path, notes) if path.is_file() else None
    if frame is None:
        rows = (read_json(folder / "results.json") or {}).get("eval_sets")
        frame = pd.DataFrame(rows) if isinstance(rows, list) and rows else None
    if frame is None or frame.empty:
        return pd.DataFrame()
    if not set(TEXT_SETS_ROW_COLUMNS) <= set(frame.columns):
        lacking = sorted(set(TEXT_SETS_ROW_COLUMNS) - set(frame.columns))
        notes.append(f"{folder}: evaluation-set rows without the columns {lacking}")
        return pd.DataFrame()
    frame = frame[TEXT_SETS_ROW_COLUMNS].copy()
    for column in ("dim", "value", "retention"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame = frame.dropna(subset=["dim"])
    return frame.assign(dim=frame["dim"].astype(int), set=frame["set"].astype(str))


def _text_set_tables(root: Path, infos: list[_RunInfo], notes: list[str]) -> pd.DataFrame:
    """The evaluation-set rows of every run folder in `infos`, and of every other folder under
    `root` holding an `eval/text_sets.csv` (an `mrl-eval` output), with their keys."""
    folders = {info.path: info for info in infos if info.path is not None}
    for path in sorted(root.rglob(TEXT_SETS_FILE)):
        folder = path.parent.parent.resolve()
        if folder not in folders:
            folders[folder] = _RunInfo(_key(folder, root), folder, folder.name, "", None, None, [])
    frames = []
    for folder, info in folders.items():
        rows = _set_rows(folder, notes)
        if not rows.empty:
            frames.append(rows.assign(study=info.study, dataset=info.dataset, run=info.key,
                                      seed=info.seed, method=info.method))  # fmt: skip
    if not frames:
        return _empty(TEXT_SETS_COLUMNS)
    return pd.concat(frames, ignore_index=True)[TEXT_SETS_COLUMNS]


def _aggregate_files(root: Path) -> list[Path]:
    """The `mrl-aggregate` tables (`results.csv` with its columns) under `root`, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if "results.csv" in filenames and set(AGGREGATE_COLUMNS) <= set(
            _header(here / "results.csv")
        ):
            found.append(here / "results.csv")
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return sorted(found)


def _run_info(path: Path, root: Path) -> tuple[_RunInfo, Run]:
    run = load_run(path, root)
    if run.note.startswith("unreadable"):
        run.note = f"{path / 'eval' / 'metrics.csv'}: {run.note}"
    study = run.experiment or path.name
    info = _RunInfo(
        _key(path, root), path, study, run.dataset, run.seed, run.method, run.dims
    )  # fmt: skip
    return info, run


def _long_rows_of_run(info: _RunInfo, run: Run, notes: list[str]) -> pd.DataFrame:
    """Every metric row of one run folder: `KEYS, split, method, dim, source, metric, value`."""
    if run.note.startswith(str(info.path)):
        notes.append(run.note)
    rows = [
        {"split": r["split"] or CLEAN_SPLIT,
         "method": r["method"] or info.method or "mrl", "dim": r["dim"], "source": r["source"],
         "metric": r["plain"], "value": r["value"]}
        for r in run.rows
    ]  # fmt: skip
    if not rows:
        return pd.DataFrame()
    out = pd.DataFrame(rows)
    return out.assign(study=info.study, dataset=info.dataset, run=info.key, seed=info.seed)


def _aggregate_rows(
    path: Path, root: Path, notes: list[str], runs: dict[str, dict[str, Any]]
) -> tuple[pd.DataFrame, dict[str, _RunInfo]]:
    """Metric rows of an aggregate `results.csv` in the long format, and its runs' infos."""
    frame = _read_csv(path, notes)
    if frame is None:
        return pd.DataFrame(), {}
    # `mrl-aggregate` writes into DIR/aggregate by default; its run names are relative to DIR.
    base = path.parent.parent if path.parent.name == "aggregate" else path.parent
    failed = frame[frame["status"].astype(str) == "failed"]
    for name in failed["run"].astype(str).unique():
        notes.append(f"{_key(path, root)}: run {name} failed (no results.json)")
    frame = frame[frame["status"].astype(str) != "failed"].copy()
    frame["dim"] = pd.to_numeric(frame["dim"], errors="coerce")
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    frame = frame.dropna(subset=["dim", "value", "metric", "method"])
    infos: dict[str, _RunInfo] = {}
    keys = {}
    for name, group in frame.groupby("run", sort=False):
        folder = base / str(name)
        if folder.is_dir():
            info, _ = _run_info(folder, root)
            prov = runs.setdefault(info.key, collect_provenance(folder))
            prov.setdefault("declared_methods", _declared(folder, info.method, base))
        else:
            key = f"{_key(path, root)}#{name}"
            train = group[group["source"] == "train"]
            method = str(train["method"].iloc[0]) if len(train) else None
            seed = group["seed"].iloc[0]
            info = _RunInfo(key, None, "", "", seed, method, sorted({int(d) for d in train["dim"]}))
            runs.setdefault(
                key, {"run_dir": key, "experiment": None, "seed": seed, "git_revision": "unknown",
                      "hardware": "unknown", "config": None, "source": "aggregate",
                      "declared_methods": _declared(None, None, base)},
            )  # fmt: skip
        info.study = str(group["study"].iloc[0])
        info.seed = group["seed"].iloc[0] if pd.notna(group["seed"].iloc[0]) else info.seed
        infos[info.key] = info
        keys[name] = info
    split_metric = frame["metric"].astype(str).str.split("/", n=1, expand=True)
    if split_metric.shape[1] == 1:
        split_metric[1] = None
    corrupted = split_metric[1].notna()
    frame["split"] = split_metric[0].where(corrupted, CLEAN_SPLIT)
    frame["metric"] = split_metric[1].where(corrupted, split_metric[0])
    frame["run"] = frame["run"].map(lambda n: keys[n].key)
    frame["dataset"] = frame["run"].map(lambda k: infos[k].dataset)
    frame["seed"] = frame["run"].map(lambda k: infos[k].seed)
    return frame.drop(columns="status"), infos


def _pick_top1(long: pd.DataFrame) -> pd.DataFrame:
    """Top-1 per (run, split, method, dim), from the most preferred source (`top_k_sources`)."""
    order = {source: rank for rank, source in enumerate(top_k_sources(1))}
    rank = [order.get((s, m)) for s, m in zip(long["source"], long["metric"])]
    cand = long.assign(_rank=rank).dropna(subset=["_rank"])
    cand = cand[cand["value"].map(lambda v: isinstance(v, float) and math.isfinite(v))]
    cand = cand.sort_values("_rank", kind="stable")
    best = cand.drop_duplicates(["run", "split", "method", "dim"], keep="first")
    return best.drop(columns="_rank")


def _normalise(long: pd.DataFrame, infos: dict[str, _RunInfo]) -> dict[str, pd.DataFrame]:
    """Classification, retrieval and robustness tables from the long rows of all runs."""
    if long.empty:
        return {
            "classification": _empty(CLASSIFICATION_COLUMNS),
            "retrieval": _empty(LONG_COLUMNS),
            "robustness": _empty(ROBUSTNESS_COLUMNS),
        }
    long = long.copy()
    long["dim"] = pd.to_numeric(long["dim"], errors="coerce")
    long["value"] = pd.to_numeric(long["value"], errors="coerce").astype(float)
    long = long.dropna(subset=["dim", "value"])
    long["dim"] = long["dim"].astype(int)

    def counts(row_run: str, method: str, dim: int) -> bool:
        info = infos.get(row_run)
        return info is None or stands_for(info.method, info.dims, method, dim)

    keep = [counts(r, m, d) for r, m, d in zip(long["run"], long["method"], long["dim"])]
    long = long[keep]
    top1 = _pick_top1(long)
    classification = top1[top1["split"] == CLEAN_SPLIT].rename(columns={"value": "top1"})
    classification = classification[CLASSIFICATION_COLUMNS].reset_index(drop=True)
    retrieval_rows = long[
        (long["source"] == "eval")
        & ~long["metric"].isin(_ACCURACY_METRICS)
        & ~long["metric"].astype(str).str.endswith("_seconds")
    ]
    retrieval = retrieval_rows[retrieval_rows["split"] == CLEAN_SPLIT][LONG_COLUMNS]
    # Only (run, method) pairs evaluated on a corrupted split, with their clean rows.
    corrupted = long[long["split"] != CLEAN_SPLIT]
    evaluated = set(zip(corrupted["run"], corrupted["method"]))
    robust = pd.concat([top1.assign(metric="top1"), retrieval_rows], ignore_index=True)
    robust = robust[[(r, m) in evaluated for r, m in zip(robust["run"], robust["method"])]].copy()
    parsed = [parse_split(s) for s in robust["split"]]
    robust["corruption"] = [p[0] for p in parsed]
    robust["severity"] = [p[1] for p in parsed]
    return {
        "classification": classification,
        "retrieval": retrieval.reset_index(drop=True),
        "robustness": robust[ROBUSTNESS_COLUMNS].reset_index(drop=True),
    }


def _adaptive_of_run(info: _RunInfo, notes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The adaptive classification rows (sweep, heads, oracle, match) and retrieval rows."""
    eval_dir = info.path / "eval" if info.path else None
    keys = {"study": info.study, "dataset": info.dataset, "run": info.key, "seed": info.seed}
    classification, retrieval = pd.DataFrame(), pd.DataFrame()
    if eval_dir is None:
        return classification, retrieval
    parts = []
    sweep_csv = eval_dir / "adaptive_classification.csv"
    if sweep_csv.is_file():
        sweep = _read_csv(sweep_csv, notes)
        if sweep is not None and {"accuracy", "expected_dim"} <= set(sweep.columns):
            parts.append(sweep.assign(kind="sweep"))
    summary = (read_json(eval_dir / "summary.json") or {}).get("adaptive_classification")
    if isinstance(summary, dict) and parts:
        heads = summary.get("per_head_accuracy") or {}
        parts.append(
            pd.DataFrame(
                [
                    {"kind": "head", "expected_dim": float(d), "accuracy": a}
                    for d, a in heads.items()
                ]
            )
        )
        oracle = summary.get("oracle")
        if isinstance(oracle, dict) and oracle.get("accuracy") is not None:
            parts.append(
                pd.DataFrame(
                    [{"kind": "oracle", "expected_dim": oracle.get("expected_dim"),
                      "accuracy": oracle["accuracy"]}]
                )
            )  # fmt: skip
        match = summary.get("matching_row")
        if isinstance(match, dict):
            parts.append(pd.DataFrame([{**match, "kind": "match"}]))
    if parts:
        classification = pd.concat(parts, ignore_index=True).assign(method=info.method, **keys)
    retrieval_csv = eval_dir / "adaptive_retrieval.csv"
    if retrieval_csv.is_file():
        frame = _read_csv(retrieval_csv, notes)
        if frame is not None and {"method", "mflops_per_query"} <= set(frame.columns):
            retrieval = frame.assign(representation=info.method, **keys)
    return classification, retrieval


def _ordered(frame: pd.DataFrame, first: list[str]) -> pd.DataFrame:
    if frame.empty:
        return _empty(first) if not len(frame.columns) else frame
    rest = [c for c in frame.columns if c not in first]
    for c in first:
        if c not in frame.columns:
            frame[c] = None
    return frame[first + rest].reset_index(drop=True)


def load_results(root: str | Path) -> Tables:
    """Every table under `root` (recursively), normalised; empty frames where nothing is found."""
    root = Path(root)
    notes: list[str] = []
    runs: dict[str, dict[str, Any]] = {}
    aggregates = _aggregate_files(root) if root.is_dir() else []
    run_dirs = find_runs(root, evaluated=True) if root.is_dir() else []
    long_parts, infos = [], {}
    covered: set[str] = set()
    for path in aggregates:
        rows, agg_infos = _aggregate_rows(path, root, notes, runs)
        long_parts.append(rows)
        infos.update(agg_infos)
        covered |= set(agg_infos)
    adaptive_c, adaptive_r, run_infos = [], [], []
    for path in run_dirs:
        info, run = _run_info(path, root)
        run_infos.append(info)
        prov = runs.setdefault(info.key, collect_provenance(path))
        prov.setdefault("declared_methods", _declared(path, info.method))
        if info.key not in covered:
            long_parts.append(_long_rows_of_run(info, run, notes))
            infos[info.key] = info
        c, r = _adaptive_of_run(info, notes)
        adaptive_c.append(c)
        adaptive_r.append(r)
    long_parts = [p for p in long_parts if not p.empty]
    long = pd.concat(long_parts, ignore_index=True) if long_parts else pd.DataFrame()
    if not long.empty:
        long["dataset"] = [infos[k].dataset if k in infos else d
                           for k, d in zip(long["run"], long["dataset"])]  # fmt: skip
    tables = _normalise(long, infos)
    ac = [f for f in adaptive_c if not f.empty]
    ar = [f for f in adaptive_r if not f.empty]
    return Tables(
        root=root,
        classification=tables["classification"],
        retrieval=tables["retrieval"],
        adaptive_classification=_ordered(
            pd.concat(ac, ignore_index=True) if ac else pd.DataFrame(),
            ADAPTIVE_CLASSIFICATION_COLUMNS,
        ),
        adaptive_retrieval=_ordered(
            pd.concat(ar, ignore_index=True) if ar else pd.DataFrame(), ADAPTIVE_RETRIEVAL_COLUMNS
        ),
        robustness=tables["robustness"],
        text=_text_tables(root, notes) if root.is_dir() else pd.DataFrame(),
        text_sets=_text_set_tables(root, run_infos, notes) if root.is_dir() else pd.DataFrame(),
        runs=runs,
        sources=[*aggregates, *run_dirs],
        notes=notes,
    )
