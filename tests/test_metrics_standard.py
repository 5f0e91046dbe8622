"""The two mAP@k of `mrl.eval.metrics`: the paper's (÷k, `map@k`) and the standard one
(÷ min(k, relevant), `map_standard@k`), against hand-worked cases, plain loops, torchmetrics and
the tie-aware path; and the recall ceiling."""

import numpy as np
import pytest
import torch
from torchmetrics.functional.retrieval import retrieval_average_precision, retrieval_precision
from torchmetrics.retrieval import RetrievalMAP

from mrl.eval.metrics import recall_ceiling, retrieval_metrics
from mrl.eval.ties import tie_aware_retrieval


def loop_aps(neighbor_labels, query_labels, database_labels, k):
    """Per-query (paper's AP@k, standard AP@k) with plain loops, straight from the definitions."""
    out = []
    for row, label in zip(neighbor_labels, query_labels):
        hits, total = 0, 0.0
        for i, other in enumerate(list(row)[:k], start=1):
            if other == label:
                hits += 1
                total += hits / i
        n_relevant = sum(1 for other in database_labels if other == label)
        out.append((total / k, total / min(k, n_relevant) if n_relevant else 0.0))
    return out


def random_problem(seed: int, n_db: int = 80, n_q: int = 30):
    """Distinct positive scores (torchmetrics counts a score <= 0 as not retrieved) and classes
    of very different sizes: 1, 2, 3, ... database items, and one class with none."""
    rng = np.random.default_rng(seed)
    sizes = [1, 2, 3, 5, 8, 13, 48]
    database_labels = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))[:n_db]
    query_labels = rng.integers(0, len(sizes) + 1, n_q)  # label 7 is in no database row
    scores = rng.permutation(n_q * n_db).reshape(n_q, n_db).astype(np.float64) + 1.0
    # Push relevant items up a little, so that rankings are neither random nor perfect.
    scores += (database_labels[None, :] == query_labels[:, None]) * rng.random((n_q, 1)) * n_db
    order = np.argsort(-scores, axis=1, kind="stable")
    return scores, order, database_labels, query_labels


def test_hand_worked_example():
    # Relevance [1, 0, 1, 0]; 3 relevant items in the database. The sum of precisions at the
    # hits is 1/1 + 2/3 = 5/3. Paper: (5/3) / 4. Standard: (5/3) / min(4, 3) = 5/9.
    neighbor_labels = np.array([[7, 1, 7, 2]])
    out = retrieval_metrics(neighbor_labels, np.array([7]), np.array([7, 7, 7, 1, 2, 3]), ks=[2, 4])
    assert out["map@4"] == pytest.approx(5 / 12, abs=1e-12)
    assert out["map_standard@4"] == pytest.approx(5 / 9, abs=1e-12)
    # At k = 2 only the first hit counts, divided by min(2, 3) = 2 in both.
    assert out["map@2"] == out["map_standard@2"] == pytest.approx(0.5, abs=1e-12)


def test_one_relevant_item_is_the_reciprocal_rank_and_the_paper_caps_at_one_over_k():
    # One relevant database item per query (a reverse dictionary): found at rank 1, 3, never.
    neighbor_labels = np.array([[0, 5, 6], [9, 8, 1], [7, 8, 9]])
    query_labels = np.array([0, 1, 2])
    database_labels = np.array([0, 1, 2, 5, 6, 7, 8, 9])
    out = retrieval_metrics(neighbor_labels, query_labels, database_labels, ks=[10])
    assert out["map_standard@10"] == pytest.approx((1 + 1 / 3 + 0) / 3, abs=1e-12)
    assert out["map@10"] == pytest.approx((1 + 1 / 3 + 0) / 3 / 10, abs=1e-12)
    # Perfect retrieval: standard 1, the paper's 1/k.
    perfect = retrieval_metrics(query_labels[:, None], query_labels, database_labels, ks=[10])
    assert perfect["map_standard@10"] == 1.0 and perfect["map@10"] == pytest.approx(0.1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_both_maps_equal_plain_loops(seed: int):
    _, order, database_labels, query_labels = random_problem(seed)
    neighbor_labels = database_labels[order]
    for k in (1, 3, 10, 25, 80, 100):
        out = retrieval_metrics(neighbor_labels, query_labels, database_labels, ks=[k])
        ref = np.array(loop_aps(neighbor_labels, query_labels, database_labels, k))
        assert out[f"map@{k}"] == pytest.approx(ref[:, 0].mean(), abs=1e-12), k
        assert out[f"map_standard@{k}"] == pytest.approx(ref[:, 1].mean(), abs=1e-12), k
        assert out[f"map@{k}"] <= out[f"map_standard@{k}"] <= 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_standard_map_against_torchmetrics(seed: int):
    scores, order, database_labels, query_labels = random_problem(seed)
    n_q, n_db = scores.shape
    relevant = database_labels[None, :] == query_labels[:, None]
    n_relevant = relevant.sum(axis=1)
    assert len(set(n_relevant.tolist())) >= 5, "the seed must vary the number of relevant items"
    neighbor_labels = database_labels[order]

    # Over the whole ranking (k = N_db) every relevant item is retrieved, so torchmetrics'
    # RetrievalMAP divides by the number of relevant items, as the standard mAP does; a query
    # with none counts 0 in both (torchmetrics' default empty_target_action="neg").
    metric = RetrievalMAP()
    metric.update(
        torch.from_numpy(scores.ravel()),
        torch.from_numpy(relevant.ravel()),
        indexes=torch.arange(n_q).repeat_interleave(n_db),
    )
    full = retrieval_metrics(neighbor_labels, query_labels, database_labels, ks=[n_db])
    assert full[f"map_standard@{n_db}"] == pytest.approx(float(metric.compute()), abs=1e-6)

    # At k < N_db, RetrievalMAP(top_k=k) divides the same sum of precisions by the relevant
    # items retrieved in the top k; rescaled to min(k, R) it is the standard AP@k.
    for k in (1, 3, 10, 25):
        per_query = []
        for q in range(n_q):
            preds, target = torch.from_numpy(scores[q]), torch.from_numpy(relevant[q])
            ap = float(retrieval_average_precision(preds, target, top_k=k))
            hits = round(float(retrieval_precision(preds, target, top_k=k)) * k)
            per_query.append(ap * hits / min(k, n_relevant[q]) if n_relevant[q] else 0.0)
        out = retrieval_metrics(neighbor_labels, query_labels, database_labels, ks=[k])
        assert out[f"map_standard@{k}"] == pytest.approx(np.mean(per_query), abs=1e-6), k
        # Where every query has one relevant item, RetrievalMAP(top_k=k) is the standard mAP.
        single = n_relevant == 1
        metric = RetrievalMAP(top_k=k)
        metric.update(
            torch.from_numpy(scores[single].ravel()),
            torch.from_numpy(relevant[single].ravel()),
            indexes=torch.arange(int(single.sum())).repeat_interleave(n_db),
        )
        out = retrieval_metrics(
            neighbor_labels[single], query_labels[single], database_labels, ks=[k]
        )
        assert out[f"map_standard@{k}"] == pytest.approx(float(metric.compute()), abs=1e-6)


def test_tie_aware_standard_map_matches_random_tie_orders():
    rng = np.random.default_rng(3)
    # Small integer vectors: many exact ties; classes of 2, 4 and 54 items, so that min(k, R)
    # differs from k for some queries.
    db = rng.integers(0, 3, size=(60, 2)).astype(np.float32)
    db_y = rng.permutation(np.repeat([0, 1, 2], [2, 4, 54]))
    q = rng.integers(1, 3, size=(9, 2)).astype(np.float32)
    q_y = np.array([0, 1, 2] * 3)
    ks = [1, 5, 10]
    out = tie_aware_retrieval(db, db_y, q, q_y, m=2, ks=ks)

    def unit(x):
        n = np.linalg.norm(x, axis=1, keepdims=True)
        return np.divide(x, n, out=np.zeros_like(x), where=n > 0)

    scores = unit(q.astype(np.float64)) @ unit(db.astype(np.float64)).T
    draws = 3000
    totals = dict.fromkeys((f"{name}@{k}" for name in ("map", "map_standard") for k in ks), 0.0)
    for _ in range(draws):
        order = np.lexsort((rng.random(scores.shape), -scores), axis=1)
        metrics = retrieval_metrics(db_y[order], q_y, db_y, ks)
        for key in totals:
            totals[key] += metrics[key] / draws
    for key, value in totals.items():
        assert out[key] == pytest.approx(value, abs=0.01), key
    assert out["map_standard@10"] > out["map@10"] + 0.02


def test_tie_aware_without_ties_equals_the_plain_metrics():
    rng = np.random.default_rng(4)
    db, q = rng.normal(size=(200, 4)), rng.normal(size=(20, 4))
    db_y, q_y = rng.choice(6, 200, p=[0.01, 0.02, 0.03, 0.04, 0.1, 0.8]), rng.integers(0, 6, 20)
    out = tie_aware_retrieval(db, db_y, q, q_y, m=4, ks=[10])
    unit_q = q / np.linalg.norm(q, axis=1, keepdims=True)
    unit_db = db / np.linalg.norm(db, axis=1, keepdims=True)
    plain = retrieval_metrics(db_y[np.argsort(-unit_q @ unit_db.T, axis=1)], q_y, db_y, [10])
    assert out["map_standard@10"] == pytest.approx(plain["map_standard@10"])
    assert out["map@10"] == pytest.approx(plain["map@10"])


def test_recall_ceiling():
    database_labels = np.array([0] * 20 + [1] * 4)
    # k = 10: class 0 can reach 10/20, class 1 all 4 of 4; class 2 has no item (left out).
    assert recall_ceiling(np.array([0, 1, 2]), database_labels, 10) == pytest.approx(0.75)
    assert recall_ceiling(np.array([0]), database_labels, 30) == 1.0
    assert np.isnan(recall_ceiling(np.array([2]), database_labels, 10))
    with pytest.raises(ValueError):
        recall_ceiling(np.array([0]), database_labels, 0)


def test_text_task_logs_and_prints_both_maps():
    from types import SimpleNamespace

    from mrl.eval.retrieval import evaluate_retrieval
    from mrl.text.module import TextContrastiveModule, per_dim_rows, retrieval_metric_names
    from mrl.text.trainer import format_rows

    # A reverse dictionary in miniature: one database word per label, queries near their word.
    rng = np.random.default_rng(5)
    database = rng.normal(size=(40, 8)).astype(np.float32)
    labels = np.arange(40)
    queries = database[:20] + 0.6 * rng.normal(size=(20, 8)).astype(np.float32)
    logged: dict = {}
    module = SimpleNamespace(
        eval_k=10, nesting=[4, 8], _eval_buffer={},
        retrieval_rows=lambda: evaluate_retrieval(
            database, labels, queries, labels[:20], dims=[4, 8], ks=(10,), knn_ks=(1,)
        ),
        log_dict=lambda values, **_: logged.update(values),
    )  # fmt: skip
    TextContrastiveModule._log_retrieval(module, "test")
    names = retrieval_metric_names(10)
    assert names == ("recall10", "map_standard10", "map10", "1nn")
    for m in (4, 8):
        # One relevant item per query: the standard mAP@10 is 10x the paper's, which is <= 0.1.
        assert logged[f"test/map_standard10@{m}"] == pytest.approx(10 * logged[f"test/map10@{m}"])
        assert logged[f"test/map10@{m}"] <= 0.1
    rows = per_dim_rows(logged, (4, 8), names)
    header = format_rows(rows, "title").splitlines()[1]
    assert "mAP@10 (standard) %" in header and "mAP@10 (paper, ÷k) %" in header
    assert header.index("mAP@10 (standard)") < header.index("mAP@10 (paper, ÷k)")
