"""Adaptive and funnel retrieval: shortlist with a small prefix, re-rank with larger ones.

A funnel (cascade) is a list of strictly increasing prefix sizes `dims` with non-increasing
shortlist sizes `shortlists`. Step 1 searches the whole database with the normalised
`dims[0]`-prefix and keeps the top `shortlists[0]`; step i re-ranks the current candidates by the
normalised `dims[i]`-prefix and keeps the top `shortlists[i]`. Adaptive retrieval (shortlist with
D_s, re-rank with D_r) is the 2-step funnel `dims=[D_s, D_r], shortlists=[k, k_final]`; exact
search at dim D is the 1-step funnel `dims=[D], shortlists=[k]`.

Costs follow the paper's model, counting one multiply-add per dimension and candidate:
N_db * dims[0] + sum_{i>=1} shortlists[i-1] * dims[i] per query.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mrl.core.nesting import validate_nesting
from mrl.core.validate import positive_int, positive_ints
from mrl.eval.index_cache import cached_searcher
from mrl.eval.metrics import knn_accuracy, neighbor_labels_of, retrieval_metrics
from mrl.eval.search import Searcher, normalize_prefix, prefix_norms

# Gathered candidate block (queries x candidates x dims, float32) re-ranked at once: small
# blocks stay in cache and avoid page-faulting fresh memory, which is faster than large ones.
_RERANK_BLOCK_BYTES = 16 << 20


def validate_cascade(
    dims: Sequence[int], shortlists: Sequence[int], max_dim: int | None = None
) -> tuple[list[int], list[int]]:
    """`(dims, shortlists)` as int lists, or `ValueError` naming the bad value.

    Both lists have the same non-zero length; dims are strictly increasing positive integers (at
    most `max_dim` when given); shortlists are positive and non-increasing.
    """
    dims, shortlists = list(dims), list(shortlists)
    if not dims or len(dims) != len(shortlists):
        raise ValueError(
            f"a funnel needs as many shortlists as dims (at least one): dims={dims}, "
            f"shortlists={shortlists}"
        )
    dims = list(validate_nesting(dims, max_dim, "dims"))
    shortlists = positive_ints(shortlists, "shortlists")
    for a, b in zip(shortlists, shortlists[1:]):
        if b > a:
            raise ValueError(
                f"funnel shortlists must not increase, but {b} follows {a} ({shortlists})"
            )
    return dims, shortlists


def funnel_mflops(n_db: int, dims: Sequence[int], shortlists: Sequence[int]) -> float:
    """Theoretical cost per query in millions of multiply-adds (the paper's "MFLOPs"):
    `(n_db * dims[0] + sum_{i>=1} shortlists[i-1] * dims[i]) / 1e6`, shortlists capped at n_db."""
    dims, shortlists = validate_cascade(dims, shortlists)
    ops = n_db * dims[0] + sum(min(s, n_db) * d for s, d in zip(shortlists[:-1], dims[1:]))
    return ops / 1e6


def default_funnel(
    nesting: Sequence[int], n_db: int, final_k: int = 10, first_shortlist: int = 200
) -> tuple[list[int], list[int]]:
    """A funnel for a model trained with `nesting`, after the paper's
    dims [16, 32, 64, 128, 2048] / shortlists [200, 100, 50, 25, 10] for nesting 8..2048.

    Dims: start at the smallest nesting dim >= max(min(nesting), ceil(D / 128)), D = max(nesting);
    then up to three times take the smallest nesting dim >= twice the previous one, as long as it
    is below D; end at D. Shortlists: start at min(first_shortlist, n_db), halve at each further
    step but never below the final size, and end at the final size min(final_k, n_db).
    """
    nesting = validate_nesting(nesting)
    top = nesting[-1]
    target = max(nesting[0], math.ceil(top / 128))
    dims: list[int] = []
    while len(dims) < 4:
        d = min(m for m in nesting if m >= target)
        if d >= top:
            break
        dims.append(d)
        target = 2 * d
    dims.append(top)
    final = min(final_k, n_db)
    if len(dims) == 1:
        return dims, [final]
    shortlists = [max(final, min(first_shortlist, n_db))]
    for _ in dims[1:-1]:
        shortlists.append(max(final, shortlists[-1] // 2))
    shortlists.append(final)
    return dims, shortlists


def rerank(
    database: np.ndarray,
    norms: np.ndarray,
    q_m: np.ndarray,
    candidates: np.ndarray,
    keep: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Top `keep` of each query's candidates by cosine similarity of their m-prefixes, with
    m = `q_m.shape[1]` (`q_m` normalised, `norms` the database's m-prefix norms), ordered by
    (descending score, ascending database index); candidate -1 (none) ranks last.

    Candidate rows are gathered from the full-width `database` (any float dtype; a memmap
    works) a block of queries at a time, so no normalised copy of the database is needed."""
    n_q, n_cand = candidates.shape
    m = q_m.shape[1]
    rows = max(1, _RERANK_BLOCK_BYTES // (4 * n_cand * m))
    scores = np.empty((n_q, keep), dtype=np.float32)
    indices = np.empty((n_q, keep), dtype=np.int64)
    for start in range(0, n_q, rows):
        stop = min(n_q, start + rows)
        cand = candidates[start:stop]
        flat = np.clip(cand, 0, None).ravel()
        vecs = np.asarray(database[flat, :m], dtype=np.float32).reshape(*cand.shape, m)
        dots = np.matmul(vecs, q_m[start:stop, :, None])[..., 0]
        n = norms[flat].reshape(cand.shape)
        s = np.divide(dots, n, out=np.zeros_like(dots), where=n > 0)
        s[cand < 0] = -np.inf
        order = np.lexsort((cand, -s), axis=-1)[:, :keep]
        scores[start:stop] = np.take_along_axis(s, order, axis=1)
        indices[start:stop] = np.take_along_axis(cand, order, axis=1)
    return scores, indices


class FunnelIndex:
    """The database side of a funnel: a search index on the `dims[0]`-prefix and the prefix
    norms at the later dims, built once for any number of query sets and shortlist choices.

    `database` stays full width (any float dtype; a memmap works): later steps gather their
    candidates' rows from it. The first stage is built from `prefix_cache[dims[0]]` (a
    normalised contiguous prefix) when given there, else from `database` chunk by chunk, and
    is saved to and reused from `index_cache_dir` when `fingerprint` identifies the
    embeddings (see `mrl.eval.index_cache`). `norms_cache` (dim -> prefix norms) shares norms
    between funnels. `prepare_seconds` and `index_seconds` record the time spent computing
    norms and building (or loading) the index; `index_reused` says whether it was loaded.
    `index_kwargs` go to `Searcher`.
    """

    def __init__(
        self,
        database: np.ndarray,
        dims: Sequence[int],
        backend: str = "exact",
        batch_size: int = 4096,
        prefix_cache: dict[int, np.ndarray] | None = None,
        norms_cache: dict[int, np.ndarray] | None = None,
        index_cache_dir: str | Path | None = None,
        fingerprint: dict | None = None,
        **index_kwargs,
    ) -> None:
        if getattr(database, "ndim", None) != 2:
            raise ValueError(f"database must be 2-D (rows x dims), got shape {np.shape(database)}")
        self.dims, _ = validate_cascade(dims, [1] * len(dims), max_dim=database.shape[1])
        self.database = database
        self.n_db = database.shape[0]
        self.batch_size = int(batch_size)
        norms = {} if norms_cache is None else norms_cache
        t0 = time.perf_counter()
        missing = [m for m in self.dims[1:] if m not in norms]
        if missing:
            norms.update(prefix_norms(database, missing))
        self.norms = {m: norms[m] for m in self.dims[1:]}
        t1 = time.perf_counter()
        first = self.dims[0]
        if prefix_cache is not None and first in prefix_cache:
            self.searcher = Searcher(
                prefix_cache[first], backend=backend, batch_size=batch_size, **index_kwargs
            )
            self.index_reused = False
        else:
            self.searcher, self.index_reused = cached_searcher(
                database, backend, index_cache_dir, fingerprint, dim=first,
                batch_size=batch_size, **index_kwargs,
            )  # fmt: skip
        self.prepare_seconds = t1 - t0
        self.index_seconds = time.perf_counter() - t1

    def query_prefixes(self, queries: np.ndarray) -> dict[int, np.ndarray]:
        """Normalised prefixes of `queries` at each of the funnel's dims."""
        return {m: normalize_prefix(queries, m) for m in self.dims}

    def search(
        self,
        queries: np.ndarray | Mapping[int, np.ndarray],
        shortlists: Sequence[int],
    ) -> tuple[np.ndarray, np.ndarray, list[float]]:
        """`(indices, scores, step_seconds)` of the funnel with these `shortlists`.

        `queries` is either the raw query matrix (normalised here, untimed) or a mapping
        dim -> normalised query prefix. Shortlists above N_db are capped at N_db, so the result
        has `min(shortlists[-1], N_db)` columns. Queries go through the whole cascade a batch
        of `batch_size` at a time; `step_seconds[i]` is the wall time spent in step i.
        """
        _, shortlists = validate_cascade(self.dims, shortlists)
        if not isinstance(queries, Mapping):
            queries = self.query_prefixes(queries)
        missing = [m for m in self.dims if m not in queries]
        if missing:
            raise ValueError(f"query prefixes for dims {missing} are missing")
        n_q = queries[self.dims[0]].shape[0]
        keep = [min(s, self.n_db) for s in shortlists]
        indices = np.empty((n_q, keep[-1]), dtype=np.int64)
        scores = np.empty((n_q, keep[-1]), dtype=np.float32)
        step_seconds = [0.0] * len(self.dims)
        for start in range(0, n_q, self.batch_size):
            stop = min(n_q, start + self.batch_size)
            t = time.perf_counter()
            s, idx = self.searcher.search(queries[self.dims[0]][start:stop], keep[0])
            step_seconds[0] += time.perf_counter() - t
            for i in range(1, len(self.dims)):
                t = time.perf_counter()
                m = self.dims[i]
                s, idx = rerank(self.database, self.norms[m], queries[m][start:stop], idx, keep[i])
                step_seconds[i] += time.perf_counter() - t
            indices[start:stop], scores[start:stop] = idx, s
        return indices, scores, step_seconds


def funnel_search(
    database: np.ndarray,
    queries: np.ndarray,
    dims: Sequence[int],
    shortlists: Sequence[int],
    backend: str = "exact",
    batch_size: int = 4096,
    prefix_cache: dict[int, np.ndarray] | None = None,
    **index_kwargs,
) -> tuple[np.ndarray, dict]:
    """Funnel retrieval of `queries` in the full-width `database` (see the module docstring).

    Returns `(indices, timing)`: indices `(N_q, min(shortlists[-1], N_db))` int64, best first
    (ties: ascending database index), and timing with `prepare_seconds` (normalising database and
    query prefixes; database prefixes found in `prefix_cache` cost nothing), `index_seconds`
    (building the step-1 index), `search_seconds` (all steps), `step_seconds` (per step) and
    `ms_per_query` (search only). Raises `ValueError` for an invalid cascade.
    """
    dims, shortlists = validate_cascade(dims, shortlists, max_dim=database.shape[1])
    funnel = FunnelIndex(
        database,
        dims,
        backend=backend,
        batch_size=batch_size,
        prefix_cache=prefix_cache,
        **index_kwargs,
    )
    t0 = time.perf_counter()
    query_prefixes = funnel.query_prefixes(queries)
    query_seconds = time.perf_counter() - t0
    indices, _, step_seconds = funnel.search(query_prefixes, shortlists)
    search_seconds = sum(step_seconds)
    timing = {
        "prepare_seconds": funnel.prepare_seconds + query_seconds,
        "index_seconds": funnel.index_seconds,
        "search_seconds": search_seconds,
        "step_seconds": step_seconds,
        "ms_per_query": 1000 * search_seconds / max(1, queries.shape[0]),
    }
    return indices, timing


def _join(values: Sequence[int]) -> str:
    return ">".join(str(v) for v in values)


def evaluate_adaptive_retrieval(
    database: np.ndarray,
    database_labels: np.ndarray,
    queries: np.ndarray,
    query_labels: np.ndarray,
    nesting: Sequence[int],
    shortlist_k: int = 200,
    funnel: tuple[Sequence[int], Sequence[int]] | bool | None = None,
    backend: str = "exact",
    ks: Sequence[int] = (10,),
    all_pairs: bool = False,
    batch_size: int = 4096,
    repeats: int = 3,
    first_stage: str | None = None,
    index_cache_dir: str | Path | None = None,
    fingerprint: dict | None = None,
    **index_kwargs,
) -> list[dict]:
    """Exact, adaptive and funnel retrieval compared on accuracy, cost and measured speed.

    Methods (k_final = max(ks)):
    - "exact": search at D = max(nesting), k_final results (the baseline);
    - "adaptive": for each D_s in `nesting` below D, shortlist `shortlist_k` at D_s and re-rank at
      D to k_final; with `all_pairs`, also re-rank at every nesting D_r with D_s < D_r < D;
    - "funnel": `funnel=(dims, shortlists)`, or `default_funnel(nesting, N_db, k_final)` when
      None; `funnel=False` leaves it out.

    The exact baseline searches with `backend`; the first step of the adaptive and funnel
    methods with `first_stage` (default: `backend`), e.g. "hnsw", "ivf" or "binary" with
    their `index_kwargs`. Indexes are cached in `index_cache_dir` under `fingerprint`.

    One row per method: `method`, `first_stage`, `dims` ("16>256"), `shortlists` ("200>10"),
    `map@k` (the paper's, ÷k), `map_standard@k`, `precision@k`, `recall@k` for k in `ks`, `1nn`,
    `recall_vs_exact@k` (the share of the exact search's top k that the method returns),
    `mflops_per_query` (`funnel_mflops`), `flops_ratio_vs_exact` (exact's MFLOPs / the
    method's), `ms_per_query` and `speedup_vs_exact` (exact's time / the method's, both
    measured), `index_seconds`, `index_bytes`. Times are wall clock of searching all queries in
    batches of `batch_size`, with the index built and all prefixes normalised beforehand, best
    of `repeats` runs.
    """
    database_labels = np.asarray(database_labels)
    query_labels = np.asarray(query_labels)
    nesting = validate_nesting(nesting, database.shape[1])
    ks = positive_ints(ks, "ks")
    positive_int(repeats, "repeats")
    n_db, top, k_final = database.shape[0], nesting[-1], max(ks)
    if shortlist_k < k_final:
        raise ValueError(f"shortlist_k={shortlist_k} is below the largest k={k_final} in ks")

    methods: list[tuple[str, list[int], list[int]]] = [("exact", [top], [k_final])]
    for d_s in nesting[:-1]:
        for d_r in nesting:
            if d_r == top or (all_pairs and d_s < d_r):
                methods.append(("adaptive", [d_s, d_r], [shortlist_k, k_final]))
    if funnel is None or funnel is True:
        funnel = default_funnel(nesting, n_db, final_k=k_final)
    if funnel is not False:
        f_dims, f_short = validate_cascade(*funnel, max_dim=database.shape[1])
        if min(f_short[-1], n_db) < min(k_final, n_db):
            raise ValueError(
                f"the funnel's last shortlist {f_short[-1]} is below the largest k={k_final}"
            )
        methods.append(("funnel", f_dims, f_short))

    query_prefixes = {m: normalize_prefix(queries, m) for _, dims, _ in methods for m in dims}
    exact_mflops = funnel_mflops(n_db, [top], [k_final])
    norms: dict[int, np.ndarray] = {}
    rows: list[dict] = []
    exact_seconds = float("nan")
    exact_indices = None
    first_stage = backend if first_stage is None else first_stage
    for method, dims, shortlists in methods:
        stage = backend if method == "exact" else first_stage
        index = FunnelIndex(
            database, dims, backend=stage, batch_size=batch_size, norms_cache=norms,
            index_cache_dir=index_cache_dir, fingerprint=fingerprint,
            **(index_kwargs if method != "exact" else {}),
        )  # fmt: skip
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            indices, _, _ = index.search(query_prefixes, shortlists)
            best = min(best, time.perf_counter() - t)
        if method == "exact":
            exact_seconds, exact_indices = best, indices
        labels = neighbor_labels_of(indices, database_labels, query_labels)
        mflops = funnel_mflops(n_db, dims, shortlists)
        row = {
            "method": method,
            "first_stage": stage,
            "dims": _join(dims),
            "shortlists": _join(shortlists),
        }
        row.update(retrieval_metrics(labels, query_labels, database_labels, ks))
        row["1nn"] = knn_accuracy(labels, query_labels, 1)
        row[f"recall_vs_exact@{k_final}"] = overlap_recall(indices, exact_indices)
        row.update(
            mflops_per_query=mflops,
            flops_ratio_vs_exact=exact_mflops / mflops,
            ms_per_query=1000 * best / len(query_labels),
            speedup_vs_exact=exact_seconds / best,
            index_seconds=index.index_seconds,
            index_bytes=index.searcher.index_bytes,
        )
        rows.append(row)
        del index
    return rows


def overlap_recall(found: np.ndarray, reference: np.ndarray) -> float:
    """Mean over queries of the share of `reference`'s neighbours (row q, ignoring -1) that
    appear in `found`'s row q: recall against exact search ("recall@k vs exact")."""
    if found.shape[0] != reference.shape[0]:
        raise ValueError(f"{found.shape[0]} rows against {reference.shape[0]} reference rows")
    hits = total = 0
    for start in range(0, found.shape[0], 4096):
        f, r = found[start : start + 4096], reference[start : start + 4096]
        valid = r >= 0
        # (rows, k_ref, k_found) equality: k is small (tens), so the block stays small.
        match = (r[:, :, None] == f[:, None, :]).any(axis=2) & valid
        hits += int(match.sum())
        total += int(valid.sum())
    return hits / total if total else float("nan")
