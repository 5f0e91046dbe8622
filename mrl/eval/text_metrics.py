"""Quality of a Matryoshka text model at each dim on retrieval (BEIR) and STS sets.

Every set is encoded once at full width; dim `m` scores the prefixes `z[:, :m]`, each row
re-normalised to unit length, so cosine similarity is an inner product.

The IR metrics come from `pytrec_eval` (PyPI: `pytrec-eval-terrier`). It is trec_eval itself,
which BEIR's and MTEB's evaluators call, so the numbers are comparable to published BEIR tables;
it is a compiled wheel with no JIT warm-up (ranx compiles with numba on first use), and
ir-measures would call it underneath anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from mrl.core.errors import ConfigError
from mrl.core.validate import positive_int, positive_ints
from mrl.eval.retention import retention
from mrl.eval.search import normalize_prefix, search
from mrl.eval.text_sets import RetrievalSet, STSSet

Encode = Callable[[list[str], str], np.ndarray]
Run = dict[str, dict[str, float]]


# -- checks --------------------------------------------------------------------------------------


def _check_dims(dims: Iterable[int], width: int) -> list[int]:
    """`dims` as ascending distinct ints, each at most the embeddings' `width`."""
    dims = sorted(set(positive_ints(dims, "dims")))
    if dims[-1] > width:
        raise ConfigError(f"dims: {dims[-1]} exceeds the embeddings' width {width}")
    return dims


def _check_embeddings(x: Any, rows: int, what: str) -> np.ndarray:
    """`x` as a float32 (rows, D) array, else an error naming `what`."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != rows or x.shape[1] == 0:
        raise ValueError(f"{what}: expected a ({rows}, D) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ConfigError(f"{what} hold NaN or infinite values: the model is broken")
    return x


def _judged_queries(retrieval_set: RetrievalSet) -> list[str]:
    """The set's queries that have a relevant document (grade > 0): the ones averaged over."""
    unknown = [q for q in retrieval_set.qrels if q not in retrieval_set.queries]
    if unknown:
        raise ConfigError(f"{retrieval_set.name}: the qrels name query {unknown[0]!r}, which is "
                          f"not among the set's queries")  # fmt: skip
    judged = [
        q for q in retrieval_set.queries
        if any(g > 0 for g in retrieval_set.qrels.get(q, {}).values())
    ]  # fmt: skip
    if not judged:
        raise ConfigError(f"{retrieval_set.name}: no query has a relevant document (grade > 0)")
    return judged


# -- retrieval -----------------------------------------------------------------------------------


def _ranked(hits: dict[str, float]) -> list[tuple[str, float]]:
    """A query's hits in trec_eval's order: descending score, ties by descending document id."""
    return sorted(hits.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)


def _run(
    scores: np.ndarray,
    indices: np.ndarray,
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    k: int,
    ignore_identical_ids: bool,
) -> Run:
    """query id -> {doc id: score} of the best `k` hits of each query."""
    run: Run = {}
    for query, row_scores, row_indices in zip(query_ids, scores.tolist(), indices.tolist()):
        hits: dict[str, float] = {}
        for score, index in zip(row_scores, row_indices):
            doc = doc_ids[index]
            if ignore_identical_ids and doc == query:
                continue
            hits[doc] = score
            if len(hits) == k:
                break
        run[query] = hits
    return run


def _cut(run: Run, k: int) -> Run:
    """Each query's best `k` hits, in the order trec_eval ranks them."""
    return {query: dict(_ranked(hits)[:k]) for query, hits in run.items()}


def _mean(per_query: dict[str, dict[str, float]], queries: Sequence[str], key: str) -> float:
    # trec_eval leaves out a query with no hits; it found nothing, so it counts as 0.
    return float(sum(per_query.get(q, {}).get(key, 0.0) for q in queries) / len(queries))


def retrieval_metrics(
    query_emb: np.ndarray,
    doc_emb: np.ndarray,
    retrieval_set: RetrievalSet,
    dims: Iterable[int],
    *,
    ndcg_k: int = 10,
    mrr_k: int = 10,
    map_k: int = 100,
    recall_k: int = 100,
    ignore_identical_ids: bool = False,
    backend: str = "numpy",
) -> list[dict[str, Any]]:
    """Rows `{"dim", "metric", "value"}` with `ndcg@{ndcg_k}`, `mrr@{mrr_k}`, `map@{map_k}` and
    `recall@{recall_k}` at every dim, averaged over the queries with a relevant document.

    Row i of `query_emb` embeds the i-th query of `retrieval_set.queries`, row j of `doc_emb`
    the j-th document of `retrieval_set.corpus` (dict order). Each dim's search is exact cosine
    search of the re-normalised prefixes (`mrl.eval.search`'s NumPy backend, blocks of at most
    256 MiB of scores; `backend="exact"` uses FAISS) for the best `max(cutoffs)` documents.
    With `ignore_identical_ids` a document whose id is the query's is never a hit, as BEIR does
    for ArguAna and Quora.

    Ties: trec_eval ranks equal scores by document id, in descending string order, whatever the
    order of the run; the search keeps the lower corpus position among documents tied at its
    own cutoff.
    """
    import pytrec_eval

    cutoffs = {"ndcg_k": ndcg_k, "mrr_k": mrr_k, "map_k": map_k, "recall_k": recall_k}
    depth = max(positive_int(k, name) for name, k in cutoffs.items())
    queries, docs, judged = _retrieval_inputs(query_emb, doc_emb, retrieval_set)
    qrels = {q: {d: int(g) for d, g in retrieval_set.qrels[q].items()} for q in judged}
    ranked = pytrec_eval.RelevanceEvaluator(
        qrels, {f"ndcg_cut.{ndcg_k}", f"map_cut.{map_k}", f"recall.{recall_k}"}
    )
    reciprocal = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"})
    doc_ids = list(retrieval_set.corpus)
    out = []
    for m in _check_dims(dims, queries.shape[1]):
        found = search(
            normalize_prefix(docs, m),
            normalize_prefix(queries, m),
            depth + int(ignore_identical_ids),
            backend=backend,
        )
        run = _run(*found, judged, doc_ids, depth, ignore_identical_ids)
        per_query = ranked.evaluate(run)
        # trec_eval's recip_rank has no cutoff: on the run cut to its best mrr_k hits it is
        # MRR@mrr_k (a query whose first relevant document ranks lower scores 0).
        first_hit = reciprocal.evaluate(_cut(run, mrr_k))
        values = {
            f"ndcg@{ndcg_k}": _mean(per_query, judged, f"ndcg_cut_{ndcg_k}"),
            f"mrr@{mrr_k}": _mean(first_hit, judged, "recip_rank"),
            f"map@{map_k}": _mean(per_query, judged, f"map_cut_{map_k}"),
            f"recall@{recall_k}": _mean(per_query, judged, f"recall_{recall_k}"),
        }
        out += [{"dim": m, "metric": name, "value": v} for name, v in values.items()]
    return out


def _retrieval_inputs(
    query_emb: Any, doc_emb: Any, retrieval_set: RetrievalSet
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The checked query embeddings of the judged queries, the document embeddings, and the
    judged queries' ids (in the set's order)."""
    name, query_ids = retrieval_set.name, list(retrieval_set.queries)
    queries = _check_embeddings(query_emb, len(query_ids), f"{name} query embeddings")
    docs = _check_embeddings(doc_emb, len(retrieval_set.corpus), f"{name} document embeddings")
    if queries.shape[1] != docs.shape[1]:
        raise ValueError(f"{name}: queries have {queries.shape[1]} dims, documents "
                         f"{docs.shape[1]}")  # fmt: skip
    judged = _judged_queries(retrieval_set)
    if len(judged) < len(query_ids):
        keep = set(judged)
        queries = queries[[i for i, q in enumerate(query_ids) if q in keep]]
    return queries, docs, judged


# -- STS -----------------------------------------------------------------------------------------


def _prefix_cosines(a: np.ndarray, b: np.ndarray, m: int) -> np.ndarray:
    """Cosine similarity of each row pair's `m`-prefixes."""
    a, b = normalize_prefix(a, m, np.float64), normalize_prefix(b, m, np.float64)
    return np.einsum("ij,ij->i", a, b)


def _correlation(kind: str, x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's or Pearson's r of `x` and `y`; None where one of them is constant."""
    from scipy import stats

    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    statistic = stats.spearmanr(x, y)[0] if kind == "spearman" else stats.pearsonr(x, y)[0]
    return float(statistic)


def sts_metrics(
    emb1: np.ndarray, emb2: np.ndarray, sts_set: STSSet, dims: Iterable[int]
) -> list[dict[str, Any]]:
    """Rows `{"dim", "metric", "value"}` with the `spearman` and `pearson` correlation of the
    pairs' prefix cosine similarities with the gold scores at every dim (Spearman's is MTEB's
    main STS score). Row i of `emb1`/`emb2` embeds `sts_set.sentence1[i]`/`sentence2[i]`. A
    correlation with a constant side is undefined: its value is None."""
    n = len(sts_set.scores)
    a = _check_embeddings(emb1, n, f"{sts_set.name} sentence1 embeddings")
    b = _check_embeddings(emb2, n, f"{sts_set.name} sentence2 embeddings")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{sts_set.name}: sentence1 has {a.shape[1]} dims, "
                         f"sentence2 {b.shape[1]}")  # fmt: skip
    gold = np.asarray(sts_set.scores, dtype=np.float64)
    out = []
    for m in _check_dims(dims, a.shape[1]):
        cosines = _prefix_cosines(a, b, m)
        out += [{"dim": m, "metric": kind, "value": _correlation(kind, cosines, gold)}
                for kind in ("spearman", "pearson")]  # fmt: skip
    return out


# -- every set -----------------------------------------------------------------------------------


def _encoded(encode: Encode, texts: list[str], role: str, what: str) -> np.ndarray:
    return _check_embeddings(encode(texts, role), len(texts), what)


def _set_rows(
    encode: Encode, text_set: RetrievalSet | STSSet, dims: list[int], options: dict[str, Any]
) -> list[dict[str, Any]]:
    """One set's rows `{"set", "kind", "dim", "metric", "value"}`, its texts encoded once."""
    name = text_set.name
    if isinstance(text_set, RetrievalSet):
        queries = _encoded(encode, list(text_set.queries.values()), "query", f"{name} queries")
        docs = _encoded(encode, list(text_set.corpus.values()), "document", f"{name} documents")
        kind, rows = "retrieval", retrieval_metrics(queries, docs, text_set, dims, **options)
    elif isinstance(text_set, STSSet):
        # Both sides of a symmetric pair take the query role (E5's rule for symmetric tasks),
        # in one call.
        pairs = _encoded(encode, [*text_set.sentence1, *text_set.sentence2], "query", name)
        n = len(text_set.sentence1)
        kind, rows = "sts", sts_metrics(pairs[:n], pairs[n:], text_set, dims)
    else:
        raise TypeError(f"expected a RetrievalSet or an STSSet, got {type(text_set).__name__}")
    return [{"set": name, "kind": kind, **r} for r in rows]


def _with_retention(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with `retention`: percent of the same set's and metric's value at the largest
    dim (None where that value is zero or undefined, or the row's own value is)."""
    found = {
        (r["method"], r["metric"], r["dim"]): r["retention"]
        for r in retention({**r, "method": r["set"]} for r in rows)
    }
    return [{**r, "retention": found.get((r["set"], r["metric"], r["dim"]))} for r in rows]


def evaluate_text_sets(
    encode: Encode,
    sets: Sequence[RetrievalSet | STSSet],
    dims: Iterable[int],
    *,
    ndcg_k: int = 10,
    mrr_k: int = 10,
    map_k: int = 100,
    recall_k: int = 100,
    ignore_identical_ids: bool = False,
    backend: str = "numpy",
) -> list[dict[str, Any]]:
    """Tidy rows `{"set", "kind", "dim", "metric", "value", "retention"}` of every set at
    every dim: `kind` "retrieval" (`retrieval_metrics`) or "sts" (`sts_metrics`), `retention`
    the value as a percentage of the same set's and metric's value at the largest of `dims`.

    `encode(texts, role)` returns a float32 `(len(texts), D)` array; it is called once per
    retrieval set's queries (role "query") and corpus (role "document"), and once per STS set
    with both sides' sentences (role "query", the two sides being alike). Every dim is a
    slice of those embeddings. Values are Python floats (None where undefined); the keyword
    options go to `retrieval_metrics`.
    """
    dims = sorted(set(positive_ints(dims, "dims")))
    names = [s.name for s in sets]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"two sets are named {repeated[0]!r}: give each set its own name")
    options = {"ndcg_k": ndcg_k, "mrr_k": mrr_k, "map_k": map_k, "recall_k": recall_k,
               "ignore_identical_ids": ignore_identical_ids, "backend": backend}  # fmt: skip
    rows = [row for text_set in sets for row in _set_rows(encode, text_set, dims, options)]
    return _with_retention(rows)
