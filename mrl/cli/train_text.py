"""`mrl-train-text`: train a text task from `conf/text.yaml`, test it, write `results.json`.

Tasks (`text/task=...`): `contrastive` (Matryoshka contrastive fine-tuning, reverse-dictionary
retrieval per dim), `classification` (Matryoshka heads on a text encoder, accuracy per dim) and
`dual_encoder` (image-text towers, zero-shot accuracy per dim). The run directory receives
`results.json` (atomic), `checkpoints/last.ckpt` (see `mrl.training.lifecycle`) and, for the
text-encoder tasks, the encoder as a sentence-transformers folder `model/`.
"""

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

import mrl.training.resolvers  # noqa: F401  (registers the config resolvers before Hydra composes)
from mrl.commands import hydra_cli, run_command
from mrl.conf import CONFIG_DIR
from mrl.config import call, instantiate
from mrl.core.errors import ConfigError
from mrl.training.builders import build_trainer
from mrl.training.checks import check_text_config
from mrl.training.lifecycle import Built, TrainerSpec, run_training

log = logging.getLogger("mrl.cli.train_text")

TASKS = ("contrastive", "classification", "dual_encoder")


def _common(cfg: DictConfig) -> dict[str, Any]:
    return {
        "optimizer": instantiate(cfg.optimizer, "optimizer"),
        "scheduler": instantiate(cfg.scheduler, "scheduler") if cfg.get("scheduler") else None,
        "no_weight_decay_on_norm_and_bias": cfg.model.no_weight_decay_on_norm_and_bias,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


def build_text_model(cfg: DictConfig, datamodule: pl.LightningDataModule) -> pl.LightningModule:
    """The Lightning module of `cfg.task`, its parts checked against each other."""
    from mrl.text.dual import DualEncoder, DualEncoderModule
    from mrl.text.module import TextClassifierModule, TextContrastiveModule

    task = cfg.get("task")
    if task not in TASKS:
        raise ConfigError(f"task={task!r} is not one of {list(TASKS)} (choose text/task=...)")
    # The modules check `nesting` and `loss.nesting` against the representation size, the head
    # its nesting, and the classifier module the loss's weights: each check once, in its owner.
    encoder = instantiate(cfg.encoder, "encoder")
    nesting = list(cfg.nesting)
    if task == "dual_encoder":
        image_encoder = instantiate(cfg.dual.image_encoder, "dual.image_encoder")
        model = call(
            DualEncoder,
            "dual",
            image_encoder=image_encoder,
            text_encoder=encoder,
            embed_dim=cfg.dual.embed_dim,
        )
        return DualEncoderModule(
            model,
            instantiate(cfg.loss, "loss"),
            nesting=nesting,
            num_classes=datamodule.num_classes,
            **_common(cfg),
        )
    if task == "contrastive":
        return TextContrastiveModule(
            encoder,
            instantiate(cfg.loss, "loss"),
            nesting=nesting,
            **dict(cfg.get("module") or {}),
            **_common(cfg),
        )
    head = call(
        instantiate(cfg.head, "head"),
        "head",
        in_features=encoder.num_features,
        num_classes=datamodule.num_classes,
    )
    return TextClassifierModule(encoder, head, instantiate(cfg.loss, "loss"), **_common(cfg))


def text_encoder_of(model: pl.LightningModule) -> Any:
    """The `HFTextEncoder` of a contrastive or classification module (None for others)."""
    from mrl.text.module import TextClassifierModule, TextContrastiveModule

    if isinstance(model, TextContrastiveModule):
        return model.encoder
    if isinstance(model, TextClassifierModule):
        return model.text_encoder
    return None


def build(cfg: DictConfig) -> Built:
    """The data module (checked) and the Lightning module of a text run."""
    datamodule = instantiate(cfg.data, "data")
    datamodule.check()
    return Built(datamodule, build_text_model(cfg, datamodule))


def results(cfg: DictConfig, trainer: pl.Trainer, built: Built) -> dict[str, Any]:
    """The per-dim test metrics of the final weights."""
    from mrl.text.module import per_dim_rows

    model = built.model
    return {
        "experiment": str(cfg.name),
        "task": str(cfg.task),
        "nesting": list(model.nesting),
        "per_dim": per_dim_rows(trainer.callback_metrics, model.nesting, tuple(model.metric_names)),
    }


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
    title = f"{cfg.name} [{cfg.task}]: test metrics per dim ({run_dir})"
    print(format_rows(results["per_dim"], title))


# The lifecycle writes last.ckpt itself; Lightning's default checkpoint callback would add an
# `epoch=N-step=M.ckpt` copy (~250 MB for MiniLM) unless a config asks for one.
SPEC = TrainerSpec(
    prog="mrl-train-text", check=check_text_config, build=build, results=results, finish=finish
)


def train_text(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test and record one text run; returns the results dict written to `results.json`."""
    spec = SPEC
    if not cfg.get("callbacks"):
        spec = replace(SPEC, trainer_overrides={"enable_checkpointing": False})
    return run_training(cfg, spec, build_trainer)


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


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="text")
def main(cfg: DictConfig) -> None:
    """Console entry point: bad input is one line and exit status 2 (see `run_command`)."""
    run_command("mrl-train-text", lambda: train_text(cfg))


cli = hydra_cli(main, "mrl-train-text")

if __name__ == "__main__":
    cli()
