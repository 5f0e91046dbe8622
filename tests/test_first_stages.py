"""First stages of adaptive retrieval (exact, HNSW, IVF on a coarse prefix, binary codes), their
index cache, and the database of augmented copies."""

import json
import os

import numpy as np
import pytest
import torch

from mrl.data.copies import AugmentedCopies, shift_image
from mrl.eval.funnel import FunnelIndex, evaluate_adaptive_retrieval, overlap_recall
from mrl.eval.index_cache import cached_searcher, embeddings_fingerprint
from mrl.eval.quantize import binary_codes
from mrl.eval.search import Searcher, normalize_prefix, prefix_norms

faiss = pytest.importorskip("faiss")


def clustered(seed=0, n_db=600, n_q=40, d=32, classes=6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, d))
    y_db, y_q = rng.integers(0, classes, n_db), rng.integers(0, classes, n_q)
    db = (centres[y_db] + rng.normal(size=(n_db, d))).astype(np.float32)
    q = (centres[y_q] + rng.normal(size=(n_q, d))).astype(np.float32)
    return db, y_db, q, y_q


def exact_neighbours(db, q, m, k):
    scores = (
        normalize_prefix(q, m).astype(np.float64) @ normalize_prefix(db, m).astype(np.float64).T
    )
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize(
    "backend, options",
    [
        ("exact", {}),
        ("hnsw", {"ef_search": 600, "hnsw_m": 16}),
        ("ivf", {"nlist": 8, "nprobe": 8, "coarse_dim": 4}),
        ("numpy", {}),
    ],
)
def test_each_first_stage_equals_exact_search_when_it_covers_the_database(backend, options):
    db, _, q, _ = clustered()
    m = 16
    searcher = Searcher(db.astype(np.float16), backend=backend, dim=m, use_gpu=False, **options)
    _, idx = searcher.search(normalize_prefix(q, m), 10)
    ref = exact_neighbours(db.astype(np.float16).astype(np.float32), q, m, 10)
    assert overlap_recall(idx, ref) == 1.0


def test_ivf_routes_by_the_coarse_prefix_only():
    db, _, q, _ = clustered(1)
    index = Searcher(db, backend="ivf", dim=16, nlist=10, nprobe=1, coarse_dim=4, use_gpu=False)
    # The quantizer holds zero-padded centroids: only the first 4 dims can move a row's list.
    centroids = faiss.rev_swig_ptr(index._quantizer.get_xb(), 10 * 16).reshape(10, 16)
    assert np.all(centroids[:, 4:] == 0) and np.any(centroids[:, :4] != 0)
    # Changing dims 4..15 of the query leaves the probed list, hence the candidates' list, alone.
    q16 = normalize_prefix(q, 16)
    changed = q16.copy()
    changed[:, 4:] *= -1
    _, lists_a = index._quantizer.search(q16, 1)
    _, lists_b = index._quantizer.search(changed, 1)
    np.testing.assert_array_equal(lists_a, lists_b)


def test_binary_first_stage_scores_are_minus_hamming_and_rescoring_recovers_exact():
    db, y_db, q, y_q = clustered(2)
    m = 32
    searcher = Searcher(db, backend="binary", dim=m, use_gpu=False)
    scores, idx = searcher.search(normalize_prefix(q, m), 5)
    bits_db = np.unpackbits(binary_codes(db[:, :m]), axis=1)
    bits_q = np.unpackbits(binary_codes(q[:, :m]), axis=1)
    hamming = (bits_q[:, None, :] != bits_db[None, :, :]).sum(axis=2)
    np.testing.assert_array_equal(-scores, np.take_along_axis(hamming, idx, axis=1))
    np.testing.assert_array_equal(-scores[:, 0], hamming.min(axis=1))
    # With a shortlist of the whole database, re-ranking at the full dim is exact search.
    funnel = FunnelIndex(db, [16, 32], backend="binary", use_gpu=False)
    full, _, _ = funnel.search(q, [len(db), 10])
    assert overlap_recall(full, exact_neighbours(db, q, 32, 10)) == 1.0


@pytest.mark.parametrize("first_stage", ["exact", "hnsw", "ivf", "binary", "numpy"])
def test_cascades_with_every_first_stage(first_stage):
    db, y_db, q, y_q = clustered(3, n_db=400)
    options = {"ivf": {"nlist": 4, "nprobe": 4, "coarse_dim": 8}}.get(first_stage, {})
    rows = evaluate_adaptive_retrieval(
        db, y_db, q, y_q, [8, 16, 32], shortlist_k=400, first_stage=first_stage, repeats=1,
        use_gpu=False, **options,
    )  # fmt: skip
    by = {(r["method"], r["dims"]): r for r in rows}
    assert by["exact", "32"]["first_stage"] == "exact"
    # A shortlist of the whole database: every cascade ends exactly where exact search does.
    for key, row in by.items():
        if key[0] == "adaptive":
            assert row["first_stage"] == first_stage
            assert row["recall_vs_exact@10"] == 1.0, key
            assert row["map@10"] == pytest.approx(by["exact", "32"]["map@10"])
        assert row["index_bytes"] > 0


def test_rerank_from_float16_rows_matches_normalised_prefixes():
    db, _, q, _ = clustered(4)
    half = db.astype(np.float16)
    norms = prefix_norms(half, [8, 32])
    np.testing.assert_allclose(
        norms[32], np.linalg.norm(half.astype(np.float64), axis=1), rtol=1e-6
    )
    np.testing.assert_allclose(norms[8], np.linalg.norm(half[:, :8].astype(np.float64), axis=1),
                               rtol=1e-6)  # fmt: skip
    funnel = FunnelIndex(half, [8, 32], backend="numpy")
    idx, _, _ = funnel.search(q, [len(db), 10])
    assert overlap_recall(idx, exact_neighbours(half.astype(np.float32), q, 32, 10)) == 1.0


def write_split(path, x, y):
    path.mkdir(parents=True)
    np.save(path / "features.npy", x)
    np.save(path / "labels.npy", y)
    (path / "meta.json").write_text(json.dumps({"split": path.name}))


def test_index_cache_reuses_and_invalidates(tmp_path):
    db, y_db, q, _ = clustered(5)
    split = tmp_path / "database"
    write_split(split, db, y_db)
    cache = split / "indexes"
    options = {"dim": 16, "hnsw_m": 8, "ef_search": 64, "use_gpu": False}
    a, reused_a = cached_searcher(db, "hnsw", cache, embeddings_fingerprint(split), **options)
    b, reused_b = cached_searcher(db, "hnsw", cache, embeddings_fingerprint(split), **options)
    assert (reused_a, reused_b) == (False, True)
    assert len(list(cache.glob("*.faiss"))) == 1 and len(list(cache.glob("*.json"))) == 1
    qn = normalize_prefix(q, 16)
    for x, y in zip(a.search(qn, 10), b.search(qn, 10)):
        np.testing.assert_array_equal(x, y)
    # A search option is not part of the key; an index-shaping option is.
    _, reused = cached_searcher(db, "hnsw", cache, embeddings_fingerprint(split),
                                **{**options, "ef_search": 200})  # fmt: skip
    assert reused
    _, reused = cached_searcher(db, "hnsw", cache, embeddings_fingerprint(split),
                                **{**options, "hnsw_m": 16})  # fmt: skip
    assert not reused
    # Re-encoding the embeddings (new contents, new mtime) invalidates every index.
    np.save(split / "features.npy", db[::-1].copy())
    stat = (split / "features.npy").stat()
    os.utime(split / "features.npy", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    _, reused = cached_searcher(db[::-1], "hnsw", cache, embeddings_fingerprint(split), **options)
    assert not reused
    # A half-written key is never trusted.
    for key in cache.glob("*.json"):
        key.write_text("{")
    _, reused = cached_searcher(db[::-1], "hnsw", cache, embeddings_fingerprint(split), **options)
    assert not reused


class Plain(torch.utils.data.Dataset):
    def __init__(self, n=5):
        self.x = torch.arange(n * 36, dtype=torch.float32).reshape(n, 1, 6, 6)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], torch.tensor(i % 2)


def test_augmented_copies_are_seeded_and_keep_the_originals():
    base = Plain()
    data = AugmentedCopies(base, copies=3, seed=7, shift=2, hflip=True, fill=-1.0)
    assert len(data) == 20
    for i in range(5):
        torch.testing.assert_close(data[i][0], base[i][0])  # copy 0: the image itself
    again = AugmentedCopies(base, copies=3, seed=7, shift=2, hflip=True, fill=-1.0)
    other = AugmentedCopies(base, copies=3, seed=8, shift=2, hflip=True, fill=-1.0)
    same = all(torch.equal(data[i][0], again[i][0]) for i in range(20))
    differs = any(not torch.equal(data[i][0], other[i][0]) for i in range(5, 20))
    assert same and differs
    # Labels follow the base image; reading in reverse order gives the same items.
    assert [int(data[i][1]) for i in range(20)] == [i % 5 % 2 for i in range(20)]
    assert all(torch.equal(data[i][0], data[i - 20][0]) for i in range(19, -1, -1))


def test_shift_image_by_hand():
    x = torch.arange(9, dtype=torch.float32).reshape(1, 3, 3)
    out = shift_image(x, 1, -1, torch.tensor([-1.0]).reshape(1, 1, 1))
    expected = torch.tensor([[[-1, -1, -1], [1, 2, -1], [4, 5, -1]]], dtype=torch.float32)
    torch.testing.assert_close(out, expected)


@pytest.mark.skipif(
    not hasattr(faiss, "get_num_gpus") or faiss.get_num_gpus() == 0,
    reason="FAISS sees no GPU (faiss-cpu, or no CUDA device): the GPU path is checked where one is",
)
@pytest.mark.parametrize("backend", ["exact", "ivf"])
def test_gpu_index_equals_cpu_index(backend):
    db, _, q, _ = clustered(6, n_db=2000)
    options = {"nlist": 16, "nprobe": 16} if backend == "ivf" else {}
    qn = normalize_prefix(q, 32)
    cpu = Searcher(db, backend=backend, dim=32, use_gpu=False, **options).search(qn, 10)
    gpu_searcher = Searcher(db, backend=backend, dim=32, use_gpu=True, **options)
    assert gpu_searcher.on_gpu
    gpu = gpu_searcher.search(qn, 10)
    assert overlap_recall(gpu[1], cpu[1]) >= 0.99
    np.testing.assert_allclose(gpu[0], cpu[0], atol=1e-4)
