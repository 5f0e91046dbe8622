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
    scores: np.ndarray,
    labels: np.ndarray,
    label,
    k: int,
    draws: int,
    rng: np.random.Generator,
    kth: float | None = None,
) -> float:
    """Share of `draws` random orders of the ties in which the k-NN vote picks `label`;
    `kth`, the k-th best of `scores`, is found when not given."""
    k = min(k, scores.size)
    if kth is None:
        kth = np.partition(scores, scores.size - k)[scores.size - k]
    pool = np.flatnonzero(scores >= kth)  # every item that can reach the top k
    pool_scores = scores[pool]
    if pool.size == k and np.unique(pool_scores).size == k:  # no ties: one order
        order = pool[np.argsort(-pool_scores, kind="stable")]
        return knn_accuracy(labels[order][None, :], np.array([label]), k)
    # A uniform order of each tie group, drawn only as far as the top k reaches: the items
    # above the k-th score by a random key each, then an ordered sample without replacement
    # of the items at the k-th score.
    above = pool[pool_scores > kth]
    at_kth = pool[pool_scores == kth]
    need = k - above.size  # at least 1: kth is the k-th best score
    keys = rng.random((draws, above.size))
    first = above[np.lexsort((keys, np.broadcast_to(-scores[above], keys.shape)))]
    rest = np.stack([rng.choice(at_kth.size, need, replace=False) for _ in range(draws)])
    chosen = labels[np.concatenate([first.reshape(draws, -1), at_kth[rest]], axis=1)]
    votes = (chosen[:, :, None] == chosen[:, None, :]).sum(axis=2)
    return float(np.count_nonzero(chosen[np.arange(draws), votes.argmax(axis=1)] == label)) / draws


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
    precision and both mAPs but not in recall, as in `retrieval_metrics`.

    Every expectation is computed for a block of queries at once; only the k-NN votes of
    queries with ties at their k-th score draw tie orders, one query after another (so the
    seeded draws do not depend on the block size)."""
    database_labels = np.asarray(database_labels)
    query_labels = np.asarray(query_labels)
    ks = sorted(set(positive_ints(ks, "ks")))
    n_db = database.shape[0]
    db = normalize_prefix(database, m, dtype=np.float64)
    q = normalize_prefix(queries, m, dtype=np.float64)
    classes, counts = np.unique(database_labels, return_counts=True)
    vote_ks = sorted({int(k) for k in knn_ks if int(k) > 1})
    k_max = min(max([*ks, *vote_ks]), n_db)
    totals = {name: np.zeros(len(ks)) for name in ("precision", "map", "map_standard", "recall")}
    totals["tied"] = np.zeros(len(ks))
    votes = {k: 0.0 for k in vote_ks}
    rng = np.random.default_rng(seed)
    n_recall, nn_sum = 0, 0.0
    block = max(1, _BLOCK_BYTES // (8 * n_db))
    for start in range(0, len(q), block):
        scores = q[start : start + block] @ db.T
        ql = query_labels[start : start + block]
        top, top_idx = _sorted_top(scores, k_max)
        relevant = database_labels[None, :] == ql[:, None]
        pos = np.clip(np.searchsorted(classes, ql), 0, len(classes) - 1)
        n_rel = np.where(classes[pos] == ql, counts[pos], 0)
        best = scores == top[:, :1]
        nn_sum += float(np.sum(np.count_nonzero(best & relevant, axis=1) / best.sum(axis=1)))
        n_recall += int(np.count_nonzero(n_rel))
        _add_block_expectations(totals, scores, relevant, top, top_idx, n_rel, ks, n_db)
        vote_tied = {k: _vote_ties(scores, top, k) for k in vote_ks}
        for k in vote_ks:
            correct = _sorted_vote_correct(top_idx, database_labels, ql, k)
            votes[k] += float(np.count_nonzero(correct & ~vote_tied[k]))
        # Row after row, k after k: the order in which the seeded draws are taken.
        for row in np.flatnonzero(np.any([vote_tied[k] for k in vote_ks], axis=0)):
            for k in vote_ks:
                if vote_tied[k][row]:
                    kth = top[row, min(k, n_db) - 1]
                    votes[k] += _expected_vote(
                        scores[row], database_labels, ql[row], k, knn_draws, rng, kth
                    )
    n_q = len(q)
    out: dict[str, float] = {}
    for j, k in enumerate(ks):
        out[f"map@{k}"] = float(totals["map"][j] / n_q)
        out[f"map_standard@{k}"] = float(totals["map_standard"][j] / n_q)
        out[f"precision@{k}"] = float(totals["precision"][j] / n_q)
        out[f"recall@{k}"] = float(totals["recall"][j] / n_recall) if n_recall else float("nan")
        out[f"tied_queries@{k}"] = float(totals["tied"][j] / n_q)
    out["1nn"] = nn_sum / n_q
    for k in vote_ks:
        out[f"knn@{k}"] = votes[k] / n_q
    out["zero_prefix_fraction"] = zero_prefix_fraction(database, m)
    return out


def _sorted_top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The `k` best scores of each row, descending, and their database indices (in any order
    within equal scores: nothing here depends on it)."""
    import torch

    # torch's top-k selects an order of magnitude faster than NumPy's argpartition here.
    values, indices = torch.from_numpy(scores).topk(k, dim=1, sorted=True)
    return values.numpy(), indices.numpy()


def _complete_group_terms(top: np.ndarray, rel_sorted: np.ndarray) -> np.ndarray:
    """E[rel_i hits_i] / i at every rank i of `top` as if its group of equal scores were complete
    in `top` (true for every group above a query's k-th score): `(b, k_max)`."""
    b, width = top.shape
    cols = np.arange(width)
    new = np.ones((b, width), dtype=bool)
    new[:, 1:] = top[:, 1:] != top[:, :-1]
    first = np.maximum.accumulate(np.where(new, cols, 0), axis=1)
    last_flags = np.ones((b, width), dtype=bool)
    last_flags[:, :-1] = new[:, 1:]
    last = np.minimum.accumulate(np.where(last_flags, cols, width - 1)[:, ::-1], axis=1)[:, ::-1]
    hits = np.cumsum(rel_sorted, axis=1, dtype=np.float64)
    before = np.where(first > 0, np.take_along_axis(hits, np.maximum(first - 1, 0), axis=1), 0.0)
    r = np.take_along_axis(hits, last, axis=1) - before
    n = (last - first + 1).astype(np.float64)
    return _group_terms(cols + 1.0, first + 1.0, n, r, before)


def _group_terms(
    ranks: np.ndarray, start: np.ndarray, n: np.ndarray, r: np.ndarray, hits_before: np.ndarray
) -> np.ndarray:
    """(r / n) (H + 1 + (i - s) (r - 1) / (n - 1)) / i elementwise (the second term 0 at n = 1)."""
    spread = np.divide((ranks - start) * (r - 1), n - 1, out=np.zeros(np.broadcast(
        ranks, start, n, r).shape), where=n > 1)  # fmt: skip
    return (r / n) * (hits_before + 1 + spread) / ranks


def _add_block_expectations(
    totals: dict[str, np.ndarray],
    scores: np.ndarray,
    relevant: np.ndarray,
    top: np.ndarray,
    top_idx: np.ndarray,
    n_rel: np.ndarray,
    ks: list[int],
    n_db: int,
) -> None:
    """Add the block's expected P@k, both APs, R@k and tied counts to `totals` (per k)."""
    rel_sorted = np.take_along_axis(relevant, top_idx, axis=1)
    complete = _complete_group_terms(top, rel_sorted)
    has_rel = n_rel > 0
    for j, k in enumerate(ks):
        kk = min(k, n_db)
        boundary = top[:, kk - 1 : kk]
        tied = scores == boundary
        n_b = tied.sum(axis=1).astype(np.float64)
        r_b = (tied & relevant).sum(axis=1).astype(np.float64)
        above = top[:, :kk] > boundary
        a = above.sum(axis=1)
        hits_above = (rel_sorted[:, :kk] & above).sum(axis=1).astype(np.float64)
        ranks = np.arange(1, kk + 1, dtype=np.float64)[None, :]
        in_boundary = ~above
        bound = _group_terms(ranks, (a + 1.0)[:, None], n_b[:, None], r_b[:, None],
                             hits_above[:, None])  # fmt: skip
        ap_sum = np.where(above, complete[:, :kk], 0.0).sum(axis=1)
        ap_sum += np.where(in_boundary & (r_b[:, None] > 0), bound, 0.0).sum(axis=1)
        hits = hits_above + (kk - a) * r_b / n_b
        totals["precision"][j] += hits.sum() / k
        totals["map"][j] += ap_sum.sum() / k
        totals["map_standard"][j] += (ap_sum[has_rel] / np.minimum(k, n_rel[has_rel])).sum()
        totals["recall"][j] += (hits[has_rel] / n_rel[has_rel]).sum()
        in_top = (top[:, :kk] == boundary).sum(axis=1)
        totals["tied"][j] += np.count_nonzero(n_b > in_top)


def _vote_ties(scores: np.ndarray, top: np.ndarray, k: int) -> np.ndarray:
    """Rows of the block whose k-NN vote depends on a tie order: more than k items reach the
    k-th score, or two of the top k share a score (`_expected_vote` then draws orders)."""
    k = min(k, scores.shape[1])
    pool = (scores >= top[:, k - 1 : k]).sum(axis=1)
    return (pool != k) | np.any(top[:, 1:k] == top[:, : k - 1], axis=1)


def _sorted_vote_correct(
    top_idx: np.ndarray, database_labels: np.ndarray, ql: np.ndarray, k: int
) -> np.ndarray:
    """Whether the k-NN vote (as in `knn_accuracy`) over each row's sorted top k picks the
    query's label: `(b,)` bool."""
    k = min(k, top_idx.shape[1])
    labels = database_labels[top_idx[:, :k]]
    counts = (labels[:, :, None] == labels[:, None, :]).sum(axis=2)
    pred = labels[np.arange(len(labels)), counts.argmax(axis=1)]
    return pred == ql
