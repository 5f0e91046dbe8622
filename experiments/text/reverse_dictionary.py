"""The reverse-dictionary benchmark: Matryoshka vs. plain contrastive fine-tuning of MiniLM.

On the WordNet 3.0 noun test split (query = a synset's definition, relevant = its lemmas, database
= the lemmas of the test synsets), for every dim m of the nesting list, three methods:

- `zero_shot`: all-MiniLM-L6-v2 as shipped, truncated to m (the non-Matryoshka baseline);
- `mrl`: MiniLM fine-tuned with the Matryoshka contrastive loss over all dims;
- `single_dim`: MiniLM fine-tuned with the same loss at the full dim only (`single_dim`
  experiment), then truncated like the others.

Metrics (`mrl.eval.retrieval.evaluate_retrieval`, queries and database encoded once per model,
each dim a slice): `map@k` (divided by k, the MRL paper's normalisation), `recall@k` and `1nn`
(precision@1). Settings come from `conf/text.yaml` with the contrastive task; the command-line
knobs are overrides of it. Outputs, written atomically after every method (so a partial run keeps
what it finished): `reverse_dictionary.csv` (tidy `dataset,split,method,dim,metric,value`),
`reverse_dictionary.md` (one table per metric) and `reverse_dictionary.json` (settings, sizes,
timings, rows).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from mrl.conf import CONFIG_DIR
from mrl.core.errors import ConfigError
from mrl.eval.retention import retention
from mrl.runs.files import atomic_write_json, atomic_write_text, write_csv
from mrl.runs.format import EVAL_METRIC_COLUMNS, TEXT_BENCHMARK_FILE
from mrl.runs.markdown import markdown_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import progress_log  # noqa: E402  (the experiment scripts' shared helpers)

METHODS = ("zero_shot", "mrl", "single_dim")
METHOD_OVERRIDES = {"zero_shot": [], "mrl": [], "single_dim": ["experiment=text/single_dim"]}
METHOD_TITLES = {
    "zero_shot": "MiniLM zero-shot",
    "mrl": "MiniLM + MRL",
    "single_dim": "MiniLM + single-dim",
}
POS_NAMES = {"n": "nouns", "v": "verbs", "a": "adjectives", "r": "adverbs"}
COLUMNS = EVAL_METRIC_COLUMNS
STEM = Path(TEXT_BENCHMARK_FILE).stem

# Defaults sized to finish in about 30 minutes on a shared 2-core CPU (see
# experiments/text/README.md for the measurement behind them).
DEFAULT_EPOCHS = 1
DEFAULT_TRAIN_SYNSETS = 2560
DEFAULT_TEST_SYNSETS = 2000
DEFAULT_BATCH_SIZE = 64
DEFAULT_OUT = "experiments/results/text"

_log = progress_log("reverse-dictionary")


def compose_text_config(overrides: Sequence[str]) -> DictConfig:
    """`conf/text.yaml` with the contrastive task and `overrides`, composed without a Hydra run."""
    from hydra import compose, initialize_config_dir

    import mrl.training.resolvers  # noqa: F401  (registers the resolvers the configs use)

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("text", overrides=["text/task=contrastive", *overrides])


def _step_logger(every: int) -> Any:
    import lightning.pytorch as pl

    class StepLogger(pl.Callback):
        """Prints the loss and the mean step time every `every` optimizer steps."""

        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.started = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            step, total = trainer.global_step, trainer.estimated_stepping_batches
            if step % every == 0 or step == total:
                per_step = (time.perf_counter() - self.started) / max(1, step)
                loss = float(outputs["loss"]) if isinstance(outputs, dict) else float(outputs)
                _log(f"  step {step}/{total}: loss {loss:.3f} ({per_step:.2f} s/step)")

    return StepLogger()


def finetune(cfg: DictConfig, datamodule: Any, log_every: int) -> tuple[Any, float, int]:
    """Train the contrastive module of `cfg` on `datamodule`'s train split (no validation),
    through the run lifecycle in `cfg.paths.run_dir`: a killed benchmark resumes the
    fine-tuning, and a method already fine-tuned there with these settings is loaded, not
    trained again.

    Returns `(trained HFTextEncoder, seconds, optimizer steps)`.
    """
    from omegaconf import OmegaConf, open_dict

    from mrl.runs.format import RESULTS_FILE
    from mrl.saved import load_saved
    from mrl.text.builders import build_text_model
    from mrl.training.builders import build_trainer
    from mrl.training.checks import check_text_config
    from mrl.training.lifecycle import Built, TrainerSpec, finished_results, run_training

    run_dir = Path(cfg.paths.run_dir)
    if (run_dir / RESULTS_FILE).is_file():
        reuse = OmegaConf.create(cfg)
        with open_dict(reuse):
            reuse.if_finished = "skip"
        try:
            recorded = finished_results(reuse, "reverse_dictionary", run_dir)
        except ConfigError as err:  # its advice names Hydra's options, not this script's
            raise ConfigError(
                f"{run_dir} cannot be reused (fine-tuned with other settings, or unreadable): "
                f"{err}; with this script: choose another --out, or remove that directory"
            ) from err
        saved = load_saved(run_dir, formats=("mrl",), purpose="reuse")
        _log(f"  already fine-tuned in {run_dir}: loaded its last.ckpt")
        return saved.encoder, float(recorded["train_seconds"]), int(recorded["steps"])

    built: dict[str, Built] = {}
    started = time.perf_counter()

    def build(c: DictConfig) -> Built:
        built["run"] = Built(datamodule, build_text_model(c, datamodule), [_step_logger(log_every)])
        return built["run"]

    def results(c: DictConfig, trainer: Any, b: Built) -> dict[str, Any]:
        seconds = round(time.perf_counter() - started, 1)
        return {"experiment": str(c.name), "steps": int(trainer.global_step),
                "train_seconds": seconds}  # fmt: skip

    spec = TrainerSpec(
        prog="reverse_dictionary", check=check_text_config, build=build, results=results,
        test=False, trainer_overrides={
            "logger": False, "enable_checkpointing": False,
            "enable_progress_bar": False, "enable_model_summary": False,
            "limit_val_batches": 0, "num_sanity_val_steps": 0,
        },
    )  # fmt: skip
    out = run_training(cfg, spec, build_trainer)
    return built["run"].model.encoder, out["train_seconds"], out["steps"]


Side = tuple[list[str], np.ndarray]  # texts and their synset labels


def evaluate(
    encoder: Any, tokenizer: Any, cfg: DictConfig, queries: Side, database: Side
) -> list[dict]:
    """Encode the queries and the database once, then score every dim of `cfg.nesting`."""
    from mrl.text.encoders import encode_texts

    def embed(texts: list[str]) -> Any:
        return encode_texts(
            encoder, tokenizer, texts, cfg.data.eval_batch_size, cfg.data.max_length
        )

    database_z = embed(database[0])
    return retrieval_scores(cfg, embed(queries[0]), queries[1], database_z, database[1])


def retrieval_scores(
    cfg: DictConfig,
    queries: np.ndarray,
    query_labels: np.ndarray,
    database: np.ndarray,
    database_labels: np.ndarray,
) -> list[dict]:
    """The `evaluate_retrieval` rows of recall@k, mAP@k (the paper's, ÷k) and 1-NN of embedded
    queries against an embedded database, at every dim of `cfg.nesting` (k: `module.eval_k`)."""
    from mrl.eval.retrieval import evaluate_retrieval

    k = int(cfg.module.eval_k)
    rows = evaluate_retrieval(
        database,
        database_labels,
        queries,
        query_labels,
        dims=list(cfg.nesting),
        ks=(k,),
        knn_ks=(1,),
        backend=cfg.module.retrieval_backend,
    )
    keep = {f"map@{k}", f"recall@{k}", "1nn"}
    return [row for row in rows if row["metric"] in keep]


def synset_limits(max_train_synsets: int | None, max_test_synsets: int | None) -> list[str]:
    """The overrides drawing that many synsets of the train and the test split (None: all)."""
    return [
        f"data.limit_train={'null' if max_train_synsets is None else max_train_synsets}",
        f"data.limit_test={'null' if max_test_synsets is None else max_test_synsets}",
    ]


def texts_and_labels(dataset: Any) -> Side:
    """The `(text, label)` items of a dataset as a list of texts and an array of labels."""
    texts, labels = zip(*dataset.items)
    return list(texts), np.asarray(labels, dtype=np.int64)


def markdown(rows: list[dict], methods: Sequence[str], title: str) -> str:
    """One Markdown table per metric (a row per dim, a column per method, percent), then per
    metric each dim's score as a percentage of the method's full-dim score."""
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    dims = sorted({r["dim"] for r in rows})
    value = {(r["method"], r["dim"], r["metric"]): r["value"] for r in rows}
    kept = {(r["method"], r["dim"], r["metric"]): r["retention"] for r in retention(rows)}
    present = [m for m in methods if any(r["method"] == m for r in rows)]
    header = ["dim", *(METHOD_TITLES.get(m, m) for m in present)]

    def table(heading: str, cells: dict, metric: str, shown: str, scale: float) -> list[str]:
        body = [[d, *("-" if (v := cells.get((m, d, metric))) is None else f"{scale * v:{shown}}"
                      for m in present)] for d in dims]  # fmt: skip
        return [heading, "", *markdown_table(header, body), ""]

    lines = [f"# {title}", ""]
    for metric in metrics:
        lines += table(f"## {metric} (%)", value, metric, ".2f", 100)
    for metric in metrics:
        lines += table(f"## {metric}: % of the full dim ({max(dims)})", kept, metric, ".1f", 1)
    return "\n".join(lines)


def run_benchmark(
    epochs: int = DEFAULT_EPOCHS,
    max_train_synsets: int | None = DEFAULT_TRAIN_SYNSETS,
    max_test_synsets: int | None = DEFAULT_TEST_SYNSETS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    out: str | Path = DEFAULT_OUT,
    seed: int = 0,
    methods: Sequence[str] = METHODS,
    overrides: Sequence[str] = (),
    log_every: int = 10,
) -> dict[str, Any]:
    """Run the methods, writing the CSV, Markdown and JSON outputs into `out`; returns the
    JSON summary. `overrides` are extra `conf/text.yaml` overrides (e.g. `optimizer.lr=3e-5`)."""
    from mrl.config import instantiate
    from mrl.text.data import retrieval_datasets
    from mrl.training.builders import checked_datamodule

    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ConfigError(f"methods must be a non-empty subset of {list(METHODS)}, got {methods}")
    out = Path(out)
    base = [
        f"trainer.max_epochs={epochs}",
        *synset_limits(max_train_synsets, max_test_synsets),
        f"data.batch_size={batch_size}",
        f"seed={seed}",
        f"paths.run_dir={out / 'runs'}",
        *overrides,
    ]
    started = time.perf_counter()
    cfg = compose_text_config(base)
    datamodule = checked_datamodule(cfg.data)
    queries, database = map(texts_and_labels, retrieval_datasets(datamodule.split("test")))
    dataset = "wordnet-3.0-" + "+".join(POS_NAMES[p] for p in cfg.data.pos)
    summary: dict[str, Any] = {
        "benchmark": STEM,
        "dataset": dataset,
        "split": "test",
        "command": " ".join(sys.argv),
        "settings": {
            "epochs": epochs,
            "max_train_synsets": max_train_synsets,
            "max_test_synsets": max_test_synsets,
            "batch_size": batch_size,
            "seed": seed,
            "overrides": list(overrides),
            "nesting": list(cfg.nesting),
            "lr": cfg.optimizer.lr,
            "scale": cfg.loss.scale,
            "max_length": cfg.data.max_length,
        },
        "sizes": {
            "train_synsets": len(datamodule.split("train")),
            "test_queries": len(queries[0]),
            "test_database": len(database[0]),
        },
        "methods": {},
        "rows": [],
    }
    _log(f"{summary['sizes']} -> {out}")
    rows: list[dict] = []
    for method in methods:
        t0 = time.perf_counter()
        method_cfg = compose_text_config(
            [*base, *METHOD_OVERRIDES[method], f"paths.run_dir={out / 'runs' / method}"]
        )
        info: dict[str, Any] = {}
        if method == "zero_shot":
            encoder = instantiate(method_cfg.encoder, "encoder")
        else:
            _log(f"{method}: fine-tuning (loss dims {list(method_cfg.loss.nesting)})")
            encoder, seconds, steps = finetune(method_cfg, datamodule, log_every)
            info.update(train_seconds=round(seconds, 1), steps=steps)
        t1 = time.perf_counter()
        method_rows = evaluate(encoder, datamodule.tokenizer, method_cfg, queries, database)
        info["eval_seconds"] = round(time.perf_counter() - t1, 1)
        info["seconds"] = round(time.perf_counter() - t0, 1)
        rows += [
            {"dataset": dataset, "split": "test", "method": method, **row} for row in method_rows
        ]
        summary["methods"][method] = info
        summary["rows"] = rows
        summary["wall_time_s"] = round(time.perf_counter() - started, 1)
        write_outputs(out, rows, summary, methods)
        _log(f"{method}: done {info}")
    return summary


def write_outputs(out: Path, rows: list[dict], summary: dict, methods: Sequence[str]) -> None:
    """Write the tidy CSV, the Markdown tables and the JSON summary (each atomically)."""
    write_csv(out / f"{STEM}.csv", rows, COLUMNS)
    title = (
        f"Reverse dictionary ({summary['dataset']}, test split: {summary['sizes']['test_queries']} "
        f"queries, {summary['sizes']['test_database']} lemmas)"
    )
    atomic_write_text(out / f"{STEM}.md", markdown(rows, methods, title))
    atomic_write_json(out / f"{STEM}.json", summary)


def rewrite_tables(out: Path) -> None:
    """The Markdown tables again from `out`'s CSV and JSON (what a finished run wrote)."""
    import csv
    import json

    with (out / f"{STEM}.csv").open(newline="") as f:
        rows = [{**r, "dim": int(r["dim"]), "value": float(r["value"])} for r in csv.DictReader(f)]
    summary = json.loads((out / f"{STEM}.json").read_text())
    write_outputs(out, rows, summary, METHODS)


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("none", "null", "all") else int(text)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line of `experiments/text/reverse_dictionary.py`."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    p.add_argument(
        "--max-train-synsets",
        type=_optional_int,
        default=DEFAULT_TRAIN_SYNSETS,
        help="seeded subset of the train split's synsets, one pair each per epoch ('all': every)",
    )
    p.add_argument(
        "--max-test-synsets",
        type=_optional_int,
        default=DEFAULT_TEST_SYNSETS,
        help="seeded subset of the test split's synsets ('all': every)",
    )
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--out", default=DEFAULT_OUT, help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--log-every", type=int, default=10, help="print the loss every N steps")
    p.add_argument(
        "--tables-only", action="store_true",
        help="rewrite the Markdown tables from the CSV and JSON already in --out; train nothing",
    )  # fmt: skip
    p.add_argument(
        "overrides", nargs="*", help="extra conf/text.yaml overrides, e.g. optimizer.lr=3e-5"
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: run the benchmark; configuration errors end with one line and status 2."""
    from mrl.core.errors import DataNotFoundError

    args = parse_args(argv)
    if args.tables_only:
        rewrite_tables(Path(args.out))
        print((Path(args.out) / f"{STEM}.md").read_text())
        return
    try:
        summary = run_benchmark(
            epochs=args.epochs,
            max_train_synsets=args.max_train_synsets,
            max_test_synsets=args.max_test_synsets,
            batch_size=args.batch_size,
            out=args.out,
            seed=args.seed,
            methods=args.methods,
            overrides=args.overrides,
            log_every=args.log_every,
        )
    except (ConfigError, DataNotFoundError) as err:
        print(f"reverse_dictionary: error: {err}", file=sys.stderr)
        sys.exit(2)
    print((Path(args.out) / f"{STEM}.md").read_text())
    print(f"wall time {summary['wall_time_s']} s; outputs in {args.out}")


if __name__ == "__main__":
    main()
