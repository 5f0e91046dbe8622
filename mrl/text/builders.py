"""Build a text run from a composed `conf/text.yaml`: its data module, and its Lightning module
from the `model:` node (`_target_`, `_partial_: true`) with the encoder, the task's parts, the
loss and the optimizer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

from mrl.config import call, instantiate
from mrl.core.errors import ConfigError
from mrl.training.builders import checked_datamodule
from mrl.training.lifecycle import Built

# The module class of each task: the `model:` node of configs written before it named one.
MODEL_TARGETS = {
    "contrastive": "mrl.text.module.TextContrastiveModule",
    "classification": "mrl.text.module.TextClassifierModule",
    "dual_encoder": "mrl.text.dual.DualEncoderModule",
}
TASKS = tuple(MODEL_TARGETS)


def _contrastive_parts(cfg: DictConfig, encoder: Any, datamodule: Any) -> dict[str, Any]:
    return {"encoder": encoder, "nesting": list(cfg.nesting), **dict(cfg.get("module") or {})}


def _classification_parts(cfg: DictConfig, encoder: Any, datamodule: Any) -> dict[str, Any]:
    head = call(
        instantiate(cfg.head, "head"),
        "head",
        in_features=encoder.num_features,
        num_classes=datamodule.num_classes,
    )
    return {"encoder": encoder, "head": head}


def _dual_encoder_parts(cfg: DictConfig, encoder: Any, datamodule: Any) -> dict[str, Any]:
    from mrl.text.dual import DualEncoder

    image_encoder = instantiate(cfg.dual.image_encoder, "dual.image_encoder")
    model = call(
        DualEncoder,
        "dual",
        image_encoder=image_encoder,
        text_encoder=encoder,
        embed_dim=cfg.dual.embed_dim,
    )
    return {"model": model, "nesting": list(cfg.nesting), "num_classes": datamodule.num_classes}


# What each task's module takes besides the loss, the optimizer and the config.
_PARTS: dict[str, Callable[[DictConfig, Any, Any], dict[str, Any]]] = {
    "contrastive": _contrastive_parts,
    "classification": _classification_parts,
    "dual_encoder": _dual_encoder_parts,
}


def model_node(cfg: DictConfig) -> DictConfig:
    """`cfg.model`, naming its task's module class when the config predates `model._target_`."""
    node = cfg.get("model") or OmegaConf.create({})
    if "_target_" in node:
        return node
    return OmegaConf.merge({"_target_": MODEL_TARGETS[cfg.task], "_partial_": True}, node)


def build_text_model(cfg: DictConfig, datamodule: pl.LightningDataModule) -> pl.LightningModule:
    """The `model:` module of `cfg.task` with its encoder, parts and loss, checked against each
    other."""
    task = cfg.get("task")
    if task not in TASKS:
        raise ConfigError(f"task={task!r} is not one of {list(TASKS)} (choose text/task=...)")
    # The modules check `nesting` and `loss.nesting` against the representation size, the head
    # its nesting, and the classifier module the loss's weights: each check once, in its owner.
    # Encoder, parts, then loss: the order the random initialisations draw in.
    parts = _PARTS[task](cfg, instantiate(cfg.encoder, "encoder"), datamodule)
    factory = instantiate(model_node(cfg), "model")
    arguments = {
        **parts,
        "loss": instantiate(cfg.loss, "loss"),
        "optimizer": instantiate(cfg.optimizer, "optimizer"),
        "scheduler": instantiate(cfg.scheduler, "scheduler") if cfg.get("scheduler") else None,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    # Not through `call`: the modules' own ConfigErrors name the options to change already.
    try:
        return factory(**arguments)
    except TypeError as err:  # an option the module does not take, e.g. `+model.foo=1`
        raise ConfigError(f"model: {err}") from err


def build_text_run(cfg: DictConfig) -> Built:
    """The data module (checked) and the Lightning module of a text run."""
    datamodule = checked_datamodule(cfg.data)
    # A data module of evaluation sets (BEIR, STS) is tested by `mrl.text.trainer.results`.
    sets_only = hasattr(datamodule, "eval_specs") and not is_overridden_test(datamodule)
    return Built(datamodule, build_text_model(cfg, datamodule), lightning_test=not sets_only)


def is_overridden_test(datamodule: pl.LightningDataModule) -> bool:
    """Whether the data module defines its own Lightning test loaders."""
    return type(datamodule).test_dataloader is not pl.LightningDataModule.test_dataloader
