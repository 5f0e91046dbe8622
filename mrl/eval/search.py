"""Nearest-neighbour search over embedding prefixes: row-normalised prefixes and k-NN by inner
product with FAISS (exact `IndexFlatIP` or `IndexHNSWFlat`) or a batched NumPy fallback.

Inputs to the searchers are already L2-normalised float32 rows, so inner product is cosine
similarity. Results are `(scores, indices)` of shape `(N_q, min(k, N_db))`, each row sorted by
descending score; among exactly equal scores the smaller database index comes first. The NumPy
backend guarantees that order for the whole result (which items are kept at the k-th place
included); the FAISS backends guarantee it within the rows they return.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

BACKENDS = ("exact", "hnsw", "numpy")

# FAISS GPU indexes answer at most this many neighbours per query.
_GPU_MAX_K = 2048
# Largest float32 score block (queries x database) the NumPy backend computes at once.
_NUMPY_BLOCK_BYTES = 256 << 20
# Largest full-width chunk `normalize_prefix` reads at once.
_CHUNK_BYTES = 64 << 20


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _check_matrix(x: np.ndarray, name: str) -> None:
    if getattr(x, "ndim", None) != 2:
        raise ValueError(f"{name} must be a 2-D array (rows x dims), got shape {np.shape(x)}")


def normalize_prefix(
    x: np.ndarray, m: int, dtype: Any = np.float32, chunk_rows: int | None = None
) -> np.ndarray:
    """A contiguous copy of `x[:, :m]` with every row scaled to unit L2 norm.

    Rows whose prefix has zero norm stay zero. `x` may be an `np.memmap`: it is read in chunks of
    `chunk_rows` rows (default: about 64 MiB of full-width rows), so apart from the output only one
    chunk is held in memory at a time. Norms are computed in float64 so that large or tiny values
    neither overflow nor underflow.
    """
    _check_matrix(x, "x")
    n, d = x.shape
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 1 <= m <= d:
        raise ValueError(f"prefix size m={m!r} must be an integer in [1, {d}] (x has {d} dims)")
    m = int(m)
    if chunk_rows is None:
        chunk_rows = max(1, _CHUNK_BYTES // max(1, d * x.dtype.itemsize))
    out = np.empty((n, m), dtype=dtype)
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        block = np.asarray(x[start:stop, :m], dtype=np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))[:, None]
        # A zero-norm row is all zeros already, so leaving it untouched keeps it zero.
        np.divide(block, norms, out=block, where=norms > 0)
        out[start:stop] = block
    return out


def _topk_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each row of a (b, n) score block, ordered by (descending score, ascending index)."""
    b, n = scores.shape
    if k >= n:
        idx = np.broadcast_to(np.arange(n, dtype=np.int64), (b, n)).copy()
    else:
        idx = np.argpartition(scores, n - k, axis=1)[:, n - k :].astype(np.int64)
    top = np.take_along_axis(scores, idx, axis=1)
    if k < n:
        # argpartition picks arbitrary members of a tie straddling the k-th place; those rows
        # (rare) are redone so that the lowest database indices among the tied scores are kept.
        thr = top.min(axis=1)
        kept_ties = (top == thr[:, None]).sum(axis=1)
        all_ties = (scores == thr[:, None]).sum(axis=1)
        for r in np.flatnonzero(all_ties > kept_ties):
            above = idx[r][top[r] > thr[r]]
            tied = np.flatnonzero(scores[r] == thr[r])[: k - above.size]
            idx[r] = np.concatenate([above, tied])
            top[r] = scores[r, idx[r]]
    return _sort_rows(top, idx)


def _sort_rows(scores: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows reordered by descending score, ties by ascending index."""
    order = np.lexsort((idx, -scores), axis=-1)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(idx, order, axis=1)


def _resolve_gpu(use_gpu: bool | str, faiss: Any) -> bool:
    if isinstance(use_gpu, str):
        if use_gpu != "auto":
            raise ValueError(f"use_gpu must be True, False or 'auto', got {use_gpu!r}")
        return faiss is not None and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
    if use_gpu and (
        faiss is None or not hasattr(faiss, "get_num_gpus") or faiss.get_num_gpus() == 0
    ):
        raise RuntimeError("use_gpu=True but FAISS sees no GPU (install faiss-gpu, or use 'auto')")
    return bool(use_gpu)


class Searcher:
    """A k-NN index over normalised database rows, built once and searched many times.

    `backend` is "exact" (FAISS `IndexFlatIP`), "hnsw" (FAISS `IndexHNSWFlat` with inner-product
    metric, `hnsw_m` links per node, `ef_construction` / `ef_search` beam widths; approximate)
    or "numpy" (exact, pure NumPy, deterministic tie order). Without FAISS, "exact" and "hnsw"
    fall back to "numpy" with a warning. With `use_gpu="auto"` the exact index moves to GPU 0
    when FAISS has GPUs; HNSW always runs on the CPU (FAISS has no GPU HNSW). FAISS copies the
    database into the index; the NumPy backend keeps a reference to it (a memmap works).
    """

    def __init__(
        self,
        database: np.ndarray,
        backend: str = "exact",
        hnsw_m: int = 32,
        ef_search: int = 128,
        ef_construction: int = 80,
        use_gpu: bool | str = "auto",
        batch_size: int = 4096,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown search backend {backend!r}; choose one of {list(BACKENDS)}")
        _check_matrix(database, "database")
        if database.shape[0] == 0:
            raise ValueError("database is empty: nothing to search")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        faiss = _faiss()
        if faiss is None and backend != "numpy":
            warnings.warn(
                f"faiss is not installed: backend {backend!r} falls back to exact NumPy search",
                stacklevel=2,
            )
            backend = "numpy"
        self.backend = backend
        self.batch_size = int(batch_size)
        self.ef_search = int(ef_search)
        self.ntotal, self.dim = database.shape
        self.on_gpu = False
        if backend == "numpy":
            # No copy for contiguous float32 (a memmap stays on disk); others convert once here.
            self._database = np.ascontiguousarray(database, dtype=np.float32)
            return
        database = np.ascontiguousarray(database, dtype=np.float32)
        if backend == "exact":
            index = faiss.IndexFlatIP(self.dim)
        else:
            index = faiss.IndexHNSWFlat(self.dim, int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = int(ef_construction)
        index.add(database)
        self._cpu_index = index
        self._index = index
        if backend == "exact" and _resolve_gpu(use_gpu, faiss):
            self._gpu_resources = faiss.StandardGpuResources()
            self._index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, index)
            self.on_gpu = True

    def search(
        self,
        queries: np.ndarray,
        k: int,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """`(scores, indices)` of the `min(k, N_db)` best database rows for each query row.

        Queries go through in batches of `batch_size` (default: the searcher's); the NumPy
        backend further splits a batch so that its score block stays under 256 MiB. HNSW may
        leave a slot it could not fill as index -1 (score -inf-like); with `ef_search >= k`, which
        is enforced, that does not happen on a connected graph.
        """
        _check_matrix(queries, "queries")
        if queries.shape[1] != self.dim:
            raise ValueError(f"queries have {queries.shape[1]} dims, the index has {self.dim}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        k_out = min(int(k), self.ntotal)
        bs = self.batch_size if batch_size is None else int(batch_size)
        if self.backend == "numpy":
            bs = max(1, min(bs, _NUMPY_BLOCK_BYTES // (4 * self.ntotal)))
        n_q = queries.shape[0]
        scores = np.empty((n_q, k_out), dtype=np.float32)
        indices = np.empty((n_q, k_out), dtype=np.int64)
        starts = range(0, n_q, bs)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"search ({self.backend})", unit="batch")
        index = self._index_for(k_out) if self.backend != "numpy" else None
        if self.backend == "hnsw":
            index.hnsw.efSearch = max(self.ef_search, k_out)
        for start in starts:
            stop = min(n_q, start + bs)
            q = np.ascontiguousarray(queries[start:stop], dtype=np.float32)
            if index is None:
                s, i = _topk_rows(q @ self._database.T, k_out)
            else:
                s, i = index.search(q, k_out)
                s, i = _sort_rows(s, i.astype(np.int64, copy=False))
            scores[start:stop], indices[start:stop] = s, i
        return scores, indices

    def _index_for(self, k: int) -> Any:
        # FAISS GPU indexes refuse k above 2048; the CPU copy answers those.
        return self._cpu_index if self.on_gpu and k > _GPU_MAX_K else self._index


def build_index(
    database: np.ndarray,
    backend: str = "exact",
    hnsw_m: int = 32,
    ef_search: int = 128,
    ef_construction: int = 80,
    use_gpu: bool | str = "auto",
    batch_size: int = 4096,
) -> Searcher:
    """Build a `Searcher` over normalised float32 `database` rows, to search several query sets."""
    return Searcher(
        database,
        backend=backend,
        hnsw_m=hnsw_m,
        ef_search=ef_search,
        ef_construction=ef_construction,
        use_gpu=use_gpu,
        batch_size=batch_size,
    )


def search(
    database: np.ndarray,
    queries: np.ndarray,
    k: int,
    backend: str = "exact",
    batch_size: int = 4096,
    hnsw_m: int = 32,
    ef_search: int = 128,
    use_gpu: bool | str = "auto",
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """k-NN of normalised float32 `queries` among normalised float32 `database` rows by inner
    product: `(scores, indices)`, each `(N_q, min(k, N_db))`, rows by descending score (ties:
    ascending database index), indices int64. See `Searcher` for the backends."""
    searcher = build_index(
        database,
        backend=backend,
        hnsw_m=hnsw_m,
        ef_search=ef_search,
        use_gpu=use_gpu,
        batch_size=batch_size,
    )
    return searcher.search(queries, k, progress=progress)
