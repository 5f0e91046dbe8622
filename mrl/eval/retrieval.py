"""Retrieval and k-NN classification over embedding prefixes: each dim's search (exact, or tie-aware
at small dims) scored with the label metrics of `mrl.eval.metrics`."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from mrl.core.validate import positive_ints
from mrl.eval.metrics import knn_accuracy, neighbor_labels_of, retrieval_metrics
from mrl.eval.search import build_index, normalize_prefix
from mrl.eval.ties import tie_aware_retrieval, zero_prefix_fraction


def evaluate_retrieval(
    database: np.ndarray,
    database_labels: np.ndarray,
    queries: np.ndarray,
    query_labels: np.ndarray,
    dims: Sequence[int],
    ks: Sequence[int] = (10, 25, 50, 100),
    knn_ks: Sequence[int] = (1, 5, 20),
    backend: str = "exact",
    batch_size: int = 4096,
    progress: bool = False,
    tie_aware_max_dim: int = 0,
    **index_kwargs,
) -> list[dict]:
    """Retrieval metrics of each prefix size m in `dims`, as tidy rows `{"dim", "metric", "value"}`.

    For each m: normalise the prefixes `database[:, :m]` and `queries[:, :m]`, search once with
    k = max(ks + knn_ks), and compute from that one search `map@k` (the paper's, ÷k),
    `map_standard@k` (÷ min(k, relevant)), `precision@k`, `recall@k` for k in `ks`, `1nn` and
    `knn@k` for k in `knn_ks` (k > 1). Timing rows (seconds, wall clock): `normalize_seconds`
    (both prefixes), `index_seconds` (index build) and `search_seconds` (the search of all
    queries, index built beforehand). `index_kwargs` go to `build_index`.

    At dims up to `tie_aware_max_dim`, both mAPs, `precision@k`, `recall@k`, `1nn` and `knn@k`
    are the tie-aware values of `mrl.eval.ties.tie_aware_retrieval` (float64 similarities,
    remaining exact ties counted in expectation) instead of the search library's tie order (kept
    as `<metric>_search_order`), with `tied_queries@k` beside them; `zero_prefix_fraction`
    (database rows with an all-zero prefix) is reported at every dim.
    """
    return evaluate_retrieval_sets(
        database, database_labels, {"": (queries, query_labels)}, dims, ks=ks, knn_ks=knn_ks,
        backend=backend, batch_size=batch_size, progress=progress,
        tie_aware_max_dim=tie_aware_max_dim, **index_kwargs,
    )[""]  # fmt: skip


def evaluate_retrieval_sets(
    database: np.ndarray,
    database_labels: np.ndarray,
    query_sets: dict[str, tuple[np.ndarray, np.ndarray]],
    dims: Sequence[int],
    ks: Sequence[int] = (10, 25, 50, 100),
    knn_ks: Sequence[int] = (1, 5, 20),
    backend: str = "exact",
    batch_size: int = 4096,
    progress: bool = False,
    tie_aware_max_dim: int = 0,
    **index_kwargs,
) -> dict[str, list[dict]]:
    """`evaluate_retrieval` of every `{name: (queries, query_labels)}` of `query_sets` against
    one database: `{name: rows}`. Each dim's database prefix is normalised and indexed once and
    searched by every set; a set's `normalize_seconds` counts the database's share too and its
    `index_seconds` the shared build."""
    database_labels = np.asarray(database_labels)
    sets = {}
    for name, (queries, query_labels) in query_sets.items():
        query_labels = np.asarray(query_labels)
        if len(database_labels) != database.shape[0] or len(query_labels) != queries.shape[0]:
            raise ValueError(
                f"labels do not match the embeddings: {len(database_labels)} database labels for "
                f"{database.shape[0]} rows, {len(query_labels)} query labels for {queries.shape[0]}"
            )
        if database.shape[1] != queries.shape[1]:
            raise ValueError(f"database has {database.shape[1]} dims, queries {queries.shape[1]}")
        sets[name] = (queries, query_labels)
    dims = positive_ints(dims, "dims")
    ks = positive_ints(ks, "ks")
    knn_ks = positive_ints(knn_ks, "knn_ks") if len(knn_ks) else []
    k_search = max(ks + knn_ks)

    rows: dict[str, list[dict]] = {name: [] for name in sets}
    for m in dims:
        t0 = time.perf_counter()
        db_m = normalize_prefix(database, m)
        t1 = time.perf_counter()
        searcher = build_index(db_m, backend=backend, batch_size=batch_size, **index_kwargs)
        t2 = time.perf_counter()
        del db_m
        for name, (queries, query_labels) in sets.items():
            t3 = time.perf_counter()
            q_m = normalize_prefix(queries, m)
            t4 = time.perf_counter()
            _, indices = searcher.search(q_m, k_search, progress=progress)
            t5 = time.perf_counter()
            values = _dim_metrics(
                database, database_labels, queries, query_labels, indices, m, ks, knn_ks,
                tie_aware_max_dim,
            )  # fmt: skip
            values.update(normalize_seconds=(t1 - t0) + (t4 - t3), index_seconds=t2 - t1,
                          search_seconds=t5 - t4)  # fmt: skip
            rows[name].extend({"dim": m, "metric": k, "value": v} for k, v in values.items())
        del searcher
    return rows


def _dim_metrics(
    database, database_labels, queries, query_labels, indices, m, ks, knn_ks, tie_aware_max_dim
) -> dict[str, float]:
    """The label metrics of one dim's search `indices` (tie-aware up to `tie_aware_max_dim`)."""
    labels = neighbor_labels_of(indices, database_labels, query_labels)
    values = retrieval_metrics(labels, query_labels, database_labels, ks)
    for k in knn_ks:
        values["1nn" if k == 1 else f"knn@{k}"] = knn_accuracy(labels, query_labels, k)
    if m <= tie_aware_max_dim:
        tied = tie_aware_retrieval(
            database, database_labels, queries, query_labels, m, ks, knn_ks=knn_ks
        )
        # The search library's own tie order, kept beside the tie-aware value it replaces.
        values.update({f"{k}_search_order": values[k] for k in tied if k in values})
        values.update(tied)
    else:
        values["zero_prefix_fraction"] = zero_prefix_fraction(database, m)
    return values
