"""Retrieval metrics that stay honest when similarities tie: at tiny prefixes (2 or 4 dims of
post-ReLU features) many database items share a query's top score exactly, and a search
library's tie order then decides P@k, mAP@k and 1-NN.

Here similarities are computed in float64 (cheap at small dims), which separates every pair
that arithmetic can separate, and the ties that remain are counted in expectation over a
uniformly random order within each group of equal scores (McSherry & Najork, ECIR 2008):

- For a query, let the groups of equal scores above the k-th score hold `a` items with `h`
  relevant, and the boundary group (score equal to the k-th) hold `n_b` items over the whole
  database with `r_b` relevant. Then E[hits@k] = h + (k - a) r_b / n_b, so
  E[P@k] = E[hits@k] / k and E[R@k] = E[hits@k] / (relevant in the database).
- For AP@k = (1/k) sum_{i<=k} rel_i hits_i / i (the paper's normalisation), a group of n
  items with r relevant at ranks s..s+n-1 after H relevant items contributes, at rank i,
  E[rel_i hits_i] = (r / n) (H + 1 + (i - s) (r - 1) / (n - 1)) (the second term is 0 for n = 1).
  The standard AP@k divides the same sum by min(k, relevant in the database), a constant, so
  its expectation is that of the sum divided by it.
- 1-NN: the top group holds n_1 items, r_1 of the query's class: E[1-NN correct] = r_1 / n_1.

- k-NN majority vote (k > 1): its expectation over tie orders has no short closed form, so it
  is estimated by drawing `knn_draws` seeded random orders of each query's items tied at or
  above its k-th score (the vote of one order as in `knn_accuracy`) and averaging; queries
  without such ties take their one order.

`zero_prefix_fraction` reports the rows whose prefix is all zeros (their similarity is 0 to
everything).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mrl.core.validate import positive_ints
from mrl.eval.metrics import knn_accuracy
from mrl.eval.search import normalize_prefix

# Largest float64 score block (queries x database) computed at once.
_BLOCK_BYTES = 256 << 20


def zero_prefix_fraction(x: np.ndarray, m: int) -> float:
    """Fraction of rows whose first `m` values are all zero."""
    return float(np.mean(~np.asarray(x[:, :m] != 0).any(axis=1)))


def _expected_ap_terms(
    rel_sorted: np.ndarray, scores_sorted: np.ndarray, k: int, n_b: int, r_b: int
) -> tuple[float, float]:
    """(E[hits@k], E[sum_{i<=k} rel_i hits_i / i]) for one query (see the module docstring)."""
    boundary = scores_sorted[k - 1]
    above = scores_sorted[:k] > boundary
    a = int(above.sum())
    hits_before = 0.0
    ap_sum = 0.0
    i = 0
    # Groups strictly above the boundary: complete inside the top k.
    while i < a:
        j = i
        while j + 1 < a and scores_sorted[j + 1] == scores_sorted[i]:
            j += 1
        n, r = j - i + 1, float(rel_sorted[i : j + 1].sum())
        ranks = np.arange(i + 1, j + 2, dtype=np.float64)
        ap_sum += _group_ap(ranks, i + 1, n, r, hits_before)
        hits_before += r
        i = j + 1
    ranks = np.arange(a + 1, k + 1, dtype=np.float64)
    ap_sum += _group_ap(ranks, a + 1, n_b, float(r_b), hits_before)
    expected_hits = hits_before + (k - a) * r_b / n_b
    return expected_hits, ap_sum


def _expected_vote(
    scores: np.ndarray, labels: np.ndarray, label, k: int, draws: int, rng: np.random.Generator
) -> float:
    """Share of `draws` random orders of the ties in which the k-NN vote picks `label`."""
    k = min(k, scores.size)
    kth = np.partition(scores, scores.size - k)[scores.size - k]
    pool = np.flatnonzero(scores >= kth)  # every item that can reach the top k
    pool_scores = scores[pool]
    one = np.array([label])
    if pool.size == k and np.unique(pool_scores).size == k:  # no ties: one order
        order = pool[np.argsort(-pool_scores, kind="stable")]
        return knn_accuracy(labels[order][None, :], one, k)
    correct = 0.0
    for _ in range(draws):
        order = pool[np.lexsort((rng.random(pool.size), -pool_scores))[:k]]
        correct += knn_accuracy(labels[order][None, :], one, k)
    return correct / draws


def _group_ap(ranks: np.ndarray, start: int, n: int, r: float, hits_before: float) -> float:
    if r == 0 or ranks.size == 0:
        return 0.0
    within = (ranks - start) * (r - 1) / (n - 1) if n > 1 else np.zeros_like(ranks)
    return float(np.sum((r / n) * (hits_before + 1 + within) / ranks))


def tie_aware_retrieval(
    database: np.ndarray,
    database_labels: np.ndarray,
    queries: np.ndarray,
    query_labels: np.ndarray,
    m: int,
    ks: Sequence[int] = (10,),
    knn_ks: Sequence[int] = (),
    knn_draws: int = 32,
    seed: int = 0,
) -> dict[str, float]:
    """Tie-aware `map@k`, `map_standard@k`, `precision@k`, `recall@k` (each k in `ks`), `1nn` and
    `knn@k` (each k > 1 in `knn_ks`, estimated over `knn_draws` seeded tie orders) of the
    `m`-prefixes, by exact float64 search over the whole database, plus `tied_queries@k` (the
    share of queries whose k-th score is shared by an item outside their top k) and
    `zero_prefix_fraction` (database rows). Queries whose class has no database item count in
    precision and both mAPs but not in recall, as in `retrieval_metrics`."""
    database_labels = np.asarray(database_labels)
    query_labels = np.asarray(query_labels)
    ks = sorted(set(positive_ints(ks, "ks")))
    n_db = database.shape[0]
    db = normalize_prefix(database, m, dtype=np.float64)
    q = normalize_prefix(queries, m, dtype=np.float64)
    classes, counts = np.unique(database_labels, return_counts=True)
    k_max = min(max(ks), n_db)
    names = ("precision", "map", "map_standard", "recall", "tied")
    sums = {name: np.zeros(len(ks)) for name in names}
    vote_ks = sorted({int(k) for k in knn_ks if int(k) > 1})
    votes = {k: 0.0 for k in vote_ks}
    rng = np.random.default_rng(seed)
    n_recall, nn_sum = 0, 0.0
    block = max(1, _BLOCK_BYTES // (8 * n_db))
    for start in range(0, len(q), block):
        scores = q[start : start + block] @ db.T
        ql = query_labels[start : start + block]
        if k_max < n_db:
            part = np.argpartition(-scores, k_max - 1, axis=1)[:, :k_max]
        else:
            part = np.broadcast_to(np.arange(n_db), scores.shape)
        top = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-top, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        top_idx = np.take_along_axis(part, order, axis=1)
        for row in range(scores.shape[0]):
            label = ql[row]
            relevant = database_labels == label
            rel_sorted = relevant[top_idx[row]]
            pos = np.searchsorted(classes, label)
            n_rel = int(counts[pos]) if pos < len(classes) and classes[pos] == label else 0
            best = scores[row] == top[row, 0]
            nn_sum += float(np.count_nonzero(best & relevant)) / float(np.count_nonzero(best))
            if n_rel:
                n_recall += 1
            for j, k in enumerate(ks):
                kk = min(k, n_db)
                tied = scores[row] == top[row, kk - 1]
                n_b = int(np.count_nonzero(tied))
                r_b = int(np.count_nonzero(tied & relevant))
                hits, ap_sum = _expected_ap_terms(rel_sorted, top[row], kk, n_b, r_b)
                sums["precision"][j] += hits / k
                sums["map"][j] += ap_sum / k
                if n_rel:
                    sums["map_standard"][j] += ap_sum / min(k, n_rel)
                sums["tied"][j] += n_b > int(np.count_nonzero(top[row, :kk] == top[row, kk - 1]))
                if n_rel:
                    sums["recall"][j] += hits / n_rel
            for k in vote_ks:
                votes[k] += _expected_vote(scores[row], database_labels, label, k, knn_draws, rng)
    n_q = len(q)
    out: dict[str, float] = {}
    for j, k in enumerate(ks):
        out[f"map@{k}"] = float(sums["map"][j] / n_q)
        out[f"map_standard@{k}"] = float(sums["map_standard"][j] / n_q)
        out[f"precision@{k}"] = float(sums["precision"][j] / n_q)
        out[f"recall@{k}"] = float(sums["recall"][j] / n_recall) if n_recall else float("nan")
        out[f"tied_queries@{k}"] = float(sums["tied"][j] / n_q)
    out["1nn"] = nn_sum / n_q
    for k in vote_ks:
        out[f"knn@{k}"] = votes[k] / n_q
    out["zero_prefix_fraction"] = zero_prefix_fraction(database, m)
    return out
