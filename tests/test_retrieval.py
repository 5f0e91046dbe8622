"""Retrieval evaluation: search backends, metrics against brute-force loops, adaptive funnels."""

import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from mrl.eval.funnel import (
    FunnelIndex,
    default_funnel,
    evaluate_adaptive_retrieval,
    funnel_mflops,
    funnel_search,
)
from mrl.eval.metrics import knn_accuracy, neighbor_labels_of, retrieval_metrics
from mrl.eval.retrieval import evaluate_retrieval
from mrl.eval.search import build_index, normalize_prefix, search

SEEDS = [0, 1, 2]


# ----------------------------------------------------------------------------- references


def brute_force_metrics(neighbor_labels, query_labels, database_labels, k):
    """mAP@k, P@k, R@k with plain loops, straight from the definitions."""
    aps, precisions, recalls = [], [], []
    for q, label in enumerate(query_labels):
        hits, ap = 0, 0.0
        for i in range(1, k + 1):
            if i <= len(neighbor_labels[q]) and neighbor_labels[q][i - 1] == label:
                hits += 1
                ap += hits / i
        aps.append(ap / k)
        precisions.append(hits / k)
        n_relevant = sum(1 for other in database_labels if other == label)
        if n_relevant:
            recalls.append(hits / n_relevant)
    return sum(aps) / len(aps), sum(precisions) / len(precisions), sum(recalls) / len(recalls)


def brute_force_knn(neighbor_labels, query_labels, k):
    correct = 0
    for row, label in zip(neighbor_labels, query_labels):
        top = list(row[:k])
        counts = Counter(top)
        best = max(counts.values())
        winner = next(c for c in top if counts[c] == best)  # first-ranked among tied classes
        correct += winner == label
    return correct / len(query_labels)


def brute_force_search(database, queries, k):
    """Full score matrix, stable argsort: descending score, ties by ascending index."""
    scores = queries.astype(np.float64) @ database.astype(np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def unit_rows(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(rng, n_db, n_q, d, n_classes, noise=1.0):
    """Embeddings around class centres, classes of very unequal sizes."""
    weights = 2.0 ** np.arange(n_classes)
    p = weights / weights.sum()
    centres = rng.normal(size=(n_classes, d)).astype(np.float32)
    y_db = rng.choice(n_classes, size=n_db, p=p)
    y_q = rng.choice(n_classes, size=n_q, p=p)
    db = centres[y_db] + noise * rng.normal(size=(n_db, d)).astype(np.float32)
    q = centres[y_q] + noise * rng.normal(size=(n_q, d)).astype(np.float32)
    return db.astype(np.float32), y_db, q.astype(np.float32), y_q


# ----------------------------------------------------------------------------- metrics


def test_ap_hand_worked_example():
    # relevance [1, 0, 1, 0]: AP@4 = (1/4)(1/1 + 2/3), P@4 = 2/4; 3 relevant in the database.
    neighbor_labels = np.array([[7, 1, 7, 2]])
    out = retrieval_metrics(neighbor_labels, np.array([7]), np.array([7, 7, 7, 1, 2, 3]), ks=[4])
    assert out["map@4"] == pytest.approx((1 + 2 / 3) / 4, abs=1e-12)
    assert out["precision@4"] == pytest.approx(0.5, abs=1e-12)
    assert out["recall@4"] == pytest.approx(2 / 3, abs=1e-12)
    # At k=2 only the first hit counts, and P@k still divides by k.
    out = retrieval_metrics(neighbor_labels, np.array([7]), np.array([7, 7, 7, 1]), ks=[1, 2])
    assert out["map@1"] == 1.0 and out["map@2"] == 0.5 and out["precision@2"] == 0.5


@pytest.mark.parametrize("seed", SEEDS)
def test_metrics_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n_classes, n_q, k_have = 6, 40, 30
    # Unequal class sizes in the database; class 5 has no database item at all.
    database_labels = rng.choice(5, size=300, p=[0.5, 0.25, 0.15, 0.07, 0.03])
    query_labels = rng.integers(0, n_classes, n_q)
    # Neighbour labels that match the query's label with a query-dependent probability.
    match = rng.random((n_q, k_have)) < rng.random((n_q, 1))
    neighbor_labels = np.where(match, query_labels[:, None], rng.integers(0, n_classes, (n_q, 30)))
    assert (query_labels == 5).any(), "the seed must exercise a class absent from the database"

    ks = (1, 5, 10, 30, 45)  # 45 > the 30 neighbours available
    out = retrieval_metrics(neighbor_labels, query_labels, database_labels, ks)
    names = ("map", "map_standard", "precision", "recall")
    assert set(out) == {f"{m}@{k}" for m in names for k in ks}
    for k in ks:
        ref_map, ref_p, ref_r = brute_force_metrics(
            neighbor_labels.tolist(), query_labels.tolist(), database_labels.tolist(), k
        )
        assert out[f"map@{k}"] == pytest.approx(ref_map, abs=1e-12)
        assert out[f"precision@{k}"] == pytest.approx(ref_p, abs=1e-12)
        assert out[f"recall@{k}"] == pytest.approx(ref_r, abs=1e-12)
        assert 0 <= out[f"map@{k}"] <= out[f"precision@{k}"] <= 1


def test_recall_denominator_is_the_class_size():
    # Same hits, different class sizes: recall must follow the true count, not a constant.
    neighbor_labels = np.array([[0, 0, 1], [1, 1, 0]])
    database_labels = np.array([0, 0, 0, 0, 1, 1])  # 4 of class 0, 2 of class 1
    out = retrieval_metrics(neighbor_labels, np.array([0, 1]), database_labels, ks=[3])
    assert out["recall@3"] == pytest.approx((2 / 4 + 2 / 2) / 2)
    # A query of a class with no database item is left out of recall only.
    out = retrieval_metrics(neighbor_labels[:1], np.array([9]), database_labels, ks=[3])
    assert np.isnan(out["recall@3"]) and out["precision@3"] == 0.0


def test_string_labels_and_missing_neighbours():
    database_labels = np.array(["cat", "dog", "cat"])
    labels = neighbor_labels_of(np.array([[2, 0, -1]]), database_labels, np.array(["cat"]))
    assert labels[0, 2] is None
    out = retrieval_metrics(labels, np.array(["cat"]), database_labels, ks=[3])
    assert out["precision@3"] == pytest.approx(2 / 3)
    # Integer labels: the fill value matches no query, even label 0.
    labels = neighbor_labels_of(np.array([[1, -1]]), np.array([0, 0]), np.array([0]))
    assert labels.tolist()[0][0] == 0 and labels[0, 1] != 0


def test_knn_tie_goes_to_the_best_ranked_class():
    neighbor_labels = np.array([[3, 5, 5, 3], [5, 3, 3, 5], [1, 2, 3, 4], [1, 2, 2, 9]])
    # k=4: rows 0, 1 tie 2-2 (3 first in row 0, 5 first in row 1); row 2 ties four ways;
    # row 3 has a strict majority for 2.
    preds = [3, 5, 1, 2]
    for i, pred in enumerate(preds):
        assert knn_accuracy(neighbor_labels[i : i + 1], np.array([pred]), 4) == 1.0
        assert knn_accuracy(neighbor_labels[i : i + 1], np.array([pred + 100]), 4) == 0.0
    assert knn_accuracy(neighbor_labels, np.array(preds), 4) == 1.0
    # k=1 is the first neighbour; k=2 on [3, 5] is a tie won by 3.
    assert knn_accuracy(neighbor_labels, np.array([3, 5, 1, 1]), 1) == 1.0
    assert knn_accuracy(neighbor_labels, np.array([3, 5, 1, 1]), 2) == 1.0


@pytest.mark.parametrize("seed", SEEDS)
def test_knn_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    neighbor_labels = rng.integers(0, 4, (200, 12))
    query_labels = rng.integers(0, 4, 200)
    for k in (1, 2, 3, 5, 12, 20):
        ref = brute_force_knn(neighbor_labels.tolist(), query_labels.tolist(), k)
        assert knn_accuracy(neighbor_labels, query_labels, k) == pytest.approx(ref, abs=1e-12)


# ----------------------------------------------------------------------------- normalisation


def test_normalize_prefix_unit_rows_and_zero_rows():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 12)).astype(np.float32) * 100
    x[3] = 0.0
    x[7, :4] = 0.0  # zero prefix, non-zero tail
    out = normalize_prefix(x, 4, chunk_rows=8)
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.shape == (50, 4)
    norms = np.linalg.norm(out, axis=1)
    nonzero = np.ones(50, bool)
    nonzero[[3, 7]] = False
    np.testing.assert_allclose(norms[nonzero], 1.0, atol=1e-6)
    assert not out[3].any() and not out[7].any()
    with np.errstate(invalid="ignore"):
        ref = x[:, :4] / np.linalg.norm(x[:, :4].astype(np.float64), axis=1, keepdims=True)
    np.testing.assert_allclose(out[nonzero], ref[nonzero], rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="m=13"):
        normalize_prefix(x, 13)
    with pytest.raises(ValueError, match="m=0"):
        normalize_prefix(x, 0)


def test_normalize_prefix_on_memmap(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(101, 16)).astype(np.float32)
    path = tmp_path / "emb.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=x.shape)
    mm[:] = x
    mm.flush()
    del mm
    mm = np.load(path, mmap_mode="r")
    assert isinstance(mm, np.memmap)
    out = normalize_prefix(mm, 5, chunk_rows=10)
    assert type(out) is np.ndarray
    np.testing.assert_array_equal(out, normalize_prefix(x, 5))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)


# ----------------------------------------------------------------------------- search


@pytest.mark.parametrize("seed", SEEDS)
def test_backends_agree_with_brute_force(seed):
    rng = np.random.default_rng(seed)
    database, queries = unit_rows(rng, 300, 16), unit_rows(rng, 45, 16)
    ref_scores, ref_idx = brute_force_search(database, queries, 9)
    ranked = -np.sort(-(queries @ database.T), axis=1)[:, :10]
    assert (ranked[:, :-1] - ranked[:, 1:]).min() > 1e-6, "top scores must be distinct"
    for backend in ("exact", "numpy"):
        for batch_size in (7, 4096):
            scores, idx = search(database, queries, 9, backend=backend, batch_size=batch_size)
            assert idx.dtype == np.int64 and scores.shape == (45, 9)
            np.testing.assert_array_equal(idx, ref_idx)
            np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


def test_ties_do_not_crash_and_numpy_orders_them_by_index():
    rng = np.random.default_rng(0)
    # Small integer vectors: every dot product is exact, so duplicates tie exactly.
    base = rng.integers(-2, 3, (40, 4))
    database = np.concatenate([base, base[::-1], base[:10]]).astype(np.float32)
    queries = rng.integers(-2, 3, (30, 4)).astype(np.float32)
    exact = queries.astype(np.int64) @ database.astype(np.int64).T
    k = 15
    ref = np.argsort(-exact, axis=1, kind="stable")[:, :k]
    ref_scores = np.take_along_axis(exact, ref, axis=1)
    n = database.shape[0]
    ranked = -np.sort(-exact, axis=1)
    assert (ranked[:, k - 1] == ranked[:, k]).any(), "some tie must straddle the k-th place"
    scores, idx = search(database, queries, k, backend="numpy", batch_size=8)
    np.testing.assert_array_equal(idx, ref)
    np.testing.assert_array_equal(scores, ref_scores)
    for backend in ("exact", "hnsw"):
        scores, idx = search(database, queries, k, backend=backend)
        assert scores.shape == (30, k) and ((idx >= 0) & (idx < n)).all()
        if backend == "exact":
            np.testing.assert_array_equal(scores, ref_scores)
        # Within returned rows, equal scores come in ascending index order.
        same = scores[:, 1:] == scores[:, :-1]
        assert same.any() and (idx[:, 1:][same] > idx[:, :-1][same]).all()


def test_k_larger_than_database():
    rng = np.random.default_rng(3)
    database, queries = unit_rows(rng, 5, 8), unit_rows(rng, 6, 8)
    database_labels, query_labels = np.array([0, 1, 1, 2, 0]), np.array([0, 1, 2, 1, 0, 3])
    for backend in ("exact", "numpy", "hnsw"):
        scores, idx = search(database, queries, 10, backend=backend)
        assert idx.shape == scores.shape == (6, 5)
        assert sorted(idx[0].tolist()) == list(range(5))
        labels = neighbor_labels_of(idx, database_labels, query_labels)
        out = retrieval_metrics(labels, query_labels, database_labels, ks=(3, 10))
        for k in (3, 10):
            ref = brute_force_metrics(labels.tolist(), query_labels.tolist(), database_labels, k)
            assert (out[f"map@{k}"], out[f"precision@{k}"]) == pytest.approx(ref[:2], abs=1e-12)
        # Every database item is retrieved, so recall@10 is 1 for the queries it is defined for.
        assert out["recall@10"] == pytest.approx(1.0)
        assert knn_accuracy(labels, query_labels, 20) == brute_force_knn(
            labels.tolist(), query_labels.tolist(), 20
        )


def test_hnsw_recall_of_true_top10():
    rng = np.random.default_rng(0)
    database, queries = unit_rows(rng, 3000, 32), unit_rows(rng, 100, 32)
    _, true_idx = search(database, queries, 10, backend="exact")
    _, idx = search(database, queries, 10, backend="hnsw", hnsw_m=16, ef_search=64)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx.tolist(), true_idx.tolist())])
    assert recall > 0.9


def test_unknown_backend_and_reused_index():
    database = unit_rows(np.random.default_rng(0), 20, 4)
    with pytest.raises(ValueError, match=r"'annoy'.*exact.*hnsw.*numpy"):
        search(database, database, 3, backend="annoy")
    index = build_index(database, backend="exact")
    for queries in (database[:5], database[10:]):
        _, idx = index.search(queries, 1)
        start = 0 if len(queries) == 5 else 10
        np.testing.assert_array_equal(idx[:, 0], np.arange(start, start + len(queries)))


def test_numpy_fallback_without_faiss_and_gpu_request(monkeypatch):
    import mrl.eval.search as search_module

    rng = np.random.default_rng(0)
    database, queries = unit_rows(rng, 50, 8), unit_rows(rng, 5, 8)
    expected = search(database, queries, 4, backend="numpy")
    if search_module._faiss().get_num_gpus() == 0:
        with pytest.raises(RuntimeError, match="no GPU"):
            search(database, queries, 4, use_gpu=True)
    monkeypatch.setattr(search_module, "_faiss", lambda: None)
    with pytest.warns(UserWarning, match="falls back to exact NumPy"):
        index = build_index(database, backend="hnsw")
    assert index.backend == "numpy"
    for got, want in zip(index.search(queries, 4), expected):
        np.testing.assert_array_equal(got, want)


def _import_with_debug_logging(body: str) -> str:
    """What a fresh interpreter logging everything at DEBUG prints while running `body`."""
    code = "import logging, sys\nlogging.basicConfig(level=logging.DEBUG, stream=sys.stdout)\n"
    done = subprocess.run(
        [sys.executable, "-c", code + body], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_faiss_import_keeps_the_loader_fallback_quiet():
    pytest.importorskip("faiss")
    # A bare import logs the loader's attempts (on CPUs with AVX512 or AVX2, the failures of
    # the builds this wheel lacks): the control shows the check below can see them.
    assert "faiss.loader" in _import_with_debug_logging("import faiss")
    out = _import_with_debug_logging(
        "from mrl.eval.search import import_faiss\nassert import_faiss() is not None\n"
        "import faiss\nprint(faiss.IndexFlatIP(4).d)"
    )
    assert "faiss.loader" not in out and "Could not load library" not in out
    assert out.strip().endswith("4")


def test_a_failed_faiss_import_still_returns_none_and_shows_the_loader_log():
    pytest.importorskip("faiss")
    # Blocking a module FAISS imports after its loader makes the import fail with ImportError.
    out = _import_with_debug_logging(
        "sys.modules['faiss.class_wrappers'] = None\n"
        "from mrl.eval.search import import_faiss\nprint('faiss is', import_faiss())"
    )
    assert "faiss is None" in out
    assert "faiss.loader" in out  # the held-back records explain the failure


def test_evaluate_retrieval_rows_match_independent_search():
    rng = np.random.default_rng(0)
    db, y_db, q, y_q = clustered(rng, 400, 60, 16, 5)
    ks, knn_ks = (5, 10), (1, 3)
    rows = evaluate_retrieval(db, y_db, q, y_q, dims=[4, 16], ks=ks, knn_ks=knn_ks)
    table = {(r["dim"], r["metric"]): r["value"] for r in rows}
    expected = {"map@5", "precision@5", "recall@5", "map@10", "precision@10", "recall@10"}
    expected |= {"map_standard@5", "map_standard@10"}
    expected |= {"1nn", "knn@3", "normalize_seconds", "index_seconds", "search_seconds"}
    expected |= {"zero_prefix_fraction"}
    assert {m for d, m in table if d == 16} == expected
    numpy_rows = evaluate_retrieval(db, y_db, q, y_q, dims=[4, 16], ks=ks, backend="numpy")
    for m in (4, 16):
        _, idx = brute_force_search(normalize_prefix(db, m), normalize_prefix(q, m), 10)
        labels = y_db[idx]
        for k in ks:
            ref = brute_force_metrics(labels.tolist(), y_q.tolist(), y_db.tolist(), k)
            got = (table[m, f"map@{k}"], table[m, f"precision@{k}"], table[m, f"recall@{k}"])
            assert got == pytest.approx(ref, abs=1e-12)
        assert table[m, "1nn"] == brute_force_knn(labels.tolist(), y_q.tolist(), 1)
        assert table[m, "knn@3"] == brute_force_knn(labels.tolist(), y_q.tolist(), 3)
        numpy_table = {(r["dim"], r["metric"]): r["value"] for r in numpy_rows}
        assert numpy_table[m, "map@10"] == table[m, "map@10"]
    assert table[16, "map@10"] > table[4, "map@10"]


# ----------------------------------------------------------------------------- funnels


@pytest.mark.parametrize("backend", ["exact", "numpy"])
def test_funnel_covering_the_database_equals_exact_search(backend):
    rng = np.random.default_rng(0)
    db = rng.normal(size=(120, 32)).astype(np.float32)
    q = rng.normal(size=(30, 32)).astype(np.float32)
    n = len(db)
    idx, timing = funnel_search(db, q, dims=[4, 8, 32], shortlists=[n, n, n], backend=backend)
    _, ref = brute_force_search(normalize_prefix(db, 32), normalize_prefix(q, 32), n)
    np.testing.assert_array_equal(idx, ref)
    assert len(timing["step_seconds"]) == 3
    assert timing["search_seconds"] == pytest.approx(sum(timing["step_seconds"]))
    assert timing["prepare_seconds"] > 0 and timing["index_seconds"] >= 0


def test_funnel_orders_ties_by_index():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(30, 16)).astype(np.float32)
    copy_of = np.concatenate([np.arange(30), np.arange(30)[::-1], np.arange(5)])
    db, q = base[copy_of], rng.normal(size=(12, 16)).astype(np.float32)
    # Reference scores per distinct row, so that copies tie exactly whatever the arithmetic.
    base_scores = normalize_prefix(q, 16).astype(np.float64) @ normalize_prefix(base, 16).T
    ranked = -np.sort(-base_scores, axis=1)
    assert (ranked[:, :-1] - ranked[:, 1:]).min() > 1e-6, "distinct rows must not tie"
    ref = np.argsort(-base_scores[:, copy_of], axis=1, kind="stable")[:, :20]
    idx, _ = funnel_search(db, q, dims=[4, 16], shortlists=[len(db), 20], backend="numpy")
    np.testing.assert_array_equal(idx, ref)
    assert (copy_of[idx[:, 1:]] == copy_of[idx[:, :-1]]).any(), "copies must meet in the top 20"


@pytest.mark.parametrize("seed", SEEDS)
def test_funnel_matches_step_by_step_reference(seed):
    rng = np.random.default_rng(seed)
    db = rng.normal(size=(250, 24)).astype(np.float32)
    q = rng.normal(size=(20, 24)).astype(np.float32)
    dims, shortlists = [3, 6, 24], [40, 15, 5]
    idx, _ = funnel_search(db, q, dims, shortlists, backend="numpy", batch_size=6)
    for row, query in zip(idx, q):
        candidates = np.arange(len(db))
        for m, keep in zip(dims, shortlists):
            d, qq = db[candidates, :m].astype(np.float64), query[:m].astype(np.float64)
            scores = (d / np.linalg.norm(d, axis=1, keepdims=True)) @ (qq / np.linalg.norm(qq))
            candidates = candidates[np.argsort(-scores, kind="stable")[:keep]]
        np.testing.assert_array_equal(row, candidates)


def test_bad_cascades_raise():
    db = np.ones((10, 16), np.float32)
    bad = [
        ([4, 8], [5], "as many shortlists as dims"),
        ([8, 8], [5, 3], "8 follows 8"),
        ([8, 4], [5, 3], "4 follows 8"),
        ([4, 8], [3, 5], "5 follows 3"),
        ([4, 8], [5, 0], "entry 0"),
        ([4, 32], [5, 3], "32 exceeds"),
        ([], [], "at least one"),
    ]
    for dims, shortlists, message in bad:
        with pytest.raises(ValueError, match=message):
            funnel_search(db, db, dims, shortlists)
    with pytest.raises(ValueError, match="5 follows 3"):
        funnel_mflops(100, [4, 8], [3, 5])


def test_funnel_mflops_hand_examples():
    n_db = 1_280_000
    paper = ([16, 32, 64, 128, 2048], [200, 100, 50, 25, 10])
    # 1.28M*16 + 200*32 + 100*64 + 50*128 + 25*2048 = 20,480,000 + 70,400 multiply-adds.
    assert funnel_mflops(n_db, *paper) == pytest.approx(20.5504)
    assert funnel_mflops(n_db, [2048], [10]) == pytest.approx(2621.44)
    assert funnel_mflops(n_db, [16, 2048], [200, 10]) == pytest.approx(20.48 + 0.4096)
    # A shortlist above N_db costs N_db candidates.
    assert funnel_mflops(50, [4, 8], [200, 10]) == pytest.approx((50 * 4 + 50 * 8) / 1e6)


def test_default_funnel():
    paper_nesting = [8, 16, 32, 64, 128, 256, 512, 1024, 2048]
    assert default_funnel(paper_nesting, 1_281_167) == (
        [16, 32, 64, 128, 2048],
        [200, 100, 50, 25, 10],
    )
    assert default_funnel([8, 16, 32, 64, 128, 256], 10**6) == (
        [8, 16, 32, 64, 256],
        [200, 100, 50, 25, 10],
    )
    assert default_funnel([2, 4, 8, 16, 32], 60) == ([2, 4, 8, 16, 32], [60, 30, 15, 10, 10])
    assert default_funnel([64, 256], 5) == ([64, 256], [5, 5])
    assert default_funnel([256], 1000) == ([256], [10])


def test_evaluate_adaptive_retrieval_rows():
    rng = np.random.default_rng(0)
    db, y_db, q, y_q = clustered(rng, 500, 40, 32, 6)
    nesting = [4, 8, 16, 32]
    rows = evaluate_adaptive_retrieval(
        db, y_db, q, y_q, nesting, shortlist_k=len(db), ks=(10,), repeats=1, all_pairs=True
    )
    methods = [(r["method"], r["dims"], r["shortlists"]) for r in rows]
    assert methods[0] == ("exact", "32", "10")
    adaptive = [m for m in methods if m[0] == "adaptive"]
    assert [m[1] for m in adaptive] == ["4>8", "4>16", "4>32", "8>16", "8>32", "16>32"]
    assert adaptive[0][2] == "500>10"
    assert methods[-1] == ("funnel", "4>8>16>32", "200>100>50>10")
    exact = rows[0]
    assert exact["flops_ratio_vs_exact"] == 1.0 and exact["speedup_vs_exact"] == 1.0
    for row in rows:
        dims = [int(d) for d in row["dims"].split(">")]
        shortlists = [int(s) for s in row["shortlists"].split(">")]
        assert row["mflops_per_query"] == pytest.approx(funnel_mflops(500, dims, shortlists))
        assert row["flops_ratio_vs_exact"] == pytest.approx(
            exact["mflops_per_query"] / row["mflops_per_query"]
        )
        assert row["ms_per_query"] > 0 and row["speedup_vs_exact"] > 0
        assert 0 <= row["map@10"] <= row["precision@10"] <= 1
        # A shortlist covering the database re-ranked at the largest dim is exact search.
        if row["method"] == "adaptive" and dims[-1] == 32:
            assert (row["map@10"], row["precision@10"]) == (exact["map@10"], exact["precision@10"])
    with pytest.raises(ValueError, match="shortlist_k=5"):
        evaluate_adaptive_retrieval(db, y_db, q, y_q, nesting, shortlist_k=5, repeats=1)


def test_funnel_index_reuse_and_prefix_cache():
    rng = np.random.default_rng(0)
    db, q = (
        rng.normal(size=(200, 16)).astype(np.float32),
        rng.normal(size=(10, 16)).astype(np.float32),
    )
    cache = {4: normalize_prefix(db, 4)}
    norms: dict = {}
    index = FunnelIndex(db, [4, 16], prefix_cache=cache, norms_cache=norms)
    # The first stage is built from the cached prefix; the later dims' norms land in norms.
    assert sorted(norms) == [16] and index.norms[16] is norms[16]
    np.testing.assert_allclose(norms[16], np.linalg.norm(db, axis=1), rtol=1e-6)
    a, scores, steps = index.search(q, [50, 5])
    b, _, _ = index.search(index.query_prefixes(q), [50, 5])
    np.testing.assert_array_equal(a, b)
    assert a.shape == (10, 5) and len(steps) == 2
    assert (np.diff(scores, axis=1) <= 0).all()
