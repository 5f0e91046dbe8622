"""A Matryoshka adaptor on frozen MiniLM: do its prefixes beat plain truncation?

all-MiniLM-L6-v2 stays frozen; its embeddings of the WordNet train split (definitions and
lemmas) are computed once and cached in `--cache` (default `outputs/text_adaptor_cache`, about
250 MB for the full split). A `mrl.core.adaptor.MatryoshkaAdaptor` is fitted
on them, unsupervised (every prefix keeps the full embeddings' pairwise and top-k similarities)
and supervised (plus the Matryoshka ranking loss on the (definition, lemma) pairs), then the test
split's reverse dictionary (queries: definitions, database: lemmas) is scored per dim for the
truncated embeddings and both adapted ones, by `mrl.eval.retrieval.evaluate_retrieval`.
Outputs in `--out` (default `experiments/results/text_adaptor`): `adaptor.csv` (method, dim,
metric, value; `fit_seconds` per adaptor) and `adaptor.md`.

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=2 \\
        .venv/bin/python experiments/text/adaptor.py [--epochs 20]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

# The scripts beside this file, and the experiments' shared helpers.
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
import reverse_dictionary as rd  # noqa: E402  (the reverse-dictionary benchmark beside this file)
from _common import progress_log  # noqa: E402

from mrl import MatryoshkaContrastiveLoss  # noqa: E402
from mrl.core.adaptor import MatryoshkaAdaptor, adaptor_loss  # noqa: E402
from mrl.eval.retention import retention  # noqa: E402
from mrl.eval.retrieval import evaluate_retrieval  # noqa: E402
from mrl.runs.files import atomic_write_text, write_csv  # noqa: E402
from mrl.runs.markdown import markdown_table  # noqa: E402

METHODS = ("truncated", "adaptor (unsupervised)", "adaptor (supervised)")
DEFAULT_OUT = "experiments/results/text_adaptor"
DEFAULT_CACHE = "outputs/text_adaptor_cache"

_log = progress_log("adaptor")


def cached_embeddings(name: str, texts: list[str], embed: Any, out: Path) -> np.ndarray:
    """`embed(texts)`, stored as `out/<name>-<digest of the texts>.npy` and read back on a rerun
    of the same texts (other texts, another file)."""
    digest = hashlib.sha1("\n".join(texts).encode()).hexdigest()[:12]
    path = out / f"{name}-{digest}.npy"
    if path.is_file():
        return np.load(path)
    vectors = np.asarray(embed(texts), dtype=np.float32)
    out.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def fit(
    corpus: torch.Tensor, pairs: tuple[torch.Tensor, torch.Tensor] | None, nesting: list[int],
    epochs: int, batch_size: int, lr: float, seed: int, log: Any = None,
) -> tuple[MatryoshkaAdaptor, float]:  # fmt: skip
    """Fit an adaptor on cached embeddings; with `pairs`, the ranking loss is added. `log`, if
    given, is called with a line after every epoch."""
    torch.manual_seed(seed)
    adaptor = MatryoshkaAdaptor(corpus.shape[1])
    optimizer = torch.optim.AdamW(adaptor.parameters(), lr=lr)
    ranking = MatryoshkaContrastiveLoss(nesting, scale=20.0, gather=False)
    started = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(corpus.shape[0])
        pair_order = torch.randperm(pairs[0].shape[0]) if pairs is not None else None
        for step, i in enumerate(range(0, len(order) - batch_size + 1, batch_size)):
            batch = corpus[order[i : i + batch_size]]
            loss = adaptor_loss(batch, adaptor(batch), nesting)
            if pairs is not None:
                j = (step * batch_size) % max(1, pairs[0].shape[0] - batch_size + 1)
                rows = pair_order[j : j + batch_size]
                loss = loss + ranking(adaptor(pairs[0][rows]), adaptor(pairs[1][rows]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if log is not None:
            seconds = time.perf_counter() - started
            log(f"  epoch {epoch + 1}/{epochs}: last loss {float(loss):.4f}, {seconds:.0f} s")
    return adaptor.eval(), time.perf_counter() - started


def markdown(rows: list[dict], title: str) -> str:
    """recall@10 and mAP@10 per dim and method, and their retention of the full dim."""
    value = {(r["method"], r["dim"], r["metric"]): r["value"] for r in rows}
    kept = {(r["method"], r["dim"], r["metric"]): r["retention"] for r in retention(rows)}
    dims = sorted({r["dim"] for r in rows if r["metric"] != "fit_seconds"})

    def cell(key: tuple[str, int, str]) -> str:
        return f"{100 * value[key]:.2f} ({kept.get(key, 0):.1f})" if key in value else "-"

    lines = [f"# {title}", ""]
    for metric in ("recall@10", "map@10", "1nn"):
        lines += [f"## {metric} (%; in brackets: % of the full dim)", ""]
        body = [[d, *(cell((m, d, metric)) for m in METHODS)] for d in dims]
        lines += [*markdown_table(["dim", *METHODS], body), ""]
    fits = [f"{r['method']}: {r['value']:.0f} s" for r in rows if r["metric"] == "fit_seconds"]
    lines.append("Fitting time on the cached embeddings: " + "; ".join(fits) + ".")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-train-synsets", type=int, default=None)
    p.add_argument("--max-test-synsets", type=int, default=rd.DEFAULT_TEST_SYNSETS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--cache", default=DEFAULT_CACHE, help="folder of the cached embeddings")
    p.add_argument("--time-steps", type=int, default=None, metavar="N",
                   help="only time N fitting steps of each adaptor on random unit embeddings of "
                   "MiniLM's width (no model, no data) and print ms per step")  # fmt: skip
    a = p.parse_args(argv)
    if a.time_steps is not None:
        time_steps(a.time_steps, a.batch_size, a.lr, a.seed)
        return
    out = Path(a.out)
    run(a.epochs, a.batch_size, a.lr, a.max_train_synsets, a.max_test_synsets, a.seed, out,
        Path(a.cache))  # fmt: skip
    print((out / "adaptor.md").read_text())


def time_steps(steps: int, batch_size: int, lr: float, seed: int, dim: int = 384) -> None:
    """Print the time of one fitting step of each adaptor (one epoch of `steps` batches of
    random unit vectors), the fitting cost without the encoder or its contention."""
    torch.manual_seed(seed)
    corpus = torch.nn.functional.normalize(torch.randn(steps * batch_size, dim), dim=-1)
    half = corpus.shape[0] // 2
    nesting = [m for m in (8, 16, 32, 64, 128, 256) if m < dim] + [dim]
    for method, pairs in (("unsupervised", None), ("supervised", (corpus[:half], corpus[half:]))):
        _, seconds = fit(corpus, pairs, nesting, 1, batch_size, lr, seed)
        print(f"adaptor ({method}): {1000 * seconds / steps:.1f} ms per step of {batch_size}")


def run(
    epochs: int, batch_size: int, lr: float, max_train_synsets: int | None,
    max_test_synsets: int | None, seed: int, out: Path, cache: Path | None = None,
) -> list[dict]:  # fmt: skip
    """Encode once (cached in `cache`, default `out`), fit both adaptors, score every method;
    returns the rows."""
    cache = out if cache is None else cache
    from mrl.config import instantiate
    from mrl.text.data import SynsetPairs, retrieval_datasets
    from mrl.text.encoders import encode_texts
    from mrl.training.builders import checked_datamodule

    limits = [
        *rd.synset_limits(max_train_synsets, max_test_synsets),
        f"seed={seed}",
    ]
    cfg = rd.compose_text_config(limits)
    datamodule = checked_datamodule(cfg.data)
    encoder = instantiate(cfg.encoder, "encoder").eval()

    def embed(texts: list[str]) -> np.ndarray:
        return encode_texts(encoder, datamodule.tokenizer, texts, cfg.data.eval_batch_size,
                            cfg.data.max_length)  # fmt: skip

    train = datamodule.split("train")
    pairs = SynsetPairs(train, "sample", seed)
    pairs = [pairs[(i, 0)] for i in range(len(pairs))]
    texts = sorted({s.definition for s in train} | {lemma for s in train for lemma in s.lemmas})
    queries, database = map(rd.texts_and_labels, retrieval_datasets(datamodule.split("test")))
    _log(f"{len(texts)} train texts, {len(pairs)} pairs; test {len(queries[0])} queries")
    corpus = torch.from_numpy(cached_embeddings("train_texts", texts, embed, cache))
    index = {t: i for i, t in enumerate(texts)}
    pair_vectors = (corpus[[index[a] for a, _ in pairs]], corpus[[index[b] for _, b in pairs]])
    test_q = cached_embeddings("test_queries", queries[0], embed, cache)
    test_db = cached_embeddings("test_database", database[0], embed, cache)
    nesting = list(cfg.nesting)

    rows: list[dict] = []
    for method in METHODS:
        if method == "truncated":
            q, db = test_q, test_db
        else:
            supervised = method == "adaptor (supervised)"
            adaptor, seconds = fit(corpus, pair_vectors if supervised else None, nesting,
                                   epochs, batch_size, lr, seed, _log)  # fmt: skip
            _log(f"{method}: fitted in {seconds:.0f} s")
            rows.append({"method": method, "dim": 0, "metric": "fit_seconds", "value": seconds})
            with torch.no_grad():
                q = adaptor(torch.from_numpy(test_q)).numpy()
                db = adaptor(torch.from_numpy(test_db)).numpy()
        for r in evaluate_retrieval(db, database[1], q, queries[1], dims=nesting, ks=(10,),
                                    knn_ks=(1,), backend="exact"):  # fmt: skip
            if r["metric"] in ("recall@10", "map@10", "1nn"):
                rows.append({"method": method, "dim": r["dim"], "metric": r["metric"],
                             "value": r["value"]})  # fmt: skip
    write_csv(out / "adaptor.csv", rows, ["method", "dim", "metric", "value"])
    title = (f"Matryoshka adaptor on frozen MiniLM (WordNet reverse dictionary, test: "
             f"{len(queries[0])} queries, {len(database[0])} lemmas; fitted on {len(texts)} "
             f"train texts, {epochs} epochs)")  # fmt: skip
    atomic_write_text(out / "adaptor.md", markdown(rows, title))
    return rows


if __name__ == "__main__":
    main()
