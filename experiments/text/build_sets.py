"""Build a text training set and held-out evaluation sets from data that ships with Debian.

    python experiments/text/build_sets.py [--out outputs/text_sets] [--train-size 8000]

Writes, under `--out` (default `$MRL_OUTPUT_ROOT/text_sets`, else `outputs/text_sets`):

- `debian/train.jsonl`: (anchor, positive) rows, a package's one-line summary and the first
  paragraph of its long description, from Debian's package descriptions (`Translation-en` of
  the apt lists; `apt-get update` fetches it). `debian/train_hard.jsonl`: the same rows with a
  third column, the description of another training package of the same archive section (a
  hard negative).
- `debian/beir/`: the held-out packages as a BEIR folder (summary -> description), the
  training domain's own test set.
- `gcide/beir/`: general English from the GNU Collaborative International Dictionary
  (`dict-gcide`): a word -> its first definition, a domain not trained on.
- `wordnet_rd/beir/`: WordNet's reverse dictionary (definition -> lemma) of the package's own
  test split, as `mrl-train-text`'s WordNet task evaluates it.
- `wordnet_wup/sts.tsv`: pairs of WordNet nouns scored by the Wu-Palmer similarity of their
  synsets in the noun taxonomy: a graded word-similarity set (a taxonomy's judgement, not a
  human one).

Splits are by Debian source package (a seeded hash), so no source's binary packages sit on both
sides; within the data, duplicate summaries or descriptions are dropped. Every choice is seeded
by `--seed`; a rerun writes the same files. A `manifest.json` records the sizes and sources.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

APT_LISTS = Path("/var/lib/apt/lists")
GCIDE = Path("/usr/share/dictd")
WORDNET = Path(os.environ.get("MRL_WORDNET_ROOT", "/usr/share/wordnet"))
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def fail(message: str) -> None:
    print(f"build_sets: {message}", file=sys.stderr)
    raise SystemExit(2)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def write_beir(folder: Path, queries: dict[str, str], corpus: dict[str, str],
               qrels: dict[str, str]) -> None:  # fmt: skip
    """A BEIR folder: one relevant document per query (`qrels[qid] = doc id`)."""
    write_jsonl(folder / "corpus.jsonl", [{"_id": k, "title": "", "text": v}
                                          for k, v in corpus.items()])  # fmt: skip
    write_jsonl(folder / "queries.jsonl", [{"_id": k, "text": v} for k, v in queries.items()])
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    lines = ["query-id\tcorpus-id\tscore", *(f"{q}\t{d}\t1" for q, d in qrels.items())]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


# --- Debian package descriptions -------------------------------------------------------------


def stanzas(text: str):
    for block in text.split("\n\n"):
        fields, key = {}, None
        for line in block.splitlines():
            if line.startswith(" ") and key:
                fields[key] += "\n" + line
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields:
            yield fields


def read_translation() -> str:
    files = sorted(APT_LISTS.glob("*_debian_dists_*_main_i18n_Translation-en*"))
    files = [f for f in files if "security" not in f.name and "updates" not in f.name]
    if not files:
        fail(f"no Translation-en under {APT_LISTS}: run 'apt-get update -o Acquire::Languages=en'")
    out = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", str(files[0])],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout


def package_fields() -> dict[str, tuple[str, str]]:
    """Package -> (source, section) from `apt-cache dumpavail`."""
    out = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True)
    fields = {}
    for st in stanzas(out.stdout):
        name = st.get("Package")
        if name:
            source = st.get("Source", name).split(" ")[0]
            fields[name] = (source, st.get("Section", "misc").split("/")[-1])
    return fields


def first_paragraph(long: str) -> str:
    lines = []
    for line in long.splitlines()[1:]:
        if line.strip() == ".":
            break
        lines.append(line.strip())
    return re.sub(r"\s+", " ", " ".join(lines)).strip()


def split_of(source: str, seed: int) -> str:
    bucket = int(hashlib.sha1(f"{seed}:{source}".encode()).hexdigest(), 16) % 20
    return "test" if bucket == 0 else "dev" if bucket == 1 else "train"


def debian_rows(seed: int) -> dict[str, list[dict]]:
    """One (summary, description, section) row per source package, by split."""
    fields = package_fields()
    by_source: dict[str, dict] = {}
    for st in stanzas(read_translation()):
        name, desc = st.get("Package"), st.get("Description-en")
        if not name or not desc:
            continue
        summary = desc.splitlines()[0].strip()
        body = first_paragraph(desc)
        if len(summary.split()) < 3 or len(body.split()) < 8:
            continue
        source, section = fields.get(name, (name, "misc"))
        # The package named like its source first, then by name: a stable choice per source.
        key = (name != source, name)
        if source not in by_source or key < by_source[source]["key"]:
            by_source[source] = {"key": key, "anchor": summary, "positive": body,
                                 "section": section, "source": source}  # fmt: skip
    counts: dict[str, int] = defaultdict(int)
    for row in by_source.values():
        counts[row["anchor"].lower()] += 1
        counts[row["positive"].lower()] += 1
    splits: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    for source in sorted(by_source):
        row = by_source[source]
        if counts[row["anchor"].lower()] == 1 and counts[row["positive"].lower()] == 1:
            splits[split_of(source, seed)].append(row)
    return splits


def hard_negatives(rows: list[dict], seed: int) -> list[dict]:
    """Each row with the description of another row of the same section (seeded draw)."""
    rng = np.random.default_rng(seed)
    by_section = defaultdict(list)
    for i, row in enumerate(rows):
        by_section[row["section"]].append(i)
    out = []
    for i, row in enumerate(rows):
        pool = by_section[row["section"]]
        if len(pool) < 2:
            pool = range(len(rows))
        j = i
        while j == i:
            j = pool[int(rng.integers(len(pool)))]
        out.append({"anchor": row["anchor"], "positive": row["positive"],
                    "negative": rows[j]["positive"]})  # fmt: skip
    return out


# --- GCIDE ----------------------------------------------------------------------------------


def b64(text: str) -> int:
    value = 0
    for char in text:
        value = value * 64 + B64.index(char)
    return value


def gcide_definition(entry: str, word: str) -> str | None:
    """The first definition of a GCIDE entry for `word`, or None when the entry is another
    word's (an inflection pointing to its lemma), a cross-reference, or too short."""
    head = entry.lstrip().split(" \\", 1)[0]
    if head.lower() != word.lower():
        return None
    block = entry.split("[1913 Webster]")[0].split("[PJC]")[0]
    text = re.sub(r"\s+", " ", block).strip()
    text = text.split("\\", 2)[-1]  # after the pronunciation "\Word\"
    text = re.sub(r"\[[^\]]*\]", " ", text)  # etymology and inflections
    text = re.sub(r"^[,\s]*(\([^)]*\)[,\s]*)?", "", text)  # a second pronunciation
    text = re.sub(r"^[,\s]*((n|v|a|adv|pl|prep|conj|interj|t|i|p|pr|imp)\.[,\s]*)+", "", text)
    text = re.sub(r"^\s*(1\.|\([^)]*\))\s*", "", text).replace("{", "").replace("}", "")
    text = re.sub(r"\s+", " ", text).strip(" ;,")
    if len(text.split()) < 5 or re.match(r"(Same as|See|Alt\. of|Obs\.|pl\. of)", text):
        return None
    return text


def gcide_set(seed: int, queries: int, corpus: int) -> tuple[dict, dict, dict]:
    index = GCIDE / "gcide.index"
    if not index.exists():
        fail(f"{index} is missing: apt-get install dict-gcide")
    data = gzip.open(GCIDE / "gcide.dict.dz").read()
    seen, words = set(), []
    for line in index.read_text(encoding="utf-8").splitlines():
        word, offset, length = line.split("\t")[:3]
        if not re.fullmatch(r"[a-z]{4,}", word) or word in seen:
            continue
        seen.add(word)
        entry = data[b64(offset) : b64(offset) + b64(length)].decode("utf-8", "replace")
        definition = gcide_definition(entry, word)
        if definition:
            words.append((word, definition))
    rng = np.random.default_rng(seed)
    chosen = [words[i] for i in sorted(rng.choice(len(words), size=min(corpus, len(words)),
                                                  replace=False))]  # fmt: skip
    docs = {f"d{i}": d for i, (_, d) in enumerate(chosen)}
    picked = sorted(rng.choice(len(chosen), size=min(queries, len(chosen)), replace=False))
    qs = {f"q{i}": chosen[i][0] for i in picked}
    return qs, docs, {f"q{i}": f"d{i}" for i in picked}


# --- WordNet --------------------------------------------------------------------------------


def wordnet_taxonomy() -> tuple[dict[str, list[str]], dict[str, str]]:
    """Noun synset offset -> hypernym offsets (`@` and `@i`), and -> its first one-word lemma."""
    path = WORDNET / "data.noun"
    if not path.exists():
        fail(f"{path} is missing: apt-get install wordnet-base")
    parents, lemma = {}, {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(" "):
            continue
        parts = line.split(" | ")[0].split()
        offset, n_words = parts[0], int(parts[3], 16)
        words = parts[4 : 4 + 2 * n_words : 2]
        rest = parts[4 + 2 * n_words :]
        n_ptr = int(rest[0])
        ptrs = [rest[1 + 4 * i : 5 + 4 * i] for i in range(n_ptr)]
        parents[offset] = [p[1] for p in ptrs if p[0] in ("@", "@i") and p[2] == "n"]
        one_word = [w.lower() for w in words if re.fullmatch(r"[A-Za-z]+", w)]
        if one_word:
            lemma[offset] = one_word[0]
    return parents, lemma


def ancestors(offset: str, parents: dict[str, list[str]]) -> dict[str, int]:
    """Every ancestor (itself included) with its shortest distance from `offset`."""
    dist, frontier = {offset: 0}, [offset]
    while frontier:
        nxt = []
        for node in frontier:
            for parent in parents.get(node, []):
                if parent not in dist:
                    dist[parent] = dist[node] + 1
                    nxt.append(parent)
        frontier = nxt
    return dist


def wu_palmer(a: str, b: str, parents: dict[str, list[str]], depth: dict[str, int]) -> float:
    """2 depth(lcs) / (depth(a) + depth(b)) with depths through the lowest common subsumer."""
    da, db = ancestors(a, parents), ancestors(b, parents)
    common = set(da) & set(db)
    if not common:
        return 0.0
    lcs = max(common, key=lambda c: (depth[c], -da[c] - db[c]))
    d = depth[lcs]
    return 2.0 * d / (da[lcs] + d + db[lcs] + d)


def wordnet_wup_set(seed: int, pairs: int) -> list[tuple[str, str, float]]:
    parents, lemma = wordnet_taxonomy()
    depth_cache: dict[str, int] = {}

    def depth(node: str) -> int:  # 1 + the longest path to a root, as WordNet's depths count
        if node not in depth_cache:
            ps = parents.get(node, [])
            depth_cache[node] = 1 + (max(depth(p) for p in ps) if ps else 0)
        return depth_cache[node]

    sys.setrecursionlimit(10_000)
    for node in parents:
        depth(node)
    rng = np.random.default_rng(seed)
    nodes = sorted(lemma)
    children = defaultdict(list)
    for node, ps in parents.items():
        for p in ps:
            children[p].append(node)
    out, seen = [], set()
    while len(out) < pairs:
        a = nodes[int(rng.integers(len(nodes)))]
        kind = len(out) % 3  # thirds: a random noun, a noun up to 2 and up to 4 steps away
        if kind == 0:
            b = nodes[int(rng.integers(len(nodes)))]
        else:
            b = a
            for _ in range(int(rng.integers(1, 3 if kind == 1 else 5)) * 2):
                options = parents.get(b, []) + children.get(b, [])
                if not options:
                    break
                b = options[int(rng.integers(len(options)))]
        if b not in lemma or a == b or lemma[a] == lemma[b]:
            continue
        key = tuple(sorted((lemma[a], lemma[b])))
        if key in seen:
            continue
        seen.add(key)
        out.append((lemma[a], lemma[b], round(wu_palmer(a, b, parents, depth_cache), 6)))
    return out


def wordnet_rd_set(seed: int, limit: int) -> tuple[dict, dict, object]:
    """The reverse dictionary (definition -> lemma) of `mrl-train-text`'s WordNet test split
    with `data.limit_test=limit`, as its contrastive task evaluates it."""
    from mrl.text.data import WordNetPairsDataModule
    from mrl.text.wordnet import reverse_dictionary

    data = WordNetPairsDataModule(root=str(WORDNET), limit_test=limit, seed=seed)
    rd = reverse_dictionary(data.split("test"))
    docs = {f"d{i}": t for i, t in enumerate(rd.database)}
    queries = {f"q{i}": t for i, t in enumerate(rd.queries)}
    return queries, docs, rd


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_root = Path(os.environ.get("MRL_OUTPUT_ROOT", "outputs"))
    parser.add_argument("--out", type=Path, default=default_root / "text_sets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-size", type=int, default=8000,
                        help="training rows kept (seeded draw); 0 = all")  # fmt: skip
    parser.add_argument("--test-queries", type=int, default=1000)
    parser.add_argument("--gcide-corpus", type=int, default=5000)
    parser.add_argument("--wup-pairs", type=int, default=1000)
    parser.add_argument(
        "--wordnet-queries",
        type=int,
        default=2000,
        help="WordNet test synsets kept (data.limit_test of the WordNet task)",
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    manifest: dict = {"seed": args.seed, "sets": {}}

    splits = debian_rows(args.seed)
    rng = np.random.default_rng(args.seed)
    train = splits["train"]
    if args.train_size and args.train_size < len(train):
        train = [train[i] for i in sorted(rng.choice(len(train), args.train_size, replace=False))]
    write_jsonl(out / "debian" / "train.jsonl",
                [{"anchor": r["anchor"], "positive": r["positive"]} for r in train])  # fmt: skip
    write_jsonl(out / "debian" / "train_hard.jsonl", hard_negatives(train, args.seed))
    test = splits["test"]
    picked = sorted(rng.choice(len(test), size=min(args.test_queries, len(test)), replace=False))
    write_beir(out / "debian" / "beir",
               {f"q{i}": test[i]["anchor"] for i in picked},
               {f"d{i}": r["positive"] for i, r in enumerate(test)},
               {f"q{i}": f"d{i}" for i in picked})  # fmt: skip
    manifest["sets"]["debian"] = {
        "source": "Debian bookworm main Translation-en (package summary -> first paragraph)",
        "train_rows": len(train), "train_sources_available": len(splits["train"]),
        "test_queries": len(picked), "test_corpus": len(test),
    }  # fmt: skip
    print(f"debian: {len(train)} training pairs, {len(picked)} test queries over {len(test)}")

    queries, docs, qrels = gcide_set(args.seed, args.test_queries, args.gcide_corpus)
    write_beir(out / "gcide" / "beir", queries, docs, qrels)
    manifest["sets"]["gcide"] = {"source": "dict-gcide (word -> first definition)",
                                 "queries": len(queries), "corpus": len(docs)}  # fmt: skip
    print(f"gcide: {len(queries)} queries over {len(docs)} definitions")

    queries, docs, rd = wordnet_rd_set(args.seed, args.wordnet_queries)
    lemma_ids = {}
    for i, _ in enumerate(rd.database):
        lemma_ids.setdefault(int(rd.database_labels[i]), []).append(f"d{i}")
    (out / "wordnet_rd" / "beir" / "qrels").mkdir(parents=True, exist_ok=True)
    write_beir(out / "wordnet_rd" / "beir", queries, docs, {})
    lines = ["query-id\tcorpus-id\tscore"]
    for i, label in enumerate(rd.query_labels.tolist()):
        lines += [f"q{i}\t{d}\t1" for d in lemma_ids.get(int(label), [])]
    (out / "wordnet_rd" / "beir" / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    manifest["sets"]["wordnet_rd"] = {"source": "WordNet 3.0 nouns, the WordNet task's test split",
                                      "queries": len(queries), "corpus": len(docs)}  # fmt: skip
    print(f"wordnet_rd: {len(queries)} queries over {len(docs)} lemmas")

    pairs = wordnet_wup_set(args.seed, args.wup_pairs)
    (out / "wordnet_wup").mkdir(parents=True, exist_ok=True)
    lines = ["sentence1\tsentence2\tscore", *(f"{a}\t{b}\t{s}" for a, b, s in pairs)]
    (out / "wordnet_wup" / "sts.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    manifest["sets"]["wordnet_wup"] = {"source": "WordNet 3.0 noun pairs, Wu-Palmer score",
                                       "pairs": len(pairs)}  # fmt: skip
    print(f"wordnet_wup: {len(pairs)} scored noun pairs")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
