"""`run_evaluation`: every enabled evaluation of one target, from embeddings encoded once.

Outputs, under the target's `out_dir` (the run directory, or `out_dir=`):
- `embeddings/<split>/{features,labels}.npy`: `database` (training split, eval transforms),
  `query` (test split) and `query-<corruption>` sets; every dim is a slice `[:, :m]`;
- `eval/metrics.csv`: one row per (dataset, split, method, dim, metric), `zero_prefix` among
  them: the share of queries whose prefix is all zero (an embedding with no direction);
- `eval/adaptive_classification.csv`, `eval/adaptive_retrieval.csv`: the adaptive studies (a
  study switched off or not applicable removes its table left by an earlier run);
- `eval/summary.json`: the headline numbers.

`map@k` in these tables is the paper's AP@k (divided by k); `map_standard@k` divides by
min(k, relevant items) as IR libraries do (see `mrl.eval.metrics`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from mrl.core.nesting import halving_nesting, zero_prefix_counts
from mrl.eval.checks import check_eval_against
from mrl.eval.head_metrics import (
    head_probabilities,
    head_rows,
    is_full_size_single_head,
    restrict_to_subset,
)
from mrl.eval.index_cache import embeddings_fingerprint
from mrl.eval.inputs import (
    EvalTarget,
    check_embeddings,
    database_split,
    encode_split,
    init_distributed_from_env,
    robustness_sets,
)
from mrl.eval.stages import StageClock
from mrl.runs.directory import check_writable
from mrl.runs.files import atomic_write_json, write_csv
from mrl.runs.format import CLEAN_SPLIT, EVAL_METRIC_COLUMNS

log = logging.getLogger("mrl.eval")

# The columns of `eval/metrics.csv`, the run-folder format's.
METRIC_COLUMNS = EVAL_METRIC_COLUMNS
# The metric of the share of rows whose prefix at a dim is all zero.
ZERO_PREFIX = "zero_prefix"
# The tables of the optional studies, by config section: a study that does not run removes its
# table from an earlier run, so that eval/ holds the current run's results only.
SECTION_TABLES = {
    "adaptive_classification": "adaptive_classification.csv",
    "adaptive_retrieval": "adaptive_retrieval.csv",
}


def run_evaluation(
    cfg: DictConfig,
    target: EvalTarget,
    started: float | None = None,
    clock: StageClock | None = None,
) -> tuple[dict[str, Any], list[dict]]:
    """Run every enabled evaluation of `target` and write the tables under its `out_dir`;
    returns the summary (also written as `eval/summary.json`) and the rows of
    `eval/metrics.csv`. Non-zero ranks of a distributed run only encode and return empty ones.
    `started` (default: now) is when the evaluation began, for the summary's wall time;
    `clock` (default: a new one) times each stage, written as the summary's `timings`."""
    from mrl.eval.cascade import adaptive_classification
    from mrl.eval.funnel import evaluate_adaptive_retrieval
    from mrl.eval.metrics import recall_ceiling
    from mrl.eval.probe import probe_per_dim
    from mrl.eval.retrieval import evaluate_retrieval

    started = time.time() if started is None else started
    clock = StageClock() if clock is None else clock
    check_writable(target.out_dir, "choose another with out_dir=<dir>")
    dm, head = target.datamodule, target.head
    features_dim = int(target.encoder.num_features)
    database_set, database_name = database_split(dm, cfg.get("database") or {})
    dims = check_eval_against(cfg, features_dim, head.nesting, len(database_set))
    dataset = type(dm).__name__.removesuffix("DataModule")

    # Encode everything first: under torchrun every process takes part in this step only.
    distributed = init_distributed_from_env()
    with clock.stage("encoding"):
        db, db_y = encode_split(target, cfg, database_name, database_set)
        check_embeddings("database", db)
        dm.setup("test")
        query, query_y = encode_split(target, cfg, CLEAN_SPLIT, dm.test_set)
        max_queries = cfg.robustness.get("max_queries")
        robust = {
            name: (
                *encode_split(
                    target,
                    cfg,
                    f"{CLEAN_SPLIT}-{name}",
                    ds,
                    {"set": name, "max_queries": max_queries},
                ),
                subset,
            )  # fmt: skip
            for name, (ds, subset) in robustness_sets(target, cfg).items()
        }
    if distributed and torch.distributed.get_rank() != 0:
        return {}, []
    log.info("database %s, query %s", db.shape, query.shape)

    rows: list[dict] = []

    def add(split: str, new_rows: list[dict], method: str | None = None) -> None:
        base = {"dataset": dataset, "split": split, "method": method or target.method}
        rows.extend({**base, **r} for r in new_rows)

    summary: dict[str, Any] = {
        "checkpoint": str(target.checkpoint),
        "method": target.method,
        "nesting": list(head.nesting),
        "dims": list(dims),
        "database_size": int(len(db)),
        "query_size": int(len(query)),
    }
    add(CLEAN_SPLIT, zero_prefix_rows(query, dims))
    probs = None
    if cfg.heads:
        with clock.stage("heads"):
            probs = head_probabilities(head, query, cfg.heads_batch_size)
            add(CLEAN_SPLIT, head_rows(head, probs, query_y))
    if cfg.probe.enabled:
        for m in clock.steps(dims, "probes", unit="dim"):
            add(
                CLEAN_SPLIT,
                probe_per_dim(
                    db, db_y, query, query_y, [m], dm.num_classes,
                    max_iter=cfg.probe.max_iter, weight_decay=cfg.probe.weight_decay,
                    max_samples=cfg.probe.max_samples, seed=cfg.seed, progress=False,
                ),
            )  # fmt: skip
    if cfg.retrieval.enabled:
        for m in clock.steps(dims, "retrieval", unit="dim"):
            add(
                CLEAN_SPLIT,
                evaluate_retrieval(
                    db, db_y, query, query_y, [m], ks=tuple(cfg.retrieval.ks),
                    knn_ks=tuple(cfg.retrieval.knn_ks), backend=cfg.retrieval.backend,
                    batch_size=cfg.retrieval.batch_size,
                    tie_aware_max_dim=cfg.retrieval.get("tie_aware_max_dim", 0),
                    **index_options(cfg, cfg.retrieval.backend),
                ),
            )  # fmt: skip
        summary["recall_ceiling"] = {
            f"recall@{k}": recall_ceiling(query_y, db_y, k) for k in cfg.retrieval.ks
        }

    if cfg.baselines and is_full_size_single_head(head, features_dim):
        baseline_dims = (
            cfg.baseline_dims
            or target.train_nesting
            or halving_nesting(features_dim, cfg.baseline_smallest_dim)
        )
        with clock.stage("baselines"):
            add_baselines(cfg, target, db, db_y, query, query_y, list(baseline_dims), add)

    eval_dir = target.out_dir / "eval"
    written: set[str] = set()
    if cfg.adaptive_classification.enabled and probs is not None and len(head.nesting) > 1:
        with clock.stage("adaptive classification"):
            study = adaptive_classification(
                probs, query_y, head.nesting,
                cal_fraction=cfg.adaptive_classification.cal_fraction,
                seed=cfg.seed, tolerance=cfg.adaptive_classification.tolerance,
            )  # fmt: skip
        write_csv(eval_dir / SECTION_TABLES["adaptive_classification"], study["sweep"])
        written.add("adaptive_classification")
        summary["adaptive_classification"] = {k: v for k, v in study.items() if k != "sweep"}
    if cfg.adaptive_retrieval.enabled and len(dims) > 1:
        funnel = None
        if cfg.adaptive_retrieval.funnel_dims:
            funnel = (
                list(cfg.adaptive_retrieval.funnel_dims),
                list(cfg.adaptive_retrieval.funnel_shortlists),
            )
        first_stage = cfg.adaptive_retrieval.get("first_stage", "exact")
        db_dir = target.out_dir / "embeddings" / database_name
        with clock.stage("adaptive retrieval"):
            study_rows = evaluate_adaptive_retrieval(
                db, db_y, query, query_y, dims, shortlist_k=cfg.adaptive_retrieval.shortlist_k,
                funnel=funnel, backend=cfg.retrieval.backend, first_stage=first_stage,
                repeats=cfg.adaptive_retrieval.get("repeats", 3),
                index_cache_dir=db_dir / "indexes", fingerprint=embeddings_fingerprint(db_dir),
                **index_options(cfg, first_stage),
            )  # fmt: skip
        write_csv(eval_dir / SECTION_TABLES["adaptive_retrieval"], study_rows)
        written.add("adaptive_retrieval")
        summary["adaptive_retrieval"] = study_rows

    if robust:
        add_robustness(cfg, head, db, db_y, dims, robust, add, clock)

    write_csv(eval_dir / "metrics.csv", rows, columns=METRIC_COLUMNS)
    remove_stale_tables(eval_dir, written)
    summary["per_dim"] = per_dim_summary(rows, CLEAN_SPLIT)
    summary["wall_time_s"] = round(time.time() - started, 1)
    summary["timings"] = clock.rounded()
    atomic_write_json(eval_dir / "summary.json", summary)
    return summary, rows


def add_robustness(cfg, head, db, db_y, dims, robust: dict, add, clock: StageClock) -> None:
    """Head and retrieval rows of every robustness set, set after set; each dim's database index
    is built once and searched by every set."""
    from mrl.eval.retrieval import evaluate_retrieval_sets

    per_set: dict[str, list[dict]] = {name: [] for name in robust}
    if cfg.heads:
        with clock.stage("robustness heads"):
            for name, (r_features, r_labels, subset) in robust.items():
                r_probs = head_probabilities(head, r_features, cfg.heads_batch_size)
                if subset is not None:
                    r_probs, r_labels = restrict_to_subset(r_probs, r_labels, subset)
                per_set[name].extend(head_rows(head, r_probs, r_labels))
    if cfg.robustness.retrieval:
        sets = {name: (f, y) for name, (f, y, _) in robust.items()}
        found: dict[str, list[dict]] = {name: [] for name in robust}
        for m in clock.steps(dims, "robustness retrieval", unit="dim"):
            by_set = evaluate_retrieval_sets(
                db, db_y, sets, [m], ks=tuple(cfg.robustness.ks),
                knn_ks=tuple(cfg.robustness.knn_ks),
                backend=cfg.retrieval.backend, batch_size=cfg.retrieval.batch_size,
            )  # fmt: skip
            for name, set_rows in by_set.items():
                found[name].extend(set_rows)
        for name in robust:
            per_set[name].extend(found[name])
    for name, set_rows in per_set.items():
        add(f"{CLEAN_SPLIT}-{name}", set_rows)


def remove_stale_tables(eval_dir: Path, written: set[str]) -> list[Path]:
    """Delete the table of every `SECTION_TABLES` study not in `written` (this run did not run
    it), only those files; returns the paths removed."""
    removed = []
    for section, name in SECTION_TABLES.items():
        path = eval_dir / name
        if section not in written and path.is_file():
            path.unlink()
            removed.append(path)
            log.info("removed %s: %s did not run this time", path, section)
    return removed


def index_options(cfg: DictConfig, backend: str) -> dict[str, Any]:
    """The `retrieval.index` options that `backend` reads (unset ones left to its defaults)."""
    wanted = {"hnsw": ("hnsw_m", "ef_construction", "ef_search"),
              "ivf": ("nlist", "nprobe", "coarse_dim")}.get(backend, ())  # fmt: skip
    options = cfg.retrieval.get("index") or {}
    chosen = {k: options[k] for k in wanted if options.get(k) is not None}
    if backend in ("exact", "ivf"):
        chosen["use_gpu"] = cfg.retrieval.get("use_gpu", "auto")
    return chosen


def add_baselines(cfg, target, db, db_y, query, query_y, dims: list[int], add) -> None:
    """SVD, random-feature and low-rank-classifier baselines from a full-size model's features."""
    from mrl.eval.baselines import (
        iter_baseline_features,
        svd_classifier_rows,
        torch_head_weight,
    )
    from mrl.eval.probe import probe_per_dim
    from mrl.eval.retrieval import evaluate_retrieval

    for name in cfg.baselines:
        if name == "svd_classifier":
            weight, bias = torch_head_weight(target.head)
            add(CLEAN_SPLIT, svd_classifier_rows(weight, bias, query, query_y, dims), method=name)
            continue
        for m, db_m, query_m in iter_baseline_features(name, db, query, dims, seed=cfg.seed):
            add(
                CLEAN_SPLIT,
                probe_per_dim(
                    db_m, db_y, query_m, query_y, [m], target.datamodule.num_classes,
                    max_iter=cfg.probe.max_iter, weight_decay=cfg.probe.weight_decay,
                    max_samples=cfg.probe.max_samples, seed=cfg.seed, progress=False,
                ),
                method=name,
            )  # fmt: skip
            if cfg.retrieval.enabled:
                add(
                    CLEAN_SPLIT,
                    evaluate_retrieval(
                        db_m, db_y, query_m, query_y, [m],
                        ks=tuple(cfg.baseline_retrieval.ks),
                        knn_ks=tuple(cfg.baseline_retrieval.knn_ks),
                        backend=cfg.retrieval.backend, batch_size=cfg.retrieval.batch_size,
                    ),
                    method=name,
                )  # fmt: skip


def zero_prefix_rows(features: np.ndarray, dims: list[int]) -> list[dict]:
    """`{"dim", "metric": "zero_prefix", "value"}` per dim: the fraction of the rows of
    `features` `(N, width)` whose first dim coordinates are all zero (NaN when N is 0)."""
    n = len(features)
    counts = zero_prefix_counts(features, dims)
    return [
        {"dim": int(m), "metric": ZERO_PREFIX, "value": counts[m] / n if n else float("nan")}
        for m in dims
    ]


def per_dim_summary(rows: list[dict], split: str) -> dict[str, dict[str, float]]:
    """`{dim: {metric: value}}` of one split."""
    table: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["split"] == split:
            table.setdefault(str(r["dim"]), {})[r["metric"]] = float(r["value"])
    return table
