"""Text evaluation sets read from the standard formats: BEIR retrieval folders and STS pair files.

A BEIR folder holds `corpus.jsonl` (rows `{"_id", "title", "text"}`), `queries.jsonl` (rows
`{"_id", "text"}`) and `qrels/<split>.tsv` (columns `query-id`, `corpus-id`, `score` under a
header row). An STS file is a CSV, a TSV (suffix `.tsv`) or a JSONL file with two sentence
columns and a numeric score column.

Every unusable file raises `DataError` (a `ConfigError`), a missing one `ConfigError`: one line
naming the file and the problem.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mrl.core.errors import ConfigError, DataError

BEIR_LAYOUT = "corpus.jsonl, queries.jsonl and qrels/<split>.tsv"
STS_SUFFIXES = (".csv", ".tsv", ".jsonl")


@dataclass
class RetrievalSet:
    """Queries, a corpus and graded relevance judgements (`qrels[query_id][doc_id] = grade`)."""

    name: str
    queries: dict[str, str]
    corpus: dict[str, str]
    qrels: dict[str, dict[str, int]]


@dataclass
class STSSet:
    """Sentence pairs with gold similarity scores (`scores[i]` rates the i-th pair)."""

    name: str
    sentence1: list[str]
    sentence2: list[str]
    scores: np.ndarray


# -- reading lines -----------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    """The file's text; a missing, unreadable, non-UTF-8 or blank file is an error."""
    try:
        # utf-8-sig drops the byte-order mark that spreadsheet programs write first.
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise DataError(f"{path}: {err.strerror or err}") from None
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    return text


def _text_lines(path: Path) -> list[str]:
    """The file's lines, split at newlines only (JSON strings may hold other line separators)."""
    return [line.rstrip("\r") for line in _read_text(path).split("\n")]


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """`(line number, object)` for each non-blank line of a JSON-lines file."""
    for number, line in enumerate(_text_lines(path), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: line {number} is not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}: line {number} is not a JSON object")
        yield number, row


def _short(value: Any, limit: int = 60) -> str:
    """`repr(value)`, cut to `limit` characters (an error line quotes it)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _field(path: Path, number: int, row: dict[str, Any], key: str) -> Any:
    if key not in row:
        found = ", ".join(map(repr, row)) or "none"
        raise DataError(f"{path}: line {number} has no {key!r} field (fields found: {found})")
    return row[key]


def _identifier(path: Path, number: int, row: dict[str, Any]) -> str:
    value = _field(path, number, row, "_id")
    # JSON writers sometimes store numeric ids as numbers; the qrels name them as text.
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
        raise DataError(f"{path}: line {number} has an empty or non-text '_id': {_short(value)}")
    return str(value)


def _string(path: Path, number: int, value: Any, what: str, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        kind = "non-string" if not isinstance(value, str) else "empty"
        raise DataError(f"{path}: line {number} has {kind} {what}: {_short(value)}")
    return value


# -- BEIR ----------------------------------------------------------------------------------------


def _id_texts(path: Path, document: bool) -> dict[str, str]:
    """id -> text of a BEIR corpus or queries file (a document's text is its title and text)."""
    out: dict[str, str] = {}
    for number, row in _jsonl_rows(path):
        key = _identifier(path, number, row)
        text = _field(path, number, row, "text")
        if document:
            title = row.get("title") or ""
            _string(path, number, title, "'title'", allow_empty=True)
            # Some corpora hold title-only documents; the two together must say something.
            text = _string(path, number, text, "'text'", allow_empty=bool(title.strip()))
            # As BEIR's own evaluation embeds a document: title, one space, text, stripped.
            text = f"{title} {text}".strip()
        else:
            text = _string(path, number, text, "'text'")
        if key in out:
            raise DataError(f"{path}: line {number} repeats the '_id' {key!r}")
        out[key] = text
    return out


def _qrels(path: Path) -> dict[str, dict[str, tuple[int, int]]]:
    """query id -> doc id -> (grade, line number) of a BEIR qrels TSV."""
    out: dict[str, dict[str, tuple[int, int]]] = {}
    rows = [(n, line) for n, line in enumerate(_text_lines(path), start=1) if line.strip()]
    for position, (number, line) in enumerate(rows):
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) < 3:
            raise DataError(f"{path}: line {number} has {len(fields)} tab-separated fields, "
                            f"expected 3 (query-id, corpus-id, score)")  # fmt: skip
        query, doc, grade = fields[:3]
        try:
            value = int(grade)
        except ValueError:
            if position == 0:
                continue  # the header row
            raise DataError(f"{path}: line {number} has a non-integer score {grade!r}") from None
        out.setdefault(query, {})[doc] = (value, number)
    if not out:
        raise DataError(f"{path}: no judgement rows under the header")
    return out


def _check_known(path: Path, qrels, queries: dict[str, str], corpus: dict[str, str]) -> None:
    for query, docs in qrels.items():
        for doc, (_, number) in docs.items():
            if query not in queries:
                raise DataError(f"{path}: line {number} names query {query!r}, which "
                                f"queries.jsonl does not hold")  # fmt: skip
            if doc not in corpus:
                raise DataError(f"{path}: line {number} names document {doc!r}, which "
                                f"corpus.jsonl does not hold")  # fmt: skip


def _beir_file(folder: Path, relative: str, split: str) -> Path:
    path = folder / relative
    if not path.is_file():
        layout = BEIR_LAYOUT.replace("<split>", split)
        raise ConfigError(f"{path}: no such file; a BEIR folder holds {layout}")
    return path


def load_beir(
    folder: str | os.PathLike[str], split: str = "test", name: str | None = None
) -> RetrievalSet:
    """The BEIR folder's `split` as a `RetrievalSet` named `name` (default: the folder's name).

    Only queries with at least one judgement of grade > 0 are kept (with all their judgements):
    any other query would score 0 whatever the model. The corpus is kept whole.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder; a BEIR folder holds "
                          f"{BEIR_LAYOUT.replace('<split>', split)}")  # fmt: skip
    paths = [_beir_file(folder, f, split) for f in ("corpus.jsonl", "queries.jsonl")]
    qrels_path = _beir_file(folder, f"qrels/{split}.tsv", split)
    corpus = _id_texts(paths[0], document=True)
    queries = _id_texts(paths[1], document=False)
    judged = _qrels(qrels_path)
    _check_known(qrels_path, judged, queries, corpus)
    qrels = {
        q: {d: grade for d, (grade, _) in docs.items()}
        for q, docs in judged.items()
        if any(grade > 0 for grade, _ in docs.values())
    }
    if not qrels:
        raise DataError(f"{qrels_path}: no query has a relevant document (score > 0)")
    return RetrievalSet(
        name=name or folder.resolve().name,
        queries={q: text for q, text in queries.items() if q in qrels},
        corpus=corpus,
        qrels=qrels,
    )


# -- STS -----------------------------------------------------------------------------------------


def _table_rows(path: Path, columns: Sequence[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """`(line number, row)` of a CSV or TSV file whose header row names `columns`."""
    text = io.StringIO(_read_text(path), newline="")
    if path.suffix.lower() == ".tsv":
        # STS TSV files carry unbalanced quotes inside sentences: read them verbatim.
        reader = csv.DictReader(text, delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.DictReader(text)
    try:
        header = [c for c in reader.fieldnames or [] if c is not None]
        for column in columns:
            if column not in header:
                found = ", ".join(map(repr, header)) or "none"
                raise DataError(f"{path}: the header has no {column!r} column "
                                f"(columns found: {found})")  # fmt: skip
        for row in reader:
            if any(v.strip() for v in row.values() if isinstance(v, str)):
                yield reader.line_num, row
    except csv.Error as err:
        raise DataError(f"{path}: line {reader.line_num} is not valid CSV ({err})") from None


def _score(path: Path, number: int, value: Any) -> float:
    try:
        if isinstance(value, bool):
            raise TypeError
        score = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{path}: line {number} has a non-numeric score {_short(value)}") from None
    if not math.isfinite(score):
        raise DataError(f"{path}: line {number} has a non-finite score {_short(value)}")
    return score


def load_sts(
    path: str | os.PathLike[str],
    name: str | None = None,
    columns: Sequence[str] = ("sentence1", "sentence2", "score"),
) -> STSSet:
    """The sentence pairs and scores of a CSV, TSV (`.tsv`) or JSONL (`.jsonl`) file as an
    `STSSet` named `name` (default: the file's stem); `columns` names the first sentence's,
    the second sentence's and the score's column."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in STS_SUFFIXES:
        raise ConfigError(f"{path}: an STS file must end in {', '.join(STS_SUFFIXES)}")
    first, second, gold = columns
    rows = _jsonl_rows(path) if suffix == ".jsonl" else _table_rows(path, columns)
    left, right, scores = [], [], []
    for number, row in rows:
        for column in columns:
            if row.get(column) is None:
                found = ", ".join(repr(k) for k in row if k is not None) or "none"
                raise DataError(f"{path}: line {number} has no value for {column!r} "
                                f"(columns found: {found})")  # fmt: skip
        left.append(_string(path, number, row[first], repr(first)))
        right.append(_string(path, number, row[second], repr(second)))
        scores.append(_score(path, number, row[gold]))
    if len(scores) < 2:
        raise DataError(f"{path}: {len(scores)} sentence pair(s); a correlation needs at least 2")
    return STSSet(
        name=name or path.stem,
        sentence1=left,
        sentence2=right,
        scores=np.asarray(scores, dtype=np.float64),
    )
