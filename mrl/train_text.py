"""`mrl-train-text`: train a text task from `conf/text.yaml`, test it, write `results.json`.

Tasks (`text/task=...`): `contrastive` (Matryoshka contrastive fine-tuning, reverse-dictionary
retrieval per dim), `classification` (Matryoshka heads on a text encoder, accuracy per dim) and
`dual_encoder` (image-text towers, zero-shot accuracy per dim). The run directory receives
`results.json` (atomic), `checkpoints/last.ckpt` and, for the text-encoder tasks, the encoder as a
sentence-transformers folder `model/`.
"""

import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

import mrl.config  # noqa: F401  (registers the config resolvers before Hydra composes)
from mrl.builders import _call, _instantiate, build_named
from mrl.errors import ConfigError, DataNotFoundError
from mrl.results import atomic_write_json
from mrl.train import resolve_resume

log = logging.getLogger("mrl.train_text")
CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"
TASKS = ("contrastive", "classification", "dual_encoder")


def _check_nesting(nesting: list[int], features: int, where: str) -> None:
    if max(nesting, default=0) > features:
        raise ConfigError(
            f"{where} goes up to {max(nesting)} but the representation has only {features} "
            f"features: lower `nesting`"
        )


def _common(cfg: DictConfig) -> dict[str, Any]:
    return {
        "optimizer": _instantiate(cfg.optimizer, "optimizer"),
        "scheduler": _instantiate(cfg.scheduler, "scheduler") if cfg.get("scheduler") else None,
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
    encoder = _instantiate(cfg.encoder, "encoder")
    nesting = list(cfg.nesting)
    if task == "dual_encoder":
        image_encoder = _instantiate(cfg.dual.image_encoder, "dual.image_encoder")
        model = _call(
            DualEncoder,
            "dual",
            image_encoder=image_encoder,
            text_encoder=encoder,
            embed_dim=cfg.dual.embed_dim,
        )
        _check_nesting(nesting, model.num_features, "nesting")
        return DualEncoderModule(
            model,
            _instantiate(cfg.loss, "loss"),
            nesting=nesting,
            num_classes=datamodule.num_classes,
            **_common(cfg),
        )
    _check_nesting(nesting, encoder.num_features, "nesting")
    if task == "contrastive":
        loss = _instantiate(cfg.loss, "loss")
        _check_nesting(list(loss.nesting), encoder.num_features, "loss.nesting")
        return TextContrastiveModule(
            encoder, loss, nesting=nesting, **dict(cfg.get("module") or {}), **_common(cfg)
        )
    head = _call(
        _instantiate(cfg.head, "head"),
        "head",
        in_features=encoder.num_features,
        num_classes=datamodule.num_classes,
    )
    loss = _instantiate(cfg.loss, "loss")
    if cfg.loss.get("weights") is not None and len(cfg.loss.weights) != len(head.nesting):
        raise ConfigError(
            f"loss.weights has {len(cfg.loss.weights)} entries but head.nesting has "
            f"{len(head.nesting)} dims {list(head.nesting)}: give one weight per dim"
        )
    return TextClassifierModule(encoder, head, loss, **_common(cfg))


def text_encoder_of(model: pl.LightningModule) -> Any:
    """The `HFTextEncoder` of a contrastive or classification module (None for others)."""
    from mrl.text.module import TextClassifierModule, TextContrastiveModule

    if isinstance(model, TextContrastiveModule):
        return model.encoder
    if isinstance(model, TextClassifierModule):
        return model.text_encoder
    return None


def train_text(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test and record one text run; returns the results dict written to `results.json`."""
    from mrl.text.export import export_sentence_transformer
    from mrl.text.module import per_dim_rows

    started = time.time()
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.run_dir)
    ckpt_path = resolve_resume(run_dir, cfg.get("ckpt_path"))
    datamodule = _instantiate(cfg.data, "data")
    datamodule.check()
    model = build_text_model(cfg, datamodule)
    trainer = _instantiate(
        cfg.trainer,
        "trainer",
        default_root_dir=str(run_dir),
        logger=build_named(cfg.get("logger"), "logger") or False,
        callbacks=build_named(cfg.get("callbacks"), "callbacks"),
    )
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except SystemExit:  # Lightning exits after saving checkpoints on Ctrl-C
        print(
            f"mrl-train-text: interrupted; rerun with hydra.run.dir={run_dir} to resume",
            file=sys.stderr,
        )
        raise
    trainer.test(model, datamodule=datamodule, verbose=False)

    rows = per_dim_rows(trainer.callback_metrics, model.nesting, tuple(model.metric_names))
    results = {
        "experiment": str(cfg.name),
        "task": str(cfg.task),
        "nesting": list(model.nesting),
        "per_dim": rows,
        "seed": cfg.get("seed"),
        "wall_time_s": round(time.time() - started, 1),
        "run_dir": str(run_dir),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    if trainer.is_global_zero:
        encoder = text_encoder_of(model)
        if cfg.get("save_model") and encoder is not None:
            results["model_dir"] = str(
                export_sentence_transformer(encoder, datamodule.tokenizer, run_dir / "model")
            )
        atomic_write_json(run_dir / "results.json", results)
        print(format_rows(rows, f"{cfg.name} [{cfg.task}]: test metrics per dim ({run_dir})"))
    return results


def format_rows(rows: list[dict], title: str) -> str:
    """A plain-text table of per-dim metrics (fractions shown in percent)."""
    names = [k for k in rows[0] if k != "dim"] if rows else []
    lines = [title, "  ".join([f"{'dim':>6}", *(f"{n + ' %':>12}" for n in names)])]
    for row in rows:
        cells = [f"{100 * row[n]:12.2f}" if row[n] is not None else f"{'-':>12}" for n in names]
        lines.append("  ".join([f"{row['dim']:>6}", *cells]))
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="text")
def main(cfg: DictConfig) -> None:
    """Console entry point; bad config or missing data ends with one line and exit status 2."""
    try:
        train_text(cfg)
    except (ConfigError, DataNotFoundError) as err:
        print(f"mrl-train-text: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
