"""Label metrics of ranked neighbours: precision, AP, recall at k and k-NN accuracy.

The database is the training set's embeddings, the queries the test set's; a retrieved database
item is relevant iff its label equals the query's label. For ranks i = 1..k with rel_i in {0, 1}
and R the number of database items of the query's class:

- P@k  = (1/k) * sum_{i<=k} rel_i                                          (`precision@k`)
- the paper's AP@k = (1/k) * sum_{i<=k} rel_i * P@i, divided by k, not by the number of
  relevant items (`map@k` is its mean over queries: "mAP@k (paper, ÷k)"). Where R < k it is at
  most R/k: about 10% at k = 10 when each query has one relevant item
- the standard AP@k = sum_{i<=k} rel_i * P@i / min(k, R), the `MAP@k` of sentence-transformers'
  `InformationRetrievalEvaluator` (`map_standard@k` is its mean: "mAP@k (standard)"). Where R >= k
  it equals the paper's; where R = 1 it is the reciprocal rank of the hit. torchmetrics'
  `RetrievalMAP(top_k=k)` divides by the relevant items retrieved in the top k instead, which
  agrees with it whenever that count is min(k, R) or 0
- R@k  = sum_{i<=k} rel_i / R (`recall@k`); at most min(k, R) / R (`recall_ceiling`), which is
  tiny for class-level retrieval (10 / 5,500 on Fashion-MNIST)

When fewer than k neighbours are available (k > N_db), the missing ranks count as not relevant and
P@k and the paper's AP@k still divide by k. Queries whose class has no database item are left out
of recall (R@k is the mean over the other queries, NaN if there are none); they still count, with
zero hits, in precision and both mAPs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mrl.core.validate import positive_ints

# Queries per chunk in the metric computations, to bound the (chunk x k) temporaries.
_QUERY_CHUNK = 1 << 16


def _check_neighbors(neighbor_labels: np.ndarray, query_labels: np.ndarray) -> None:
    if neighbor_labels.ndim != 2:
        raise ValueError(
            f"neighbor_labels must be 2-D (queries x ranks), got {neighbor_labels.shape}"
        )
    if query_labels.shape != (neighbor_labels.shape[0],):
        raise ValueError(
            f"query_labels has shape {query_labels.shape}, expected ({neighbor_labels.shape[0]},)"
        )
    if neighbor_labels.shape[0] == 0:
        raise ValueError("no queries to evaluate")


def neighbor_labels_of(
    indices: np.ndarray, database_labels: np.ndarray, query_labels: np.ndarray
) -> np.ndarray:
    """Labels of the retrieved database rows; a missing neighbour (index -1, which HNSW can
    return) gets a label that matches no query, so it counts as not relevant."""
    database_labels = np.asarray(database_labels)
    labels = database_labels[np.clip(indices, 0, None)]
    missing = indices < 0
    if missing.any():
        if labels.dtype.kind in "biuf":
            lowest = min(database_labels.min(), np.min(query_labels))
            if labels.dtype.kind == "f":
                labels, fill = labels.astype(np.float64), float(lowest) - 1.0
            else:
                labels, fill = labels.astype(np.int64), int(lowest) - 1
        else:
            labels, fill = labels.astype(object), None
        labels[missing] = fill
    return labels


def retrieval_metrics(
    neighbor_labels: np.ndarray,
    query_labels: np.ndarray,
    database_labels: np.ndarray,
    ks: Sequence[int] = (10, 25, 50, 100),
) -> dict[str, float]:
    """`map@k` (the paper's, ÷k), `map_standard@k` (÷ min(k, R)), `precision@k` and `recall@k`
    (fractions) for each k in `ks`.

    `neighbor_labels[q, i]` is the label of query q's (i+1)-th neighbour, best first; it may have
    fewer than max(ks) columns (see the module docstring for how that and recall's denominator
    are handled). `database_labels` holds every database item's label (recall's denominator).
    """
    neighbor_labels = np.asarray(neighbor_labels)
    query_labels = np.asarray(query_labels)
    database_labels = np.asarray(database_labels)
    _check_neighbors(neighbor_labels, query_labels)
    ks = positive_ints(ks, "ks")
    k_max = max(ks)
    k_have = min(k_max, neighbor_labels.shape[1])
    cols = np.array(ks) - 1
    ranks = np.arange(1, k_max + 1, dtype=np.float64)

    classes, counts = np.unique(database_labels, return_counts=True)
    n_q = len(query_labels)
    names = ("precision", "map", "map_standard", "recall")
    sums = {name: np.zeros(len(ks)) for name in names}
    n_recall = 0
    for start in range(0, n_q, _QUERY_CHUNK):
        stop = min(n_q, start + _QUERY_CHUNK)
        ql = query_labels[start:stop]
        rel = np.zeros((stop - start, k_max), dtype=np.float64)
        rel[:, :k_have] = neighbor_labels[start:stop, :k_have] == ql[:, None]
        hits = np.cumsum(rel, axis=1)
        ap_sums = np.cumsum(rel * (hits / ranks), axis=1)
        sums["precision"] += hits[:, cols].sum(axis=0) / ks
        sums["map"] += ap_sums[:, cols].sum(axis=0) / ks

        pos = np.clip(np.searchsorted(classes, ql), 0, len(classes) - 1)
        n_relevant = np.where(classes[pos] == ql, counts[pos], 0)
        has_relevant = n_relevant > 0
        # A query with no relevant item has AP 0 (its sum is 0); max(., 1) only avoids 0 / 0.
        denominator = np.maximum(np.minimum(np.array(ks)[None, :], n_relevant[:, None]), 1)
        sums["map_standard"] += (ap_sums[:, cols] / denominator).sum(axis=0)
        n_recall += int(has_relevant.sum())
        sums["recall"] += (hits[has_relevant][:, cols] / n_relevant[has_relevant, None]).sum(axis=0)

    out: dict[str, float] = {}
    for j, k in enumerate(ks):
        out[f"map@{k}"] = float(sums["map"][j] / n_q)
        out[f"map_standard@{k}"] = float(sums["map_standard"][j] / n_q)
        out[f"precision@{k}"] = float(sums["precision"][j] / n_q)
        out[f"recall@{k}"] = float(sums["recall"][j] / n_recall) if n_recall else float("nan")
    return out


def recall_ceiling(query_labels: np.ndarray, database_labels: np.ndarray, k: int) -> float:
    """The largest `recall@k` any ranking can reach: the mean of min(k, R) / R over the queries
    whose class has R > 0 database items (NaN if none has). Beside a class-level recall@k it says
    how much of the scale is reachable at all."""
    query_labels = np.asarray(query_labels)
    (k,) = positive_ints([k], "k")
    classes, counts = np.unique(np.asarray(database_labels), return_counts=True)
    pos = np.clip(np.searchsorted(classes, query_labels), 0, len(classes) - 1)
    n_relevant = np.where(classes[pos] == query_labels, counts[pos], 0)
    n_relevant = n_relevant[n_relevant > 0]
    if n_relevant.size == 0:
        return float("nan")
    return float(np.mean(np.minimum(k, n_relevant) / n_relevant))


def knn_accuracy(neighbor_labels: np.ndarray, query_labels: np.ndarray, k: int) -> float:
    """Fraction of queries whose k-NN majority label equals their label (k=1: 1-NN accuracy).

    The vote is over the first k columns of `neighbor_labels` (all of them if there are fewer).
    A tie between classes goes to the class whose best-ranked member comes first.
    """
    neighbor_labels = np.asarray(neighbor_labels)
    query_labels = np.asarray(query_labels)
    _check_neighbors(neighbor_labels, query_labels)
    (k,) = positive_ints([k], "k")
    top = neighbor_labels[:, :k]
    kk = top.shape[1]
    if kk == 0:
        raise ValueError("neighbor_labels has no columns: no neighbour to vote")
    if kk == 1:
        return float(np.mean(top[:, 0] == query_labels))
    # votes[q, j] = how many of the top k share the label at rank j; argmax returns the first
    # rank with the most votes, which is the best-ranked member of the best-ranked tied class.
    chunk = max(1, (1 << 24) // (kk * kk))
    correct = 0
    for start in range(0, len(query_labels), chunk):
        t = top[start : start + chunk]
        votes = (t[:, :, None] == t[:, None, :]).sum(axis=2)
        pred = t[np.arange(len(t)), votes.argmax(axis=1)]
        correct += int(np.sum(pred == query_labels[start : start + chunk]))
    return correct / len(query_labels)
