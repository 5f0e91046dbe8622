"""Tie-aware retrieval metrics against a hand-worked case and against random tie orders."""

import numpy as np
import pytest

from mrl.eval.metrics import knn_accuracy, retrieval_metrics
from mrl.eval.ties import tie_aware_retrieval, zero_prefix_fraction


def test_hand_worked_tied_case():
    # Query (1, 0), class 0. Three database items point the same way (classes 0, 1, 0): they
    # tie at score 1. Then (1, 1) of class 0 (score 0.707) and (0, 1) of class 1 (score 0).
    db = np.array([[2, 0], [1, 0], [3, 0], [1, 1], [0, 1]], dtype=np.float32)
    db_y = np.array([0, 1, 0, 0, 1])
    q, q_y = np.array([[1, 0]], dtype=np.float32), np.array([0])
    out = tie_aware_retrieval(db, db_y, q, q_y, m=2, ks=[2])
    # Orders of the tied three by class: 001, 010, 100, each with probability 1/3.
    # AP@2 = (1 + 1/2 + 1/4) / 3 = 7/12; hits@2 = 4/3 in expectation; 3 class-0 items.
    assert out["map@2"] == pytest.approx(7 / 12)
    assert out["precision@2"] == pytest.approx(2 / 3)
    assert out["recall@2"] == pytest.approx(4 / 9)
    assert out["1nn"] == pytest.approx(2 / 3)
    assert out["tied_queries@2"] == 1.0
    assert out["zero_prefix_fraction"] == 0.0


def test_matches_the_average_over_random_tie_orders():
    rng = np.random.default_rng(0)
    # Small integer vectors: many exact ties, some zero rows.
    db = rng.integers(0, 3, size=(60, 2)).astype(np.float32)
    db_y = rng.integers(0, 3, size=60)
    q = rng.integers(0, 3, size=(8, 2)).astype(np.float32)
    q_y = rng.integers(0, 3, size=8)
    ks = [1, 5, 10]
    out = tie_aware_retrieval(db, db_y, q, q_y, m=2, ks=ks, knn_ks=[1, 5], knn_draws=400)

    def unit(x):
        n = np.linalg.norm(x, axis=1, keepdims=True)
        return np.divide(x, n, out=np.zeros_like(x), where=n > 0)

    scores = unit(q.astype(np.float64)) @ unit(db.astype(np.float64)).T
    draws = 4000
    totals = {f"{name}@{k}": 0.0 for name in ("map", "precision", "recall") for k in ks}
    nn = knn5 = 0.0
    for _ in range(draws):
        jitter = rng.random(scores.shape)  # a random order within equal scores
        order = np.lexsort((jitter, -scores), axis=1)
        labels = db_y[order]
        metrics = retrieval_metrics(labels, q_y, db_y, ks)
        for key in totals:
            totals[key] += metrics[key] / draws
        nn += np.mean(labels[:, 0] == q_y) / draws
        knn5 += knn_accuracy(labels, q_y, 5) / draws
    for key, value in totals.items():
        assert out[key] == pytest.approx(value, abs=0.01), key
    assert out["1nn"] == pytest.approx(nn, abs=0.01)
    assert out["knn@5"] == pytest.approx(knn5, abs=0.03)
    assert out["zero_prefix_fraction"] == pytest.approx(zero_prefix_fraction(db, 2))
    assert zero_prefix_fraction(db, 2) == pytest.approx(np.mean((db == 0).all(axis=1)))


def test_without_ties_it_equals_the_plain_metrics():
    rng = np.random.default_rng(1)
    db, q = rng.normal(size=(300, 4)), rng.normal(size=(20, 4))
    db_y, q_y = rng.integers(0, 4, 300), rng.integers(0, 4, 20)
    out = tie_aware_retrieval(db, db_y, q, q_y, m=3, ks=[10], knn_ks=[5])
    order = np.argsort(
        -(q[:, :3] / np.linalg.norm(q[:, :3], axis=1, keepdims=True))
        @ (db[:, :3] / np.linalg.norm(db[:, :3], axis=1, keepdims=True)).T,
        axis=1,
    )
    plain = retrieval_metrics(db_y[order], q_y, db_y, [10])
    assert out["knn@5"] == pytest.approx(knn_accuracy(db_y[order], q_y, 5))
    for key in ("map@10", "precision@10", "recall@10"):
        assert out[key] == pytest.approx(plain[key])
    assert out["tied_queries@10"] == 0.0
