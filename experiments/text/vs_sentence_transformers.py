"""Side by side: this package's Matryoshka contrastive fine-tuning against sentence-transformers'
own trainer, on the WordNet reverse dictionary.

The trainers, each from the same all-MiniLM-L6-v2 weights, on the same training pairs (the
(definition, lemma) pairs of this package's data module for epoch 0, one per synset), with the
same batches (sentence-transformers is given the pairs in the order this package's seeded
sampler draws them, and keeps that order), number of steps, learning rate, warm-up and linear
decay, weight decay, optimizer (torch's fused AdamW, sentence-transformers' default), gradient
clipping (norm 1, its default), seed and loss (in-batch-negatives InfoNCE at scale 20 on every
nesting dim, weight 1 each):

- `mrl`: `mrl-train-text`'s contrastive task (Lightning, `MatryoshkaContrastiveLoss`);
- `st`: `SentenceTransformerTrainer` with `MatryoshkaLoss(MultipleNegativesRankingLoss)`;
- `st_cached`: the same with `CachedMultipleNegativesRankingLoss` (mini-batches of
  `--mini-batch`), the large-batch variant.

The seeds (default 0 and 1) change the batches, the dropout and the noise to compare against;
dropout draws differ between the trainers. Reported per trainer and seed: the median
time of a training step (forward, loss, backward, optimizer step) and, after training, recall@10,
mAP@10 (the MRL paper's, divided by k) and 1-NN per dim on the test split, every model encoded
and scored by the same code (`mrl.eval.retrieval.evaluate_retrieval`). Outputs in `--out`
(default `experiments/results/text_vs_st`): `vs_sentence_transformers.csv` (tidy rows: trainer,
seed, dim, metric, value; metric `step_ms` for the step time) and `.md`. A rerun skips the
(trainer, seed) runs already in the CSV.

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=2 \\
        .venv/bin/python experiments/text/vs_sentence_transformers.py [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# The scripts beside this file, and the experiments' shared helpers.
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
import reverse_dictionary as rd  # noqa: E402  (the reverse-dictionary benchmark beside this file)
from _common import batch_timer, progress_log, read_csv_rows  # noqa: E402

from mrl.runs.files import atomic_write_text, write_csv  # noqa: E402
from mrl.runs.markdown import markdown_table  # noqa: E402

TRAINERS = ("mrl", "st", "st_cached")
TITLES = {
    "mrl": "mrl (Lightning, MatryoshkaContrastiveLoss)",
    "st": "sentence-transformers, MatryoshkaLoss(MNRL)",
    "st_cached": "sentence-transformers, MatryoshkaLoss(CachedMNRL)",
}
COLUMNS = ["trainer", "seed", "dim", "metric", "value"]
# Gradients clipped to this norm by every trainer (sentence-transformers' default).
MAX_GRAD_NORM = 1.0
STEM = "vs_sentence_transformers"
DEFAULT_OUT = "experiments/results/text_vs_st"

_log = progress_log("vs-st")


def training_pairs(datamodule: Any) -> list[tuple[str, str]]:
    """The (definition, lemma) pairs this package's data module trains on in epoch 0, in the
    order its seeded sampler draws them: every trainer sees the same batches."""
    loader = datamodule.train_dataloader()
    return [loader.dataset[key] for key in loader.sampler]


def train_mrl(cfg: Any, datamodule: Any) -> tuple[Any, list[float]]:
    """Fine-tune with this package's trainer; the trained encoder and each step's seconds."""
    import lightning.pytorch as pl

    from mrl.text.builders import build_text_model

    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    model = build_text_model(cfg, datamodule)
    timer = batch_timer()
    trainer = pl.Trainer(
        max_epochs=int(cfg.trainer.max_epochs), accelerator="cpu", devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer],
        gradient_clip_val=MAX_GRAD_NORM,
    )  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    return model.encoder, timer.times


def train_st(
    cfg: Any, pairs: list[tuple[str, str]], cached: bool, mini_batch: int, steps: int
) -> tuple[Any, list[float]]:
    """Fine-tune with sentence-transformers' trainer; the model and each step's seconds."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MatryoshkaLoss,
        MultipleNegativesRankingLoss,
    )
    from torch.utils.data import BatchSampler, SequentialSampler
    from transformers import TrainerCallback

    from mrl.text.encoders import resolve_model_path

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs) -> None:
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs) -> None:
            self.times.append(time.perf_counter() - self.started)

    class InOrder(SentenceTransformerTrainer):
        """Batches in the dataset's order (already the order this package's sampler drew)."""

        def get_batch_sampler(self, dataset, batch_size, drop_last, *args, **kwargs):
            return BatchSampler(SequentialSampler(range(len(dataset))), batch_size, drop_last)

    model = SentenceTransformer(resolve_model_path(cfg.encoder.model_name_or_path), device="cpu")
    model.max_seq_length = int(cfg.data.max_length)
    scale = float(cfg.loss.scale)
    inner = (
        CachedMultipleNegativesRankingLoss(model, scale=scale, mini_batch_size=mini_batch)
        if cached
        else MultipleNegativesRankingLoss(model, scale=scale)
    )
    loss = MatryoshkaLoss(model, inner, matryoshka_dims=list(cfg.loss.nesting))
    data = Dataset.from_dict({"anchor": [a for a, _ in pairs], "positive": [p for _, p in pairs]})
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out_dir:
        args = SentenceTransformerTrainingArguments(
            output_dir=out_dir, num_train_epochs=int(cfg.trainer.max_epochs),
            per_device_train_batch_size=int(cfg.data.batch_size),
            learning_rate=float(cfg.optimizer.lr), weight_decay=float(cfg.optimizer.weight_decay),
            warmup_steps=rd_warmup_steps(cfg, steps), lr_scheduler_type="linear",
            seed=int(cfg.seed), data_seed=int(cfg.seed), dataloader_drop_last=True,
            max_grad_norm=MAX_GRAD_NORM,
            report_to="none", save_strategy="no", logging_strategy="no", use_cpu=True,
            disable_tqdm=True,
        )  # fmt: skip
        InOrder(model=model, args=args, train_dataset=data, loss=loss, callbacks=[timer]).train()
    return model, timer.times


def rd_warmup_steps(cfg: Any, steps: int) -> int:
    """The warm-up steps of this package's `warmup_linear` for a run of `steps` steps."""
    from mrl.training.schedules import warmup_steps_of

    epochs = max(int(cfg.trainer.max_epochs), 1)
    return warmup_steps_of(steps, steps / epochs, float(cfg.scheduler.warmup_epochs))


def train(
    trainer: str, cfg: Any, datamodule: Any, pairs: list[tuple[str, str]], mini_batch: int,
    steps: int,
) -> tuple[list[float], Any]:  # fmt: skip
    """Fine-tune with `trainer`; each step's seconds, and a function that embeds texts."""
    from mrl.text.encoders import encode_texts

    if trainer == "mrl":
        encoder, times = train_mrl(cfg, datamodule)

        def embed(texts: list[str]) -> np.ndarray:
            return encode_texts(encoder, datamodule.tokenizer, texts, cfg.data.eval_batch_size,
                                cfg.data.max_length)  # fmt: skip

        return times, embed
    model, times = train_st(cfg, pairs, trainer == "st_cached", mini_batch, steps)

    def embed_st(texts: list[str]) -> np.ndarray:
        batch = int(cfg.data.eval_batch_size)
        return model.encode(texts, batch_size=batch, convert_to_numpy=True).astype(np.float32)

    return times, embed_st


def scores(embed: Any, cfg: Any, queries: rd.Side, database: rd.Side) -> list[dict]:
    """recall@k, mAP@k and 1-NN per dim of `cfg.nesting`, each side encoded once."""
    database_z = embed(database[0])
    return rd.retrieval_scores(cfg, embed(queries[0]), queries[1], database_z, database[1])


def mean_std(values: list[float], scale: float = 100.0) -> str:
    """`mean ± std` of `values` times `scale`, two decimals (the mean alone for one value, `-`
    for none)."""
    if not values:
        return "-"
    mean = scale * statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {scale * statistics.stdev(values):.2f}"


def markdown(rows: list[dict], title: str) -> str:
    """Step time per trainer, then each metric per dim (mean ± std over seeds, percent)."""
    trainers = [t for t in TRAINERS if any(r["trainer"] == t for r in rows)]

    def values(trainer: str, metric: str, dim: int | None = None) -> list[float]:
        return [r["value"] for r in rows if r["trainer"] == trainer and r["metric"] == metric
                and (dim is None or r["dim"] == dim)]  # fmt: skip

    step = {(r["trainer"], r["seed"]): r["value"] for r in rows if r["metric"] == "step_ms"}
    timings = []
    for t in trainers:
        ms = values(t, "step_ms")
        shared = [seed for (name, seed) in step if name == t and ("mrl", seed) in step]
        ratio = "-"
        if shared:  # the ratio over the seeds both trainers ran: the same batches
            theirs = statistics.fmean(step[(t, seed)] for seed in shared)
            ratio = f"{theirs / statistics.fmean(step[('mrl', seed)] for seed in shared):.2f}"
        timings.append([TITLES[t], len(ms), mean_std(ms, 1.0), ratio])
    lines = [f"# {title}", "", "## Time per training step (ms, median over steps)", ""]
    lines += markdown_table(["trainer", "seeds", "ms / step", "/ mrl (same seeds)"], timings, "l")
    metrics = [m for m in dict.fromkeys(r["metric"] for r in rows) if m != "step_ms"]
    dims = sorted({r["dim"] for r in rows if r["metric"] != "step_ms"})
    for metric in metrics:
        lines += ["", f"## {metric} (%, mean ± std over seeds)", ""]
        lines += markdown_table(["dim", *(TITLES[t] for t in trainers)],
                                [[d, *(mean_std(values(t, metric, d)) for t in trainers)]
                                 for d in dims])  # fmt: skip
    return "\n".join(lines) + "\n"


def run(
    seeds: Sequence[int] = (0, 1),
    trainers: Sequence[str] = TRAINERS,
    max_train_synsets: int | None = rd.DEFAULT_TRAIN_SYNSETS,
    max_test_synsets: int | None = rd.DEFAULT_TEST_SYNSETS,
    batch_size: int = rd.DEFAULT_BATCH_SIZE,
    epochs: int = rd.DEFAULT_EPOCHS,
    mini_batch: int = 16,
    out: str | Path = DEFAULT_OUT,
) -> list[dict]:
    """Every (trainer, seed) run not yet in `out`'s CSV; returns all rows."""
    from mrl.text.data import retrieval_datasets
    from mrl.training.builders import checked_datamodule

    out = Path(out)
    path = out / f"{STEM}.csv"
    rows = read_csv_rows(path, ints=("seed", "dim"), floats=("value",))
    finished = {(r["trainer"], r["seed"]) for r in rows}
    limits = [
        *rd.synset_limits(max_train_synsets, max_test_synsets),
        f"data.batch_size={batch_size}", f"trainer.max_epochs={epochs}", "optimizer.fused=true",
    ]  # fmt: skip
    lemmas: list[int] = []

    def title(pairs: int, steps: int, database_sizes: list[int] | None = None) -> str:
        sizes = "/".join(map(str, database_sizes or lemmas)) or "?"
        return (
            f"Matryoshka fine-tuning of MiniLM on WordNet pairs: this package against "
            f"sentence-transformers ({pairs} pairs, batch {batch_size}, {steps} steps; test: "
            f"{max_test_synsets} synsets drawn by each seed, {sizes} lemmas; the trainers of one "
            f"seed share its data)"
        )

    for seed in seeds:
        cfg = rd.compose_text_config([*limits, f"seed={seed}", f"paths.run_dir={out / 'runs'}"])
        datamodule = checked_datamodule(cfg.data)
        queries, database = map(rd.texts_and_labels, retrieval_datasets(datamodule.split("test")))
        pairs = training_pairs(datamodule)
        steps = epochs * (len(pairs) // batch_size)
        for trainer in trainers:
            if (trainer, seed) in finished:
                continue
            _log(f"{trainer}, seed {seed}: {len(pairs)} pairs, {steps} steps of {batch_size}")
            times, embed = train(trainer, cfg, datamodule, pairs, mini_batch, steps)
            new = [{"trainer": trainer, "seed": seed, "dim": 0, "metric": "step_ms",
                    "value": 1000 * statistics.median(times[1:] or times)}]  # fmt: skip
            new += [
                {"trainer": trainer, "seed": seed, "dim": r["dim"], "metric": r["metric"],
                 "value": r["value"]}
                for r in scores(embed, cfg, queries, database)
            ]  # fmt: skip
            rows += new
            write_csv(path, rows, COLUMNS)
            atomic_write_text(out / f"{STEM}.md", markdown(rows, title(len(pairs), steps)))
            _log(f"  {new[0]['value']:.0f} ms/step; written to {path}")
        lemmas.append(len(database[0]))
    if rows:  # also when every run was already done: the tables follow the CSV
        steps = epochs * (len(pairs) // batch_size)
        atomic_write_text(out / f"{STEM}.md", markdown(rows, title(len(pairs), steps, lemmas)))
    return rows


def add_setting_arguments(p: argparse.ArgumentParser) -> None:
    """The options of the setting's size: synsets drawn per split, batch size, epochs."""
    p.add_argument("--max-train-synsets", type=int, default=rd.DEFAULT_TRAIN_SYNSETS)
    p.add_argument("--max-test-synsets", type=int, default=rd.DEFAULT_TEST_SYNSETS)
    p.add_argument("--batch-size", type=int, default=rd.DEFAULT_BATCH_SIZE)
    p.add_argument("--epochs", type=int, default=rd.DEFAULT_EPOCHS)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--trainers", nargs="+", default=list(TRAINERS), choices=TRAINERS)
    add_setting_arguments(p)
    p.add_argument("--mini-batch", type=int, default=16, help="CachedMNRL's mini-batch size")
    p.add_argument("--out", default=DEFAULT_OUT)
    a = p.parse_args(argv)
    run(a.seeds, a.trainers, a.max_train_synsets, a.max_test_synsets, a.batch_size, a.epochs,
        a.mini_batch, a.out)  # fmt: skip
    print((Path(a.out) / f"{STEM}.md").read_text())


if __name__ == "__main__":
    main()
