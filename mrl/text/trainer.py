"""The text trainer (`mrl-train-text`): what a text run builds, reports and exports around the
run lifecycle of `mrl.training.lifecycle`.

The run directory receives `results.json` (atomic), `checkpoints/last.ckpt` and, for the
text-encoder tasks, the encoder as a sentence-transformers folder `model/`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from omegaconf import DictConfig

from mrl.text.builders import build_text_run
from mrl.text.evaluation import (
    TEXT_SETS_FILE,
    evaluate_data_sets,
    per_dim_by_set,
    set_metric_values,
)
from mrl.training.builders import build_trainer
from mrl.training.checks import check_text_config
from mrl.training.lifecycle import Built, TrainerSpec, run_training, table_title


def text_encoder_of(model: pl.LightningModule) -> Any:
    """The `HFTextEncoder` of a contrastive or classification module (None for others)."""
    from mrl.text.module import TextClassifierModule, TextContrastiveModule

    if isinstance(model, TextContrastiveModule):
        return model.encoder
    if isinstance(model, TextClassifierModule):
        return model.text_encoder
    return None


def results(cfg: DictConfig, trainer: pl.Trainer, built: Built) -> dict[str, Any]:
    """The per-dim test metrics of the final weights: Lightning's test metrics, or, for data
    with evaluation sets (`data.test`), every set's metrics per dim with their retention."""
    from mrl.text.module import per_dim_rows

    model = built.model
    out = {"experiment": str(cfg.name), "task": str(cfg.task), "nesting": list(model.nesting)}
    if built.lightning_test:
        names = tuple(model.metric_names)
        return {**out, "per_dim": per_dim_rows(trainer.callback_metrics, model.nesting, names)}
    rows = []
    if trainer.is_global_zero:  # the other processes have nothing to add
        rows = evaluate_data_sets(built.datamodule, text_encoder_of(model), model.nesting,
                                  trainer.strategy.root_device)  # fmt: skip
    log_set_rows(trainer, rows)
    return {**out, "per_dim": per_dim_by_set(rows), "eval_sets": rows}


def log_set_rows(trainer: pl.Trainer, rows: list[dict[str, Any]]) -> None:
    """Each set's metrics and retention per dim to the loggers, `test/<set>/<metric>@<dim>`."""
    values = set_metric_values(rows, "test")
    for logger in trainer.loggers if values else []:
        logger.log_metrics(values, step=trainer.global_step)
        logger.save()


def finish(cfg: DictConfig, run_dir: Path, built: Built, results: dict[str, Any]) -> None:
    """Export the encoder as a sentence-transformers folder (when asked) and print the table."""
    from mrl.text.export import export_sentence_transformer
    from mrl.text.st_card import MatryoshkaCard

    encoder = text_encoder_of(built.model)
    if cfg.get("save_model") and encoder is not None:
        card = MatryoshkaCard.of_run(cfg, results["nesting"], results["per_dim"])
        path = export_sentence_transformer(
            encoder, built.datamodule.tokenizer, run_dir / "model", card
        )
        results["model_dir"] = str(path)
    title = table_title(cfg, f"{cfg.name} [{cfg.task}]: test metrics per dim ({run_dir})")
    if "eval_sets" in results:
        from mrl.text.evaluation import format_set_tables, write_set_rows

        write_set_rows(results["eval_sets"], run_dir / TEXT_SETS_FILE)
        print(format_set_tables(results["eval_sets"], title))
    else:
        print(format_rows(results["per_dim"], title))


def format_rows(rows: list[dict], title: str) -> str:
    """A plain-text table of per-dim metrics (fractions shown in percent, under the names of
    `mrl.runs.format.metric_label`: "mAP@10 (paper, ÷k)", "mAP@10 (standard)"), with the first
    metric's retention: each dim's value as a percentage of the full dim's."""
    from mrl.eval.retention import retention
    from mrl.runs.format import metric_label

    names = [k for k in rows[0] if k != "dim"] if rows else []
    first = names[0] if names else None
    tidy = [{"method": "", "dim": r["dim"], "metric": first, "value": r[first]} for r in rows]
    kept = {r["dim"]: r["retention"] for r in retention(tidy)} if first else {}
    labels = {n: f"{metric_label(n)} %" for n in names}
    width = {n: max(12, len(labels[n])) for n in names}
    header = [f"{'dim':>6}", *(f"{labels[n]:>{width[n]}}" for n in names)]
    kept_label = f"{metric_label(first)} kept %" if first else ""
    kept_width = max(16, len(kept_label))
    lines = [title, "  ".join([*header, f"{kept_label:>{kept_width}}"] if kept else header)]
    for row in rows:
        cells = [
            f"{100 * row[n]:{width[n]}.2f}" if row[n] is not None else f"{'-':>{width[n]}}"
            for n in names
        ]
        if kept:
            cells.append(
                f"{kept[row['dim']]:{kept_width}.1f}"
                if row["dim"] in kept
                else f"{'-':>{kept_width}}"
            )
        lines.append("  ".join([f"{row['dim']:>6}", *cells]))
    return "\n".join(lines)


# The lifecycle writes last.ckpt itself; Lightning's default checkpoint callback would add an
# `epoch=N-step=M.ckpt` copy (~250 MB for MiniLM) unless a config asks for one.
SPEC = TrainerSpec(
    prog="mrl-train-text",
    check=check_text_config,
    build=build_text_run,
    results=results,
    finish=finish,
)


def train_text(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test and record one text run; returns the results dict written to `results.json`."""
    spec = SPEC
    if not asks_for_checkpoints(cfg):
        spec = replace(SPEC, trainer_overrides={"enable_checkpointing": False})
    return run_training(cfg, spec, build_trainer)


def asks_for_checkpoints(cfg: DictConfig) -> bool:
    """Whether the config's callbacks include a Lightning `ModelCheckpoint` (other callbacks,
    e.g. the progress report, leave Lightning's own checkpoint copies off)."""
    nodes = (cfg.get("callbacks") or {}).values()
    return any("ModelCheckpoint" in str((node or {}).get("_target_", "")) for node in nodes)
