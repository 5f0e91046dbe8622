"""Build the objects of a run from a composed Hydra config: data, model, loggers, trainer."""

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

from mrl.config import call, instantiate
from mrl.training.checkpoint_io import AtomicCheckpointIO
from mrl.training.module import MRLClassifier
from mrl.training.progress import progress_callbacks
from mrl.training.quiet import silence_library_noise


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    """The data module of `cfg.data`, after a cheap check that its files are there."""
    return checked_datamodule(cfg.data)


def checked_datamodule(data_cfg: DictConfig) -> pl.LightningDataModule:
    """Instantiate a data config and check that its files are there (cheap, no decoding)."""
    datamodule = instantiate(data_cfg, "data")
    datamodule.check()
    return datamodule


# The model node of configs written before `model:` named its class.
_MODEL_TARGET = {"_target_": "mrl.training.module.MRLClassifier", "_partial_": True}


def build_model(cfg: DictConfig, num_classes: int, in_channels: int) -> MRLClassifier:
    """The `model:` module with its encoder, nested head and loss from the config, checked
    against each other."""
    encoder = call(instantiate(cfg.encoder, "encoder"), "encoder", in_channels=in_channels)
    # The head checks its nesting against the encoder's width, and the module the loss's weights
    # against the head's nesting: each check runs once, in its owner.
    head = call(
        instantiate(cfg.head, "head"),
        "head",
        in_features=int(encoder.num_features),
        num_classes=num_classes,
    )
    node = cfg.model if "_target_" in cfg.model else OmegaConf.merge(_MODEL_TARGET, cfg.model)
    return call(
        instantiate(node, "model"),
        "model",
        encoder=encoder,
        head=head,
        loss=instantiate(cfg.loss, "loss"),
        optimizer=instantiate(cfg.optimizer, "optimizer"),
        scheduler=instantiate(cfg.scheduler, "scheduler") if cfg.get("scheduler") else None,
        config=OmegaConf.to_container(cfg, resolve=True),
    )


def build_named(group: DictConfig | None, where: str) -> list[Any]:
    """Instantiate every entry of a name -> config mapping (loggers, callbacks), skipping nulls."""
    if not group:
        return []
    return [instantiate(node, f"{where}.{name}") for name, node in group.items() if node]


def build_trainer(
    cfg: DictConfig,
    run_dir: Path,
    extra_callbacks: list[pl.Callback] | None = None,
    **overrides: Any,
) -> pl.Trainer:
    """The Trainer of `cfg.trainer` (any trainer's config), writing logs and checkpoints under
    `run_dir` atomically; `overrides` replace Trainer arguments (e.g. `logger=False`).

    Progress is the Trainer's bar or plain lines (`mrl.training.progress`), as
    `callbacks.progress_bar.mode` and `trainer.enable_progress_bar` say."""
    arguments: dict[str, Any] = {
        "default_root_dir": str(run_dir),
        "logger": build_named(cfg.get("logger"), "logger") or False,
        # The extra ones first: the run lifecycle restores the loops' counters and the random
        # generators at a resumed run's first batch, before any other callback reads them.
        "callbacks": [*(extra_callbacks or []), *build_named(cfg.get("callbacks"), "callbacks")],
        "plugins": [AtomicCheckpointIO()],
    }
    arguments.update(overrides)
    shown = arguments.get("enable_progress_bar", cfg.trainer.get("enable_progress_bar", True))
    arguments["callbacks"], arguments["enable_progress_bar"] = progress_callbacks(
        list(arguments["callbacks"] or []), bool(shown)
    )
    silence_library_noise()
    return instantiate(cfg.trainer, "trainer", **arguments)
