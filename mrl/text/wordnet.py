"""A reader for the WordNet 3.0 database files and the text tasks built on them.

`load_synsets` parses the `data.noun` / `data.verb` / `data.adj` / `data.adv` files (as installed by
Debian's `wordnet-base` under `/usr/share/wordnet`) into `Synset` records; `LEXNAMES` is the table
of the 45 lexicographer files (index = the `lex_filenum` field of a data line). On top of them:

- `split_synsets`: seeded train/validation/test splits that are disjoint by synset;
- `category_task`: definition -> lexicographer category (for nouns the 26 `noun.*` files);
- `reverse_dictionary`: query = a synset's definition, relevant = its lemmas. The database holds
  the lemmas of the synsets passed in (in practice one split's synsets, so every query has
  its answers in the database and no train lemma leaks into test). Each (synset, lemma) is one
  database row labelled with the synset's index, so a lemma string shared by several synsets gives
  several rows and "same label" means "same synset".

Queries and classification inputs use the definition only: the usage examples WordNet appends to
a gloss (`; "the dog barked all night"`) often contain the lemma itself, which would leak the
answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from mrl.core.errors import ConfigError, DataNotFoundError

DEFAULT_ROOT = "/usr/share/wordnet"

# lexnames(5WN): the lexicographer file names, indexed by their two-digit file number.
LEXNAMES: tuple[str, ...] = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather",
    "adj.ppl",
)  # fmt: skip

# Part of speech letter -> data file, and the lexname prefix of its categories.
POS_FILES = {"n": "data.noun", "v": "data.verb", "a": "data.adj", "r": "data.adv"}
_POS_PREFIX = {"n": "noun.", "v": "verb.", "a": "adj.", "r": "adv."}
# An adjective's syntactic marker: (a) attributive, (p) predicative, (ip) immediately postnominal.
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")
# Usage examples start at the first double quote that opens the gloss or follows a semicolon.
_EXAMPLES_START = re.compile(r'(?:^|;)\s*"')


@dataclass(frozen=True)
class Synset:
    """One WordNet synset.

    `offset` is the byte offset of its line in its data file (unique within a part of speech);
    `pos` the synset type (`n`, `v`, `a`, `s` for adjective satellites, `r`); `lexname` its
    lexicographer file, e.g. `noun.animal`; `lemmas` its words in file order with `_` turned into
    spaces and adjective markers removed; `gloss` the full gloss (definition and examples).
    """

    offset: int
    pos: str
    lexname: str
    lemmas: tuple[str, ...]
    gloss: str

    @property
    def wnid(self) -> str:
        """The ImageNet-style id, part of speech then the 8-digit offset, e.g. `n02084071`."""
        return f"{self.pos}{self.offset:08d}"

    @property
    def definition(self) -> str:
        """The gloss without its usage examples."""
        match = _EXAMPLES_START.search(self.gloss)
        return (self.gloss if match is None else self.gloss[: match.start()]).strip(" ;")

    @property
    def examples(self) -> tuple[str, ...]:
        """The quoted usage examples of the gloss."""
        match = _EXAMPLES_START.search(self.gloss)
        if match is None:
            return ()
        return tuple(re.findall(r'"([^"]*)"', self.gloss[match.start() :]))


def categories(pos: tuple[str, ...] | list[str] = ("n",)) -> tuple[str, ...]:
    """The lexicographer categories of the given parts of speech, in file-number order.

    `("n",)` gives the 26 `noun.*` files; class index i of `category_task` is entry i.
    """
    prefixes = tuple(_POS_PREFIX[p] for p in _check_pos(pos))
    return tuple(name for name in LEXNAMES if name.startswith(prefixes))


def _check_pos(pos: tuple[str, ...] | list[str] | str) -> tuple[str, ...]:
    pos = (pos,) if isinstance(pos, str) else tuple(pos)
    bad = [p for p in pos if p not in POS_FILES]
    if not pos or bad:
        raise ConfigError(
            f"WordNet part of speech {bad or pos!r} is not one of {sorted(POS_FILES)} "
            f"(n noun, v verb, a adjective, r adverb)"
        )
    return pos


def check_wordnet(root: str | Path = DEFAULT_ROOT, pos: tuple[str, ...] = ("n",)) -> None:
    """Raise `DataNotFoundError` (one line naming the fix) unless the data files exist."""
    for p in _check_pos(pos):
        path = Path(root) / POS_FILES[p]
        if not path.is_file():
            raise DataNotFoundError(
                f"WordNet file {path} not found: install it with `sudo apt-get install "
                f"wordnet-base`, or pass root= (data.root=) a directory holding the WordNet 3.0 "
                f"data.* files"
            )


def parse_data_line(line: str, lexnames: tuple[str, ...] = LEXNAMES) -> Synset:
    """Parse one line of a WordNet `data.*` file (see wndb(5WN)).

    `synset_offset lex_filenum ss_type w_cnt word lex_id [word lex_id...] p_cnt [ptr...]
    [frames...] | gloss`, where `w_cnt` is two hexadecimal digits.
    """
    head, _, gloss = line.partition(" | ")
    fields = head.split()
    offset, lex_filenum, ss_type = int(fields[0]), int(fields[1]), fields[2]
    w_cnt = int(fields[3], 16)
    words = fields[4 : 4 + 2 * w_cnt : 2]
    lemmas = tuple(_ADJ_MARKER.sub("", w).replace("_", " ") for w in words)
    return Synset(offset, ss_type, lexnames[lex_filenum], lemmas, gloss.strip())


@lru_cache(maxsize=8)
def _load(root: str, pos: tuple[str, ...]) -> tuple[Synset, ...]:
    check_wordnet(root, pos)
    synsets: list[Synset] = []
    for p in pos:
        with open(Path(root) / POS_FILES[p], encoding="utf-8") as f:
            # Lines of the license header start with two spaces; synset lines with a digit.
            synsets.extend(parse_data_line(line) for line in f if line[:1].isdigit())
    return tuple(synsets)


def load_synsets(
    root: str | Path = DEFAULT_ROOT, pos: tuple[str, ...] | list[str] = ("n",)
) -> list[Synset]:
    """All synsets of the given parts of speech, in file order (parsed once per process).

    Raises `DataNotFoundError` naming `apt-get install wordnet-base` and the `root=` override
    when a data file is absent.
    """
    return list(_load(str(root), _check_pos(pos)))


def split_synsets(
    synsets: list[Synset], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[Synset]]:
    """Seeded `train` / `val` / `test` splits of `synsets`, disjoint by synset.

    The split depends only on the synset ids, the fractions and `seed` (not on the input order),
    and each split keeps the sorted-id order.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(
            f"need 0 <= val_fraction, test_fraction and val_fraction + test_fraction < 1, got "
            f"{val_fraction} and {test_fraction}"
        )
    ordered = sorted(synsets, key=lambda s: s.wnid)
    n = len(ordered)
    perm = np.random.default_rng(seed).permutation(n)
    n_val, n_test = round(val_fraction * n), round(test_fraction * n)
    parts = {
        "test": perm[:n_test],
        "val": perm[n_test : n_test + n_val],
        "train": perm[n_test + n_val :],
    }
    return {name: [ordered[i] for i in np.sort(idx)] for name, idx in parts.items()}


def seeded_subset(items: list, limit: int | None, seed: int) -> list:
    """A seeded random subset of at most `limit` items, in their original order."""
    if limit is None or limit >= len(items):
        return list(items)
    keep = np.sort(np.random.default_rng(seed).permutation(len(items))[:limit])
    return [items[i] for i in keep]


def category_task(
    synsets: list[Synset], pos: tuple[str, ...] = ("n",)
) -> tuple[list[str], np.ndarray]:
    """Definitions and their lexicographer category index (into `categories(pos)`)."""
    index = {name: i for i, name in enumerate(categories(pos))}
    try:
        labels = np.array([index[s.lexname] for s in synsets], dtype=np.int64)
    except KeyError as err:
        raise ConfigError(f"synset category {err} is not among the categories of {pos}") from None
    return [s.definition for s in synsets], labels


@dataclass(frozen=True)
class ReverseDictionary:
    """Queries (definitions) and a database (lemmas), labelled by synset index."""

    queries: list[str]
    query_labels: np.ndarray
    database: list[str]
    database_labels: np.ndarray


def reverse_dictionary(synsets: list[Synset]) -> ReverseDictionary:
    """Definition -> lemma retrieval over `synsets`: label i is `synsets[i]` for both sides."""
    database = [lemma for s in synsets for lemma in s.lemmas]
    database_labels = np.repeat(np.arange(len(synsets)), [len(s.lemmas) for s in synsets])
    return ReverseDictionary(
        queries=[s.definition for s in synsets],
        query_labels=np.arange(len(synsets), dtype=np.int64),
        database=database,
        database_labels=database_labels.astype(np.int64),
    )
