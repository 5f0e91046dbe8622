"""The block computation of the tie-aware metrics equals the per-query loop it replaced, on
random data full of ties, across blocks, with classes missing from the database."""

from collections.abc import Sequence

import numpy as np
import pytest

from mrl.core.validate import positive_ints
from mrl.eval import ties
from mrl.eval.metrics import knn_accuracy
from mrl.eval.search import normalize_prefix
from mrl.eval.ties import (
    _expected_ap_terms,
    tie_aware_retrieval,
    zero_prefix_fraction,
)

_BLOCK_BYTES = ties._BLOCK_BYTES


def _loop_vote(
    scores: np.ndarray, labels: np.ndarray, label, k: int, draws: int, rng: np.random.Generator
) -> float:
    """The per-draw loop: share of `draws` tie orders whose k-NN vote picks `label`."""
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


def loop_reference(
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
    """The per-query loop the block computation replaced."""
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
                votes[k] += _loop_vote(scores[row], database_labels, label, k, knn_draws, rng)
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


@pytest.mark.parametrize(
    "levels,m,block_bytes", [(2, 2, 8 * 40 * 7), (3, 3, 1 << 20), (50, 4, 8 * 40)]
)
def test_block_computation_equals_the_per_query_loop(monkeypatch, levels, m, block_bytes):
    rng = np.random.default_rng(levels)
    # Few distinct coordinate values: many exact ties; some all-zero prefixes too.
    db = rng.integers(0, levels, (40, 6)).astype(np.float32)
    q = rng.integers(0, levels, (23, 6)).astype(np.float32)
    db_y = rng.integers(0, 4, 40)
    q_y = rng.integers(0, 5, 23)  # class 4 has no database item
    kw = dict(ks=[1, 3, 10, 50], knn_ks=[1, 5, 20], knn_draws=4000, seed=3)
    expected = loop_reference(db, db_y, q, q_y, m, **kw)
    monkeypatch.setattr(ties, "_BLOCK_BYTES", block_bytes)
    got = tie_aware_retrieval(db, db_y, q, q_y, m, **kw)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        if name.startswith("knn@"):
            # Seeded estimates of the same expectation from other draws.
            assert got[name] == pytest.approx(value, abs=0.02), name
        else:
            assert got[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name
