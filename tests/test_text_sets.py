"""Text evaluation sets and their per-dim metrics: BEIR and STS readers, IR metrics worked by hand
and against sentence-transformers' evaluator, STS correlations, and the one-pass evaluation."""

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from mrl.core.errors import ConfigError
from mrl.eval.text_metrics import evaluate_text_sets, retrieval_metrics, sts_metrics
from mrl.eval.text_sets import RetrievalSet, STSSet, load_beir, load_sts

# -- IR metrics worked by hand -------------------------------------------------------------------

# Five one-hot documents: a query's cosine with d_j is its j-th coordinate over its norm, so its
# ranking is the order of its coordinates.
HAND_DOCS = np.eye(5, dtype=np.float32)
HAND_QUERIES = np.array(
    [
        [0.5, 0.9, 0.1, 0.7, 0.3],  # q1 ranks d2 d4 d1 d5 d3
        [0.2, 0.4, 0.9, 0.6, 0.1],  # q2 ranks d3 d4 d2 d1 d5
        [0.3, 0.1, 0.2, 0.5, 0.95],  # q3 ranks d5 d4 d1 d3 d2
        [1.0, 0.0, 0.0, 0.0, 0.0],  # q4 has no relevant document: left out of every mean
    ],
    dtype=np.float32,
)
HAND_SET = RetrievalSet(
    name="hand",
    queries={f"q{i}": f"query {i}" for i in range(1, 5)},
    corpus={f"d{i}": f"document {i}" for i in range(1, 6)},
    qrels={
        "q1": {"d1": 2, "d4": 1, "d3": 0},
        "q2": {"d3": 1, "d5": 1},
        "q3": {"d2": 3},
        "q4": {"d1": 0},
    },
)
LOG2 = math.log2


def values(rows: list[dict]) -> dict[tuple[int, str], float]:
    return {(r["dim"], r["metric"]): r["value"] for r in rows}


def test_retrieval_metrics_worked_by_hand():
    # nDCG (trec_eval): gain = grade, discount 1/log2(rank + 1), over the ideal ordering's DCG.
    # q1: d4 (grade 1) at rank 2, d1 (grade 2) at rank 3:
    #     DCG = 1/log2(3) + 2/log2(4); ideal = 2/log2(2) + 1/log2(3)
    # q2: d3 at rank 1, d5 at rank 5: DCG = 1 + 1/log2(6); ideal = 1 + 1/log2(3)
    # q3: d2 (grade 3) at rank 5: DCG = 3/log2(6); ideal = 3
    ndcg = [
        (1 / LOG2(3) + 2 / LOG2(4)) / (2 + 1 / LOG2(3)),  # 0.61991
        (1 + 1 / LOG2(6)) / (1 + 1 / LOG2(3)),  # 0.85034
        (3 / LOG2(6)) / 3,  # 0.38685
    ]
    # Reciprocal rank of the first relevant document: ranks 2, 1, 5.
    mrr = [1 / 2, 1, 1 / 5]
    # AP: precision at each relevant document's rank, summed, over the number of relevant ones.
    # q1: (1/2 + 2/3) / 2; q2: (1/1 + 2/5) / 2; q3: (1/5) / 1
    ap = [(1 / 2 + 2 / 3) / 2, (1 + 2 / 5) / 2, 1 / 5]
    # Five documents, all retrieved within 100: every relevant one is found.
    recall = [1, 1, 1]
    got = values(retrieval_metrics(HAND_QUERIES, HAND_DOCS, HAND_SET, [5]))
    assert got == pytest.approx(
        {
            (5, "ndcg@10"): sum(ndcg) / 3,  # 0.61903
            (5, "mrr@10"): sum(mrr) / 3,  # 0.56667
            (5, "map@100"): sum(ap) / 3,  # 0.49444
            (5, "recall@100"): sum(recall) / 3,
        },
        abs=1e-6,
    )


def test_retrieval_metrics_worked_by_hand_at_cutoff_3():
    # Only ranks 1-3 count. q1 keeps both relevant documents (ranks 2, 3): as above.
    # q2 keeps d3 at rank 1 only: DCG@3 = 1, ideal@3 = 1 + 1/log2(3); AP@3 = (1/1) / 2;
    #     recall@3 = 1/2.
    # q3's only relevant document is at rank 5: 0 for everything, MRR@3 included (its reciprocal
    #     rank is 1/5 on the full run: the run is cut at 3 before recip_rank sees it).
    ndcg = [(1 / LOG2(3) + 2 / LOG2(4)) / (2 + 1 / LOG2(3)), 1 / (1 + 1 / LOG2(3)), 0]
    got = values(
        retrieval_metrics(
            HAND_QUERIES, HAND_DOCS, HAND_SET, [5], ndcg_k=3, mrr_k=3, map_k=3, recall_k=3
        )
    )
    assert got == pytest.approx(
        {
            (5, "ndcg@3"): sum(ndcg) / 3,  # 0.41102
            (5, "mrr@3"): (1 / 2 + 1 + 0) / 3,
            (5, "map@3"): ((1 / 2 + 2 / 3) / 2 + 1 / 2 + 0) / 3,  # 0.36111
            (5, "recall@3"): (1 + 1 / 2 + 0) / 3,
        },
        abs=1e-6,
    )


def test_identical_ids_can_be_left_out():
    # Document "q1" is query q1's own text: first with it, gone without it.
    docs = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], dtype=np.float32)
    retrieval_set = RetrievalSet(
        "self", {"q1": "a"}, {"q1": "a", "d2": "b", "d3": "c"}, {"q1": {"d2": 1}}
    )
    query = np.array([[1.0, 0.0]], dtype=np.float32)
    kept = values(retrieval_metrics(query, docs, retrieval_set, [2]))
    left_out = values(retrieval_metrics(query, docs, retrieval_set, [2], ignore_identical_ids=True))
    assert kept[(2, "mrr@10")] == pytest.approx(1 / 2)
    assert left_out[(2, "mrr@10")] == pytest.approx(1.0)


# -- the same numbers from sentence-transformers ---------------------------------------------------


def st_metrics(queries, corpus, relevant, query_emb, doc_emb):
    """sentence-transformers' `InformationRetrievalEvaluator` on given embeddings (its
    `embed_inputs` answers from them), cosine similarity."""
    from sentence_transformers.sentence_transformer.evaluation import (
        InformationRetrievalEvaluator,
    )
    from sentence_transformers.util import cos_sim

    rows = {t: torch.from_numpy(e) for t, e in zip(queries.values(), query_emb)}
    rows |= {t: torch.from_numpy(e) for t, e in zip(corpus.values(), doc_emb)}

    class Precomputed(InformationRetrievalEvaluator):
        def embed_inputs(self, model, sentences, **kwargs):
            return torch.stack([rows[s] for s in sentences])

    evaluator = Precomputed(
        queries, corpus, relevant, mrr_at_k=[10], ndcg_at_k=[10], map_at_k=[100],
        precision_recall_at_k=[100], score_functions={"cos": cos_sim}, write_csv=False,
    )  # fmt: skip
    scores = evaluator.compute_all_metrics(model=None)["cos"]
    return {
        "ndcg@10": scores["ndcg@k"][10],
        "mrr@10": scores["mrr@k"][10],
        "map@100": scores["map@k"][100],
        "recall@100": scores["recall@k"][100],
    }


def test_retrieval_metrics_match_sentence_transformers():
    rng = np.random.default_rng(0)
    n_q, n_docs, width = 40, 300, 32
    doc_emb = rng.standard_normal((n_docs, width)).astype(np.float32)
    corpus = {f"doc{j}": f"document {j}" for j in range(n_docs)}
    queries = {f"query{i}": f"query {i}" for i in range(n_q)}
    qrels, query_emb = {}, np.empty((n_q, width), dtype=np.float32)
    for i in range(n_q):
        relevant = rng.choice(n_docs, size=rng.integers(1, 5), replace=False)
        # Near some of its relevant documents, so the metrics are neither 0 nor 1.
        query_emb[i] = doc_emb[relevant].sum(0) + 2.0 * rng.standard_normal(width)
        qrels[f"query{i}"] = {f"doc{j}": 1 for j in relevant}
    qrels["query0"] = {}  # no relevant document: both leave it out
    retrieval_set = RetrievalSet("random", queries, corpus, qrels)
    dims = [4, 8, 16, 32]
    ours = values(retrieval_metrics(query_emb, doc_emb, retrieval_set, dims))
    relevant = {q: set(docs) for q, docs in qrels.items()}
    for m in dims:
        theirs = st_metrics(queries, corpus, relevant, query_emb[:, :m], doc_emb[:, :m])
        # MAP@k: sentence-transformers divides by min(k, relevant documents), trec_eval by the
        # relevant documents; with at most 4 of them and k = 100 the two agree.
        for metric, value in theirs.items():
            assert ours[(m, metric)] == pytest.approx(value, abs=1e-6), (m, metric)
    assert 0.02 < ours[(4, "ndcg@10")] < ours[(32, "ndcg@10")] < 1


# -- STS -------------------------------------------------------------------------------------------


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of distinct values."""
    out = np.empty(len(x))
    out[np.argsort(x)] = np.arange(len(x))
    return out


def prefix_cosines(a: np.ndarray, b: np.ndarray, m: int) -> np.ndarray:
    a = a[:, :m] / np.linalg.norm(a[:, :m], axis=1, keepdims=True)
    b = b[:, :m] / np.linalg.norm(b[:, :m], axis=1, keepdims=True)
    return (a * b).sum(1)


def sts_case(n: int = 50, width: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    emb1 = rng.standard_normal((n, width)).astype(np.float32)
    emb2 = (emb1 + rng.standard_normal((n, width))).astype(np.float32)
    gold = prefix_cosines(emb1, emb2, width) + 0.05 * rng.standard_normal(n)
    sts_set = STSSet("sts", [f"a{i}" for i in range(n)], [f"b{i}" for i in range(n)], gold)
    return emb1, emb2, sts_set


def test_sts_correlations_against_numpy():
    emb1, emb2, sts_set = sts_case()
    dims = [2, 4, 8, 16]
    got = values(sts_metrics(emb1, emb2, sts_set, dims))
    for m in dims:
        cosines = prefix_cosines(emb1, emb2, m)
        spearman = np.corrcoef(ranks(cosines), ranks(sts_set.scores))[0, 1]
        pearson = np.corrcoef(cosines, sts_set.scores)[0, 1]
        assert got[(m, "spearman")] == pytest.approx(spearman, abs=1e-6)
        assert got[(m, "pearson")] == pytest.approx(pearson, abs=1e-6)
    assert got[(2, "spearman")] < got[(16, "spearman")]


def test_sts_dim_m_sees_only_the_first_m_coordinates():
    emb1, emb2, sts_set = sts_case()
    base = values(sts_metrics(emb1, emb2, sts_set, [4, 16]))
    changed1, changed2 = emb1.copy(), emb2.copy()
    rng = np.random.default_rng(1)
    changed1[:, 4:] = rng.standard_normal(changed1[:, 4:].shape)
    changed2[:, 4:] *= 7.0
    after = values(sts_metrics(changed1, changed2, sts_set, [4, 16]))
    for metric in ("spearman", "pearson"):
        assert after[(4, metric)] == base[(4, metric)]
        assert after[(16, metric)] != base[(16, metric)]
    # Rescaling a whole row leaves every dim alone: each prefix is re-normalised.
    scaled = values(sts_metrics(emb1 * 4.0, emb2 * 0.5, sts_set, [4, 16]))
    assert scaled == pytest.approx(base, abs=1e-9)


# -- the BEIR reader -------------------------------------------------------------------------------


def write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def beir_folder(root: Path) -> Path:
    folder = root / "tiny"
    write_jsonl(folder / "corpus.jsonl", [
        {"_id": "d1", "title": "Cats", "text": "Cats purr."},
        {"_id": "d2", "title": "", "text": "Dogs bark."},
        {"_id": "d3", "title": "Birds", "text": "Birds sing."},
    ])  # fmt: skip
    write_jsonl(folder / "queries.jsonl", [
        {"_id": "q1", "text": "what purrs"},
        {"_id": "q2", "text": "what barks"},
        {"_id": "q3", "text": "judged, nothing relevant"},
        {"_id": "q4", "text": "not judged"},
    ])  # fmt: skip
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td3\t0\nq2\td2\t1\nq3\td3\t0\n"
    )
    return folder


def test_beir_reader(tmp_path):
    loaded = load_beir(beir_folder(tmp_path))
    assert loaded.name == "tiny"
    # Title and text joined by a space; an empty title adds nothing.
    assert loaded.corpus == {"d1": "Cats Cats purr.", "d2": "Dogs bark.", "d3": "Birds Birds sing."}
    # Queries without a relevant document (q3) or without judgements (q4) are dropped.
    assert loaded.queries == {"q1": "what purrs", "q2": "what barks"}
    assert loaded.qrels == {"q1": {"d1": 2, "d3": 0}, "q2": {"d2": 1}}
    assert load_beir(beir_folder(tmp_path / "other"), name="renamed").name == "renamed"


def corrupt(relative: str, content: str):
    return lambda folder: (folder / relative).write_text(content, encoding="utf-8")


def remove(relative: str):
    return lambda folder: (folder / relative).unlink()


BEIR_FAULTS = {
    "missing corpus": ("corpus.jsonl", remove("corpus.jsonl"),
                       "queries.jsonl and qrels/test.tsv"),
    "missing qrels": ("test.tsv", remove("qrels/test.tsv"), "corpus.jsonl, queries.jsonl"),
    "empty corpus": ("corpus.jsonl", corrupt("corpus.jsonl", "\n"), "empty"),
    "no _id": ("queries.jsonl", corrupt("queries.jsonl", '{"id": "q1", "text": "x"}\n'),
               "fields found: 'id', 'text'"),
    "no text": ("corpus.jsonl", corrupt("corpus.jsonl", '{"_id": "d1", "body": "x"}\n'),
                "fields found: '_id', 'body'"),
    "empty text": ("queries.jsonl", corrupt("queries.jsonl", '{"_id": "q1", "text": " "}\n'),
                   "empty 'text'"),
    "empty document": ("corpus.jsonl",
                       corrupt("corpus.jsonl", '{"_id": "d1", "title": "", "text": ""}\n'),
                       "empty 'text'"),
    "non-string text": ("corpus.jsonl", corrupt("corpus.jsonl", '{"_id": "d1", "text": 5}\n'),
                        "non-string 'text'"),
    "bad json": ("queries.jsonl",
                 corrupt("queries.jsonl", '{"_id": "q1", "text": "a"}\n{"_id": "q2", \n'),
                 "line 2 is not valid JSON"),
    "unknown document": ("test.tsv", corrupt("qrels/test.tsv", "query-id\tcorpus-id\tscore\n"
                                             "q1\td1\t1\nq1\td9\t1\n"), "document 'd9'"),
    "unknown query": ("test.tsv", corrupt("qrels/test.tsv", "query-id\tcorpus-id\tscore\n"
                                          "q9\td1\t1\n"), "query 'q9'"),
    "bad score": ("test.tsv", corrupt("qrels/test.tsv", "query-id\tcorpus-id\tscore\n"
                                      "q1\td1\thigh\n"), "line 2 has a non-integer score"),
    "no relevant": ("test.tsv", corrupt("qrels/test.tsv", "query-id\tcorpus-id\tscore\n"
                                        "q1\td1\t0\n"), "no query has a relevant document"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BEIR_FAULTS))
def test_bad_beir_files_give_one_line(tmp_path, case):
    file_name, damage, expected = BEIR_FAULTS[case]
    folder = beir_folder(tmp_path)
    damage(folder)
    with pytest.raises(ConfigError) as err:
        load_beir(folder)
    message = str(err.value)
    assert "\n" not in message and file_name in message and expected in message, message


# -- the STS reader ----------------------------------------------------------------------------


STS_ROWS = [("A man plays.", 'He said "hi', 4.5), ("A cat.", "A dog.", 1.0), ("x", "y", 0)]


def test_sts_reader_reads_csv_tsv_and_jsonl(tmp_path):
    import csv

    with open(tmp_path / "pairs.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("sentence1", "sentence2", "score"), *STS_ROWS])
    # An STS TSV's sentences hold unbalanced quotes: read verbatim.
    (tmp_path / "pairs.tsv").write_text(
        "score\tsentence1\tsentence2\n" + "".join(f"{c}\t{a}\t{b}\n" for a, b, c in STS_ROWS)
    )
    write_jsonl(tmp_path / "pairs.jsonl",
                [{"s1": a, "s2": b, "gold": c} for a, b, c in STS_ROWS])  # fmt: skip
    for loaded in (
        load_sts(tmp_path / "pairs.csv"),
        load_sts(tmp_path / "pairs.tsv", name="pairs"),
        load_sts(tmp_path / "pairs.jsonl", columns=("s1", "s2", "gold")),
    ):
        assert loaded.name == "pairs"
        assert loaded.sentence1 == [a for a, _, _ in STS_ROWS]
        assert loaded.sentence2 == [b for _, b, _ in STS_ROWS]
        assert loaded.scores.tolist() == [4.5, 1.0, 0.0]


STS_FAULTS = {
    "missing file": ("absent.csv", None, "no such file"),
    "empty file": ("pairs.csv", "", "empty"),
    "missing column": ("pairs.csv", "sentence1,sentence2,label\na,b,1\nc,d,2\n",
                       "no 'score' column (columns found: 'sentence1', 'sentence2', 'label')"),
    "jsonl missing field": ("pairs.jsonl", '{"sentence1": "a", "score": 1}\n',
                            "columns found: 'sentence1', 'score'"),
    "non-numeric score": ("pairs.csv", "sentence1,sentence2,score\na,b,1\nc,d,high\n",
                          "line 3 has a non-numeric score 'high'"),
    "empty sentence": ("pairs.tsv", "sentence1\tsentence2\tscore\na\t\t1\nc\td\t2\n",
                       "empty 'sentence2'"),
    "one row": ("pairs.csv", "sentence1,sentence2,score\na,b,1\n", "at least 2"),
    "bad json": ("pairs.jsonl", '{"sentence1": "a", "sentence2": "b", "score": 1}\nnot json\n',
                 "line 2 is not valid JSON"),
    "unknown suffix": ("pairs.txt", "sentence1,sentence2,score\n", ".csv, .tsv, .jsonl"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(STS_FAULTS))
def test_bad_sts_files_give_one_line(tmp_path, case):
    file_name, content, expected = STS_FAULTS[case]
    path = tmp_path / file_name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_sts(path)
    message = str(err.value)
    assert "\n" not in message and file_name in message and expected in message, message


# -- one pass over every set -------------------------------------------------------------------


class CountingEncoder:
    """Embeds each text as a fixed random vector (seeded by the text) and records every call."""

    def __init__(self, width: int = 16) -> None:
        self.width, self.calls = width, []

    def __call__(self, texts: list[str], role: str) -> np.ndarray:
        self.calls.append((list(texts), role))
        return np.stack([
            np.random.default_rng(zlib.crc32(t.encode())).standard_normal(self.width)
            for t in texts
        ]).astype(np.float32)  # fmt: skip


def test_evaluate_text_sets_encodes_each_set_once(tmp_path):
    beir = load_beir(beir_folder(tmp_path))
    _, _, sts = sts_case(n=20)
    encode = CountingEncoder()
    rows = evaluate_text_sets(encode, [beir, sts], dims=[16, 4, 8])
    assert encode.calls == [
        (list(beir.queries.values()), "query"),
        (list(beir.corpus.values()), "document"),
        (sts.sentence1 + sts.sentence2, "query"),
    ]
    assert {(r["set"], r["kind"]) for r in rows} == {("tiny", "retrieval"), ("sts", "sts")}
    assert len(rows) == 3 * 4 + 3 * 2
    assert json.loads(json.dumps(rows, allow_nan=False)) == rows  # plain Python values
    assert all(type(r["dim"]) is int and type(r["value"]) is float for r in rows)
    top = {(r["set"], r["metric"]): r["value"] for r in rows if r["dim"] == 16}
    for r in rows:
        full = top[(r["set"], r["metric"])]
        expected = 100.0 if r["dim"] == 16 else 100.0 * r["value"] / full if full else None
        assert r["retention"] == pytest.approx(expected), r
    # The same numbers as each set's metrics on the embeddings computed apart.
    sts_emb = encode(sts.sentence1 + sts.sentence2, "query")
    alone = sts_metrics(sts_emb[:20], sts_emb[20:], sts, [4, 8, 16])
    assert [(r["dim"], r["metric"], r["value"]) for r in rows if r["set"] == "sts"] == [
        (r["dim"], r["metric"], r["value"]) for r in alone
    ]


def test_evaluate_text_sets_refuses_bad_dims_and_repeated_names():
    _, _, sts = sts_case(n=10)
    with pytest.raises(ConfigError, match="dims: 32 exceeds the embeddings' width 16"):
        evaluate_text_sets(CountingEncoder(16), [sts], dims=[8, 32])
    with pytest.raises(ConfigError, match="two sets are named 'sts'"):
        evaluate_text_sets(CountingEncoder(16), [sts, sts], dims=[8])
