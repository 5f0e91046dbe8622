"""Matryoshka MiniLM on a researcher's own pairs, judged per dim on held-out BEIR and STS sets
of the training domain and of domains not trained on, against the usual alternatives.

The sets come from `experiments/text/build_sets.py` (`--sets`): training pairs of Debian
package descriptions (summary -> description); held out, the Debian packages of other sources
(in-domain), GCIDE's word -> definition, WordNet's reverse dictionary and WordNet Wu-Palmer
noun pairs (not trained on). Methods, each from the same all-MiniLM-L6-v2 weights:

- `zero_shot`: the base model's prefixes, re-normalised;
- `mrl`: `mrl-train-text experiment=text/pairs`, the recipe (Matryoshka contrastive loss on
  every prefix + self-distillation from the frozen base model, `module.distill_weight`);
- `mrl_no_distill`: the same without the distillation term; `mrl_distill_x10`: with ten times
  its weight;
- `single_dim`: the contrastive loss at the full 384 dims only;
- `st`: sentence-transformers' `SentenceTransformerTrainer` with
  `MatryoshkaLoss(MultipleNegativesRankingLoss)` on the same file, batch size, learning rate,
  warm-up and epochs;
- `adaptor` / `adaptor_sup`: the Matryoshka-Adaptor on the frozen model's cached embeddings of
  the training texts (unsupervised; supervised adds the ranking loss on the pairs).

Every model is scored by the same code (`mrl.text.evaluation`): each set encoded once, every dim a
slice. Outputs in `--out` (default `$MRL_OUTPUT_ROOT/text_own_data`): `own_data.csv` (tidy rows:
method, seed, set, kind, dim, metric, value, retention, train_s) and `own_data.md`. A rerun skips
the (method, seed) pairs already in the CSV; the `mrl-train-text` runs live under `<out>/runs`
and resume where they stopped.

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=2 \\
        .venv/bin/python experiments/text/own_data.py --sets outputs/text_sets [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from _common import progress_log, read_csv_rows  # noqa: E402

from mrl.runs.files import atomic_write_text, write_csv  # noqa: E402
from mrl.runs.markdown import markdown_table  # noqa: E402

METHODS = (
    "zero_shot",
    "mrl",
    "mrl_no_distill",
    "mrl_distill_x10",
    "single_dim",
    "st",
    "adaptor",
    "adaptor_sup",
)
# The distillation weight of each trained method, as a multiple of --distill-weight.
DISTILL_SCALE = {"mrl": 1.0, "mrl_distill_x10": 10.0}
COLUMNS = ["method", "seed", "set", "kind", "dim", "metric", "value", "retention", "train_s"]
NESTING = [8, 16, 32, 64, 128, 256, 384]
IN_DOMAIN = ("debian",)
HEADLINE = {"retrieval": "ndcg@10", "sts": "spearman"}
log = progress_log("own_data")


def test_sets(sets: Path) -> list[dict[str, Any]]:
    """The held-out sets of `build_sets.py`, as evaluation entries."""
    return [
        {"path": str(sets / "debian" / "beir"), "kind": "beir", "name": "debian"},
        {"path": str(sets / "gcide" / "beir"), "kind": "beir", "name": "gcide"},
        {"path": str(sets / "wordnet_rd" / "beir"), "kind": "beir", "name": "wordnet_rd"},
        {"path": str(sets / "wordnet_wup" / "sts.tsv"), "kind": "sts", "name": "wordnet_wup"},
    ]


def training_overrides(method: str, args: argparse.Namespace) -> list[str]:
    """The `mrl-train-text` overrides of a method (besides data, seed and run directory): every
    method is `experiment=text/pairs` (the recipe) with its own changes."""
    common = [
        "experiment=text/pairs", f"optimizer.lr={args.lr}", f"data.batch_size={args.batch_size}",
        f"data.max_length.query={args.query_length}",
        f"data.max_length.document={args.document_length}",
        f"trainer.max_epochs={args.epochs}", "logger=csv", "save_model=false",
        f"module.distill_weight={args.distill_weight * DISTILL_SCALE.get(method, 0.0)}",
    ]  # fmt: skip
    if method == "single_dim":
        common.append(f"loss.nesting=[{NESTING[-1]}]")
    return common


def train_ours(method: str, seed: int, args: argparse.Namespace, specs: list[dict]) -> dict:
    """One `mrl-train-text` run (resumed if it stopped); its `results.json`."""
    run_root = args.out / "runs"
    run_dir = run_root / "text" / "own_data" / f"{method}-seed{seed}"
    tests = json.dumps(specs).replace('"', "")
    command = [
        str(Path(sys.executable).with_name("mrl-train-text")),
        f"data.train={args.sets / 'debian' / 'train.jsonl'}", f"data.test={tests}",
        f"seed={seed}", f"paths.output_root={run_root}", "name=own_data",
        f"run_id={method}-seed{seed}", *training_overrides(method, args),
    ]  # fmt: skip
    log(f"{method} seed {seed}: training ({' '.join(command[1:])})")
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir.parent / f"{method}-seed{seed}.log").open("a") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"{method} seed {seed}: mrl-train-text exited {done.returncode}; see "
                         f"{run_dir.parent / f'{method}-seed{seed}.log'}")  # fmt: skip
    return json.loads((run_dir / "results.json").read_text())


def base_encode(args: argparse.Namespace) -> Callable[[list[str], str], np.ndarray]:
    """The frozen base model's full embeddings (no prompts: MiniLM uses none)."""
    from mrl.text.encoders import HFTextEncoder, load_tokenizer
    from mrl.text.evaluation import prompted_encoder

    encoder = HFTextEncoder(None)
    lengths = {"query": args.query_length, "document": args.document_length}
    return prompted_encoder(encoder, load_tokenizer(None), None, lengths, log=log)


def train_pairs(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in (args.sets / "debian" / "train.jsonl").open()]
    return [r["anchor"] for r in rows], [r["positive"] for r in rows]


def train_st(seed: int, args: argparse.Namespace) -> tuple[Any, float]:
    """sentence-transformers' trainer with MatryoshkaLoss(MNRL) on the same pairs."""
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import (
        MatryoshkaLoss,
        MultipleNegativesRankingLoss,
    )

    from mrl.text.encoders import resolve_model_path

    torch.manual_seed(seed)
    model = SentenceTransformer(resolve_model_path(None), device="cpu")
    model.max_seq_length = args.document_length
    anchors, positives = train_pairs(args)
    loss = MatryoshkaLoss(model, MultipleNegativesRankingLoss(model, scale=20.0), NESTING)
    data = Dataset.from_dict({"anchor": anchors, "positive": positives})
    steps = len(anchors) // args.batch_size * args.epochs
    started = time.time()
    out_dir = args.out / "runs" / f"st-seed{seed}"
    train_args = SentenceTransformerTrainingArguments(
        output_dir=str(out_dir), num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size, learning_rate=args.lr, weight_decay=0.01,
        warmup_steps=int(0.1 * steps), lr_scheduler_type="linear", seed=seed, data_seed=seed,
        dataloader_drop_last=True, report_to="none", save_strategy="no",
        logging_strategy="no", use_cpu=True, disable_tqdm=True,
        batch_sampler="no_duplicates",
    )  # fmt: skip
    SentenceTransformerTrainer(model=model, args=train_args, train_dataset=data, loss=loss).train()
    return model, time.time() - started


def train_adaptor(supervised: bool, seed: int, args: argparse.Namespace,
                  base: Callable) -> tuple[Callable, float]:  # fmt: skip
    """The adaptor on the base model's cached embeddings of the training texts."""
    import torch
    from adaptor import fit

    anchors, positives = train_pairs(args)
    started = time.time()
    a = torch.from_numpy(base(anchors, "query"))
    p = torch.from_numpy(base(positives, "document"))
    adaptor, _ = fit(torch.cat([a, p]), (a, p) if supervised else None, NESTING,
                     epochs=args.adaptor_epochs, batch_size=256, lr=1e-3, seed=seed)  # fmt: skip

    def encode(texts: list[str], role: str) -> np.ndarray:
        with torch.no_grad():
            return adaptor(torch.from_numpy(base(texts, role))).numpy()

    return encode, time.time() - started


def cached(encode: Callable, store: dict) -> Callable:
    """`encode` remembering its results by (role, texts): the base model encodes a set once."""

    def inner(texts: list[str], role: str) -> np.ndarray:
        key = (role, hash(tuple(texts)))
        if key not in store:
            store[key] = encode(texts, role)
        return store[key]

    return inner


def run_method(method: str, seed: int, args: argparse.Namespace, specs: list[dict],
               base: Callable) -> list[dict]:  # fmt: skip
    from mrl.eval.text_metrics import evaluate_text_sets
    from mrl.text.evaluation import load_eval_sets

    if method in ("mrl", "mrl_no_distill", "mrl_distill_x10", "single_dim"):
        result = train_ours(method, seed, args, specs)
        rows, train_s = result["eval_sets"], float(result.get("wall_time_s") or 0)
    else:
        sets = load_eval_sets(specs)
        train_s = 0.0
        if method == "zero_shot":
            encode = base
        elif method == "st":
            model, train_s = train_st(seed, args)

            def encode(texts: list[str], role: str) -> np.ndarray:
                return model.encode(texts, batch_size=256, convert_to_numpy=True)

        else:
            encode, train_s = train_adaptor(method == "adaptor_sup", seed, args, base)
        rows = evaluate_text_sets(encode, sets, NESTING)
    return [{"method": method, "seed": seed, **r, "train_s": round(train_s, 1)} for r in rows]


def summary(rows: list[dict]) -> str:
    """Per set: the headline metric per dim by method (mean over seeds), the share kept at 64
    dims, and the full-dim change against zero-shot."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    seeds = frame.groupby("method")["seed"].nunique()
    counted = ", ".join(f"{m} {seeds[m]}" for m in METHODS if m in seeds)
    parts = ["# MiniLM on Debian package descriptions: held-out sets per dim", "",
             f"Seeds per method: {counted}.", "",
             "Made by `python experiments/text/build_sets.py --out outputs/text_sets "
             "--train-size 3200` then `python experiments/text/own_data.py --sets "
             "outputs/text_sets --out outputs/text_own_data --document-length 96` (seed 1 of "
             "`mrl_no_distill` not run); see experiments/text/README.md.", ""]  # fmt: skip
    for name, group in frame.groupby("set", sort=False):
        kind = group["kind"].iloc[0]
        metric = HEADLINE[kind]
        g = group[group["metric"] == metric]
        table = g.pivot_table(index="dim", columns="method", values="value", aggfunc="mean")
        table = table[[m for m in METHODS if m in table.columns]]
        domain = "training domain" if name in IN_DOMAIN else "not trained on"
        parts += [f"## {name} ({kind}, {domain}): {metric} (%, mean over seeds)", ""]
        body = [[int(d), *(f"{100 * v:.2f}" for v in table.loc[d])] for d in table.index]
        parts += [*markdown_table(["dim", *table.columns], body), ""]
        full = table.loc[max(table.index)]
        kept = 100 * table.loc[64] / full
        change = 100 * (full / full.get("zero_shot", np.nan) - 1)
        body = [[m, f"{kept[m]:.1f}", f"{change[m]:+.2f}"] for m in table.columns]
        parts += [*markdown_table(["method", "kept at 64 (%)", "full dim vs zero-shot (%)"], body),
                  ""]  # fmt: skip
    parts += targets(frame)
    seconds = frame.groupby("method")["train_s"].mean()
    timing = [[m, f"{seconds[m]:.0f}"] for m in METHODS if m in seconds]
    note = (
        "Wall seconds on 2 shared CPU cores (other jobs ran beside some runs, so compare "
        "within a seed with care); the trained methods include their evaluation, `adaptor` "
        "includes encoding the training texts once, which `adaptor_sup` reuses."
    )
    parts += ["## Training time (s, mean over seeds)", "",
              *markdown_table(["method", "seconds"], timing), "", note, ""]  # fmt: skip
    return "\n".join(parts)


def targets(frame: Any, method: str = "mrl") -> list[str]:
    """The recipe's targets, each with its measured value: on sets not trained on, >= 90% of the
    full dim's score kept at 64 dims and the full dim within 1% of zero-shot; on the training
    domain, above zero-shot at every dim (means over seeds)."""
    lines = ["## Targets (`mrl`, mean over seeds)", ""]
    body = []
    for name, group in frame.groupby("set", sort=False):
        g = group[group["metric"] == HEADLINE[group["kind"].iloc[0]]]
        table = g.pivot_table(index="dim", columns="method", values="value", aggfunc="mean")
        if method not in table or "zero_shot" not in table:
            continue
        ours, zero = table[method], table["zero_shot"]
        full = max(table.index)
        if name in IN_DOMAIN:
            worst = min(ours - zero)
            gain = f"smallest gain {100 * worst:+.2f} points"
            body.append([name, "above zero-shot at every dim", gain, "yes" if worst > 0 else "no"])
            continue
        kept = 100 * ours[64] / ours[full]
        body.append([name, ">= 90% kept at 64 dims", f"{kept:.1f}%", "yes" if kept >= 90 else "no"])
        change = 100 * (ours[full] / zero[full] - 1)
        body.append([name, "full dim within 1% of zero-shot", f"{change:+.2f}%",
                     "yes" if change >= -1 else "no"])  # fmt: skip
    return [*lines, *markdown_table(["set", "target", "measured", "met"], body), ""]


def main(argv: Sequence[str] | None = None) -> None:
    root = Path(os.environ.get("MRL_OUTPUT_ROOT", "outputs"))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", type=Path, default=root / "text_sets")
    p.add_argument("--out", type=Path, default=root / "text_own_data")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--query-length", type=int, default=32)
    p.add_argument("--document-length", type=int, default=128)
    p.add_argument("--distill-weight", type=float, default=1.0)
    p.add_argument("--adaptor-epochs", type=int, default=5)
    args = p.parse_args(argv)
    if not (args.sets / "debian" / "train.jsonl").is_file():
        raise SystemExit(f"own_data: no {args.sets}/debian/train.jsonl: run "
                         f"experiments/text/build_sets.py --out {args.sets} first")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    csv_path = args.out / "own_data.csv"
    rows = read_csv_rows(csv_path, ints=("seed", "dim"))
    done = {(r["method"], int(r["seed"])) for r in rows}
    specs = test_sets(args.sets)
    base = cached(base_encode(args), {})
    for seed in args.seeds:
        for method in args.methods:
            if (method, seed) in done or (method == "zero_shot" and seed != args.seeds[0]):
                continue
            rows += run_method(method, seed, args, specs, base)
            write_csv(csv_path, rows, COLUMNS)
            atomic_write_text(args.out / "own_data.md", summary(_numeric(rows)))
            log(f"{method} seed {seed}: done, {csv_path}")
    atomic_write_text(args.out / "own_data.md", summary(_numeric(rows)))
    print(args.out / "own_data.md")


def _numeric(rows: list[dict]) -> list[dict]:
    def number(v: Any) -> float:
        return float(v) if v not in (None, "") else float("nan")

    return [{**r, "value": number(r["value"]), "train_s": number(r["train_s"]),
             "dim": int(r["dim"])} for r in rows]  # fmt: skip


if __name__ == "__main__":
    main()
