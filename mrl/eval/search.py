"""Nearest-neighbour search over embedding prefixes: row-normalised prefixes and k-NN by inner
product with FAISS (exact `IndexFlatIP`, graph `IndexHNSWFlat`, inverted lists `IndexIVFFlat`
whose coarse quantizer sees only a shorter prefix, Hamming search over sign bits
`IndexBinaryFlat`) or a batched NumPy fallback.

Inputs to the searchers are already L2-normalised float32 rows, so inner product is cosine
similarity. Results are `(scores, indices)` of shape `(N_q, min(k, N_db))`, each row sorted by
descending score; among exactly equal scores the smaller database index comes first. The NumPy
backend guarantees that order for the whole result (which items are kept at the k-th place
included); the FAISS backends guarantee it within the rows they return.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mrl.core.validate import is_positive_int, positive_int
from mrl.eval.quantize import binary_codes
from mrl.extras import import_faiss

BACKENDS = ("exact", "hnsw", "ivf", "binary", "numpy")

# FAISS GPU indexes answer at most this many neighbours per query.
_GPU_MAX_K = 2048
# Largest float32 score block (queries x database) the NumPy backend computes at once.
_NUMPY_BLOCK_BYTES = 256 << 20
# Largest full-width chunk `normalize_prefix` reads at once.
_CHUNK_BYTES = 64 << 20


# The name the searchers call, so that a test can stand in for a machine without FAISS.
_faiss = import_faiss


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
    if not is_positive_int(m) or m > d:
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


def prefix_norms(
    x: np.ndarray, dims: Sequence[int], chunk_rows: int | None = None
) -> dict[int, np.ndarray]:
    """L2 norm of every row's `m`-prefix for each `m` in `dims`, in one chunked pass over `x`
    (a memmap works): `{m: float32 (N,)}`, accumulated in float64."""
    _check_matrix(x, "x")
    dims = sorted({int(m) for m in dims})
    n, d = x.shape
    if not dims or dims[0] < 1 or dims[-1] > d:
        raise ValueError(f"prefix sizes {dims} must lie in [1, {d}]")
    if chunk_rows is None:
        chunk_rows = max(1, _CHUNK_BYTES // max(1, dims[-1] * 8))
    out = {m: np.empty(n, dtype=np.float32) for m in dims}
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        block = np.asarray(x[start:stop, : dims[-1]], dtype=np.float64)
        total = np.zeros(stop - start)
        prev = 0
        for m in dims:
            seg = block[:, prev:m]
            total += np.einsum("ij,ij->i", seg, seg)
            out[m][start:stop] = np.sqrt(total)
            prev = m
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


def default_nlist(n: int) -> int:
    """Inverted lists for `n` rows: about 4 sqrt(n) (FAISS's rule of thumb), at most n."""
    return max(1, min(n, int(4 * math.sqrt(n))))


class Searcher:
    """A k-NN index over database rows, built once and searched many times.

    `database` holds the rows: already normalised (the default), or, with `dim` given, full-width
    rows (any float dtype, an `np.memmap` works) whose `dim`-prefix is normalised here chunk by
    chunk, so no second full-width copy is ever held. Backends:

    - "exact": FAISS `IndexFlatIP`, exact inner product;
    - "hnsw": FAISS `IndexHNSWFlat` (`hnsw_m` links per node, beam widths `ef_construction`
      and `ef_search`), approximate;
    - "ivf": FAISS `IndexIVFFlat` with `nlist` lists (default `default_nlist`), `nprobe` of
      them searched; its coarse quantizer clusters (spherical k-means, seeded) and routes
      queries by the first `coarse_dim` dims only (default: all), while the lists are scanned
      with every dim: a short prefix decides where to look, a longer one what to return;
    - "binary": FAISS `IndexBinaryFlat` over `binary_codes` (sign bits, `dim` a multiple of 8),
      scored by minus the Hamming distance, so scores are integers and ties are common;
    - "numpy": exact, pure NumPy, deterministic tie order (keeps the rows, a memmap stays on
      disk).

    Without FAISS, every backend but "numpy" falls back to it with a warning. With
    `use_gpu="auto"`, exact and IVF indexes move to GPU 0 when FAISS has GPUs (HNSW and binary
    stay on the CPU). `progress` shows a bar while rows are added.
    """

    def __init__(
        self,
        database: np.ndarray,
        backend: str = "exact",
        hnsw_m: int = 32,
        ef_search: int = 128,
        ef_construction: int = 80,
        nlist: int | None = None,
        nprobe: int = 16,
        coarse_dim: int | None = None,
        use_gpu: bool | str = "auto",
        batch_size: int = 4096,
        dim: int | None = None,
        progress: bool = False,
        chunk_rows: int | None = None,
        seed: int = 0,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown search backend {backend!r}; choose one of {list(BACKENDS)}")
        _check_matrix(database, "database")
        if database.shape[0] == 0:
            raise ValueError("database is empty: nothing to search")
        for name, value in (("batch_size", batch_size), ("nprobe", nprobe)):
            positive_int(value, name)
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
        self.nprobe = int(nprobe)
        self.ntotal = database.shape[0]
        self.dim = int(dim) if dim is not None else database.shape[1]
        if not 1 <= self.dim <= database.shape[1]:
            raise ValueError(f"dim={dim} must be in [1, {database.shape[1]}]")
        self.on_gpu = False
        self.build_seconds = 0.0

        def rows(start: int, stop: int) -> np.ndarray:
            if dim is None:
                return np.ascontiguousarray(database[start:stop], dtype=np.float32)
            return normalize_prefix(database[start:stop], self.dim)

        if chunk_rows is None:  # about 64 MiB of float32 output rows at a time
            chunk_rows = max(1, _CHUNK_BYTES // (4 * self.dim))
        t0 = time.perf_counter()
        if backend == "numpy":
            # No copy for contiguous float32 (a memmap stays on disk); others convert once here.
            self._database = rows(0, self.ntotal)
            return
        index = self._empty_index(faiss, database, hnsw_m, ef_construction, nlist, coarse_dim, seed)
        starts = range(0, self.ntotal, chunk_rows)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"index ({backend}, {self.dim} dims)", unit="chunk")
        if backend == "exact":
            # Rows go straight into one buffer of the final size: FAISS's own `add` grows its
            # storage by doubling, which at 1M x 2048 holds 8 GB and 16 GB at once.
            index.codes.resize(self.ntotal * self.dim * 4)
            view = faiss.rev_swig_ptr(index.codes.data(), self.ntotal * self.dim * 4)
            rows_view = view.view(np.float32).reshape(self.ntotal, self.dim)
            for start in starts:
                stop = min(self.ntotal, start + chunk_rows)
                rows_view[start:stop] = rows(start, stop)
            index.ntotal = self.ntotal
        else:
            for start in starts:
                chunk = rows(start, min(self.ntotal, start + chunk_rows))
                index.add(binary_codes(chunk) if backend == "binary" else chunk)
        self._set_index(index, faiss, use_gpu)
        self.build_seconds = time.perf_counter() - t0

    def _empty_index(self, faiss, database, hnsw_m, ef_construction, nlist, coarse_dim, seed):
        d = self.dim
        if self.backend == "exact":
            return faiss.IndexFlatIP(d)
        if self.backend == "hnsw":
            index = faiss.IndexHNSWFlat(d, int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = int(ef_construction)
            return index
        if self.backend == "binary":
            if d % 8:
                raise ValueError(f"binary search needs a dim divisible by 8, got {d}")
            return faiss.IndexBinaryFlat(d)
        nlist = default_nlist(self.ntotal) if nlist is None else int(nlist)
        coarse = d if coarse_dim is None else int(coarse_dim)
        if not 1 <= nlist <= self.ntotal or not 1 <= coarse <= d:
            raise ValueError(
                f"ivf needs 1 <= nlist <= {self.ntotal} and 1 <= coarse_dim <= {d}, got "
                f"nlist={nlist}, coarse_dim={coarse}"
            )
        # k-means on a seeded sample of at most 64 rows per list, on the coarse prefix only.
        rng = np.random.default_rng(seed)
        n_train = min(self.ntotal, 64 * nlist)
        sample = np.sort(rng.choice(self.ntotal, n_train, replace=False))
        # Only the coarse prefix of the sampled rows is read, not their full width.
        train = normalize_prefix(np.asarray(database[sample, :coarse]), coarse)
        kmeans = faiss.Kmeans(coarse, nlist, niter=20, seed=seed + 1, spherical=True)
        kmeans.train(train)
        # Zero-padded centroids: the quantizer's inner product with a d-dim query or row is
        # then the inner product of their coarse prefixes, so routing sees `coarse` dims only.
        centroids = np.zeros((nlist, d), dtype=np.float32)
        centroids[:, :coarse] = kmeans.centroids
        quantizer = faiss.IndexFlatIP(d)
        quantizer.add(centroids)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.own_fields = False
        self._quantizer = quantizer  # the index does not own it: keep it alive
        self.nlist, self.coarse_dim = nlist, coarse
        return index

    def _set_index(self, index: Any, faiss: Any, use_gpu: bool | str) -> None:
        self._cpu_index = index
        self._index = index
        if self.backend in ("exact", "ivf") and _resolve_gpu(use_gpu, faiss):
            self._gpu_resources = faiss.StandardGpuResources()
            self._index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, index)
            self.on_gpu = True

    def save(self, path: str | Path) -> None:
        """Write the (CPU) index to `path` atomically; `Searcher.load` reads it back."""
        if self.backend == "numpy":
            raise ValueError("the numpy backend has no index to save")
        faiss = _faiss()
        path = Path(path)
        tmp = path.with_name(path.name + ".partial")
        write = faiss.write_index_binary if self.backend == "binary" else faiss.write_index
        write(self._cpu_index, str(tmp))
        os.replace(tmp, path)

    @classmethod
    def load(
        cls,
        path: str | Path,
        backend: str,
        ef_search: int = 128,
        nprobe: int = 16,
        use_gpu: bool | str = "auto",
        batch_size: int = 4096,
    ) -> Searcher:
        """A searcher over the index `save` wrote to `path` (`backend` as it was built)."""
        if backend not in BACKENDS or backend == "numpy":
            raise ValueError(f"cannot load a {backend!r} index; one of {list(BACKENDS[:-1])}")
        faiss = _faiss()
        read = faiss.read_index_binary if backend == "binary" else faiss.read_index
        index = read(str(path))
        self = cls.__new__(cls)
        self.backend, self.batch_size = backend, int(batch_size)
        self.ef_search, self.nprobe = int(ef_search), int(nprobe)
        self.ntotal, self.dim = int(index.ntotal), int(index.d)
        self.on_gpu, self.build_seconds = False, 0.0
        if backend == "ivf":
            self._quantizer = index.quantizer
            self.nlist = int(index.nlist)
        self._set_index(index, faiss, use_gpu)
        return self

    @property
    def index_bytes(self) -> int:
        """Bytes the index holds: its stored vectors or codes, and its graph (HNSW: neighbour
        ids and levels), inverted-list ids and centroids (IVF); the rows for NumPy. Counted from
        the index's sizes, without serialising it (which would copy it)."""
        if self.backend == "numpy":
            return int(self._database.nbytes)
        index = self._cpu_index
        if self.backend in ("exact", "binary"):
            return int(index.ntotal * index.code_size)
        if self.backend == "hnsw":
            graph = index.hnsw.neighbors.size() * 4 + index.hnsw.levels.size() * 4
            graph += index.hnsw.offsets.size() * 8
            return int(index.ntotal * self.dim * 4 + graph)
        # IVF: codes and one 8-byte id per row in the lists, plus the quantizer's centroids.
        return int(index.ntotal * (index.code_size + 8) + self._quantizer.ntotal * self.dim * 4)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """`(scores, indices)` of the `min(k, N_db)` best database rows for each query row.

        Queries are normalised rows of the index's `dim` (for "binary", any rows: only their
        signs count). They go through in batches of `batch_size` (default: the searcher's); the
        NumPy backend further splits a batch so that its score block stays under 256 MiB.
        Approximate backends may leave a slot they could not fill as index -1 (HNSW with
        `ef_search >= k`, which is enforced, does not on a connected graph; IVF does when the
        probed lists hold fewer than k rows).
        """
        _check_matrix(queries, "queries")
        if queries.shape[1] != self.dim:
            raise ValueError(f"queries have {queries.shape[1]} dims, the index has {self.dim}")
        k_out = min(positive_int(k, "k"), self.ntotal)
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
        elif self.backend == "ivf":
            index.nprobe = min(self.nprobe, self.nlist)
        for start in starts:
            stop = min(n_q, start + bs)
            q = np.ascontiguousarray(queries[start:stop], dtype=np.float32)
            if index is None:
                s, i = _topk_rows(q @ self._database.T, k_out)
            elif self.backend == "binary":
                d, i = index.search(binary_codes(q), k_out)
                s, i = _sort_rows(-d.astype(np.float32), i.astype(np.int64, copy=False))
            else:
                s, i = index.search(q, k_out)
                s, i = _sort_rows(s, i.astype(np.int64, copy=False))
            scores[start:stop], indices[start:stop] = s, i
        return scores, indices

    def _index_for(self, k: int) -> Any:
        # FAISS GPU indexes refuse k above 2048; the CPU copy answers those.
        return self._cpu_index if self.on_gpu and k > _GPU_MAX_K else self._index


def build_index(database: np.ndarray, backend: str = "exact", **options: Any) -> Searcher:
    """Build a `Searcher` over `database` rows (see it for the backends and `options`)."""
    return Searcher(database, backend=backend, **options)


def search(
    database: np.ndarray,
    queries: np.ndarray,
    k: int,
    backend: str = "exact",
    progress: bool = False,
    **options: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """k-NN of normalised float32 `queries` among normalised float32 `database` rows by inner
    product: `(scores, indices)`, each `(N_q, min(k, N_db))`, rows by descending score (ties:
    ascending database index), indices int64. See `Searcher` for the backends and `options`."""
    return build_index(database, backend=backend, **options).search(queries, k, progress=progress)


@contextlib.contextmanager
def matrix_product_search() -> Iterator[None]:
    """Within the block, FAISS's exact search answers a batch of any size through its
    matrix-product (BLAS) path; nothing changes without FAISS."""
    # FAISS takes that path by itself only above queries x dim of its threshold (128000 in
    # 1.15), so a batch's cost per query would jump between dims.
    faiss = _faiss()
    if faiss is None:
        yield
        return
    threshold = faiss.cvar.distance_compute_blas_threshold
    try:
        faiss.cvar.distance_compute_blas_threshold = 0
        yield
    finally:
        faiss.cvar.distance_compute_blas_threshold = threshold
