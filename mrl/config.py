"""Objects from config nodes: Hydra's `instantiate`, and calls of the `_partial_` factories it
returns, with their errors surfaced as one `ConfigError` line; and the config a checkpoint of
either trainer carries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from mrl.core.errors import ConfigError


def instantiate(node: DictConfig, where: str, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate`, with the underlying error surfaced as one `ConfigError` line."""
    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__ or err
        raise ConfigError(f"{where}: {cause}") from err
    except MissingMandatoryValue as err:  # a `???` the user did not fill, e.g. data.train
        raise ConfigError(f"{where}.{err.key} is required: pass {where}.{err.key}=...") from err


def call(factory: Any, where: str, **kwargs: Any) -> Any:
    """Call a `_partial_` factory; its argument errors become one `ConfigError` line."""
    try:
        return factory(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from err


def saved_config(ckpt: dict, where: str | Path = "checkpoint") -> DictConfig:
    """The training config stored in a checkpoint written by `mrl-train` or `mrl-train-text`."""
    try:
        return OmegaConf.create(ckpt["hyper_parameters"]["config"])
    except (KeyError, TypeError) as err:
        raise ConfigError(f"{where} holds no mrl config: was it written by mrl-train?") from err
