"""The checks the trainers run on their whole config before any work starts.

One function per trainer (`check_train_config`, `check_text_config`; `mrl-eval`'s is
`mrl.eval.checks.check_eval_config`), built from the shared checks of single values in
`mrl.checks`; each raises `ConfigError` with one line naming the
setting, the bad value and the fix. Checks that need the model or the data (the representation
size, the database size) take them as arguments and run as soon as those are known, still
before anything expensive.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from mrl.checks import check_nesting, check_positive_number, check_seed
from mrl.core.errors import ConfigError
from mrl.core.validate import is_positive_int
from mrl.runs.directory import check_run_id


def check_training_length(trainer: Any) -> None:
    """`trainer.max_steps` is -1 (no limit) or positive and `trainer.max_epochs` null, -1 or
    positive: a run of zero steps or epochs would train nothing and report chance accuracy."""
    for key, unlimited in (("max_steps", (-1,)), ("max_epochs", (None, -1))):
        value = trainer.get(key, unlimited[0])
        if value in unlimited and not isinstance(value, bool):
            continue
        if not is_positive_int(value):
            fix = "-1 for no limit" if key == "max_steps" else "null or -1 for no limit"
            raise ConfigError(f"trainer.{key}={value!r} must be a positive integer ({fix})")


def _check_common(cfg: DictConfig) -> None:
    check_seed(cfg.get("seed"))
    if cfg.get("trainer") is not None:
        check_training_length(cfg.trainer)
    check_run_id(cfg.get("run_id"))
    optimizer = cfg.get("optimizer") or {}
    if "lr" in optimizer:
        check_positive_number(optimizer.lr, "optimizer.lr")
    for key in ("weight_decay", "momentum"):
        value = optimizer.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0
        ):
            raise ConfigError(f"optimizer.{key}={value!r} must be a number >= 0")
    ckpt = cfg.get("ckpt_path")
    if ckpt is not None and not isinstance(ckpt, str):
        raise ConfigError(f"ckpt_path={ckpt!r} must be a path to a checkpoint file (or null)")
    check_logger_installed(cfg.get("logger"))


def check_logger_installed(loggers: Any) -> None:
    """A wandb logger in the config needs the `tracking` extra: one line naming it and the way
    round (`logger=csv`), before anything is built."""
    from mrl.extras import missing_message

    for name, node in (loggers or {}).items():
        target = str((node or {}).get("_target_", ""))
        if "wandb" in target.lower() and (message := missing_message(f"logger.{name}", "tracking")):
            raise ConfigError(f"{message}, or train without it: logger=csv")


def check_train_config(cfg: DictConfig) -> None:
    """Everything `mrl-train` can check before building the model."""
    _check_common(cfg)
    check_nesting(cfg.get("nesting"))
    # Resolving the head's dims checks `method` (`mrl.head_nesting`). Dims the method takes from
    # `nesting` were checked with it; only dims set outright (head.nesting=[8]) are checked here.
    head_nesting = cfg.head.get("nesting")
    if not OmegaConf.is_interpolation(cfg.head, "nesting"):
        check_nesting(head_nesting, "head.nesting")


def check_text_config(cfg: DictConfig) -> None:
    """Everything `mrl-train-text` can check before building the model."""
    _check_common(cfg)
    check_nesting(cfg.get("nesting"))
    loss = cfg.get("loss")
    # `loss.nesting: ${nesting}` was checked with `nesting`; only a list of its own is checked here.
    if loss is not None and loss.get("nesting") is not None:
        if not OmegaConf.is_interpolation(loss, "nesting"):
            check_nesting(loss.nesting, "loss.nesting")
