"""The checks each command runs on its whole config before any work starts.

One function per command (`check_train_config`, `check_text_config`, `check_eval_config`),
built from shared checks of single values; each raises `ConfigError` with one line naming the
setting, the bad value and the fix. Checks that need the model or the data (the representation
size, the database size) take them as arguments and run as soon as those are known, still
before anything expensive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig

from mrl.core.errors import ConfigError
from mrl.core.nesting import validate_nesting
from mrl.core.validate import is_non_negative_int, is_positive_int, positive_ints
from mrl.runs.directory import check_run_id


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, ListConfig) else value


def check_nesting(value: Any, name: str = "nesting", features: int | None = None) -> list[int]:
    """A non-empty, strictly increasing list of positive integers (at most `features`):
    `validate_nesting`, after refusing a scalar a config could give."""
    value = _plain(value)
    if not isinstance(value, list):
        raise ConfigError(
            f"{name}={value!r} is not a list: give the dims as a list, e.g. {name}=[8,16,32]"
        )
    return list(validate_nesting(value, features, name))


def check_positive_ints(value: Any, name: str, example: str = "[10,50]") -> list[int]:
    """A non-empty list of positive integers (`mrl.core.validate.positive_ints`)."""
    return positive_ints(_plain(value), name, hint=f"e.g. {name}={example}")


def check_positive_int(value: Any, name: str, example: int | str) -> int:
    """One positive integer (`mrl.core.validate.is_positive_int`), in the message style of the
    config checks: the setting as given, then an example."""
    if not is_positive_int(value):
        raise ConfigError(f"{name}={value!r} must be a positive integer, e.g. {name}={example}")
    return value


def check_device(value: Any, name: str = "device") -> None:
    """`auto`, `cpu`, or a CUDA device when this machine has one."""
    import torch

    try:
        device = torch.device("cpu" if value == "auto" else value)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"{name}={value!r} is not a device: use auto, cpu or cuda") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{name}={value!r} but this machine has no CUDA GPU: use {name}=auto")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"{name}={value!r} is not supported: use auto, cpu or cuda")


def check_positive_number(value: Any, name: str) -> float:
    """A finite number above zero."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{name}={value!r} must be a finite number above zero")
    return float(value)


def check_seed(value: Any, name: str = "seed") -> None:
    """null, or an integer in [0, 2**32) (the range every generator accepts)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        raise ConfigError(f"{name}={value!r} must be an integer from 0 to 2**32-1 (or null)")


def check_choice(value: Any, name: str, choices: Sequence[str]) -> None:
    """One of `choices`."""
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {list(choices)}")


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
    check_nesting(cfg.head.get("nesting"), "head.nesting")


def check_text_config(cfg: DictConfig) -> None:
    """Everything `mrl-train-text` can check before building the model."""
    _check_common(cfg)
    check_nesting(cfg.get("nesting"))
    if cfg.get("loss") is not None and cfg.loss.get("nesting") is not None:
        check_nesting(cfg.loss.nesting, "loss.nesting")


EVAL_BACKENDS = ("exact", "hnsw", "ivf", "binary", "numpy")
EVAL_DTYPES = ("float32", "float16")


def faiss_gpus() -> int:
    """GPUs FAISS can use (0 without FAISS or with its CPU build)."""
    from mrl.extras import import_faiss

    faiss = import_faiss()
    if faiss is None:
        return 0
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def check_eval_config(cfg: DictConfig) -> None:
    """Every `mrl-eval` option that does not need the model or the data."""
    check_seed(cfg.get("seed"))
    check_device(cfg.get("device", "auto"))
    if cfg.get("dims") is not None:
        check_nesting(cfg.dims, "dims")
    check_choice(cfg.dtype, "dtype", EVAL_DTYPES)
    check_choice(cfg.checkpoint_format, "checkpoint_format", ("auto", "mrl", "official"))
    database = cfg.get("database") or {}
    if database.get("augmented_copies", 0) != 0:
        check_positive_int(database.augmented_copies, "database.augmented_copies", 18)
        check_seed(database.get("seed"))
    shift = database.get("shift", 0)
    if not is_non_negative_int(shift):
        raise ConfigError(f"database.shift={shift!r} must be an integer >= 0 (pixels), e.g. 2")
    retrieval = cfg.retrieval
    check_choice(retrieval.backend, "retrieval.backend", EVAL_BACKENDS)
    check_positive_int(retrieval.batch_size, "retrieval.batch_size", 4096)
    use_gpu = retrieval.get("use_gpu", "auto")
    if use_gpu not in ("auto", True, False):
        raise ConfigError(f"retrieval.use_gpu={use_gpu!r} must be auto, true or false")
    if use_gpu is True and faiss_gpus() == 0:
        raise ConfigError("retrieval.use_gpu=true but FAISS sees no GPU: install faiss-gpu on a "
                          "machine with one, or pass retrieval.use_gpu=auto")  # fmt: skip
    tie_dim = retrieval.get("tie_aware_max_dim", 0)
    if not is_non_negative_int(tie_dim):
        raise ConfigError(
            f"retrieval.tie_aware_max_dim={tie_dim!r} must be an integer >= 0 (0: off), e.g. 8"
        )
    for name, value in (retrieval.get("index") or {}).items():
        if value is not None:
            check_positive_int(value, f"retrieval.index.{name}", "a positive integer or null")
    if retrieval.enabled:
        check_positive_ints(retrieval.ks, "retrieval.ks", "[10,25,50,100]")
        check_positive_ints(retrieval.knn_ks, "retrieval.knn_ks", "[1,5,20]")
    if cfg.probe.enabled:
        check_positive_int(cfg.probe.max_iter, "probe.max_iter", 100)
    if cfg.heads:
        check_positive_int(cfg.heads_batch_size, "heads_batch_size", 8192)
    if cfg.baselines:
        check_positive_int(cfg.baseline_smallest_dim, "baseline_smallest_dim", 8)
        check_positive_ints(cfg.baseline_retrieval.ks, "baseline_retrieval.ks", "[10]")
        check_positive_ints(cfg.baseline_retrieval.knn_ks, "baseline_retrieval.knn_ks", "[1]")
    if cfg.robustness.retrieval:
        check_positive_ints(cfg.robustness.ks, "robustness.ks", "[10]")
        check_positive_ints(cfg.robustness.knn_ks, "robustness.knn_ks", "[1]")
    tolerance = cfg.adaptive_classification.tolerance
    if cfg.adaptive_classification.enabled and not (
        isinstance(tolerance, int | float)
        and not isinstance(tolerance, bool)
        and 0 <= tolerance < 1
    ):
        raise ConfigError(
            f"adaptive_classification.tolerance={tolerance!r} must be a fraction of top-1 in "
            f"[0, 1), e.g. 0.001 for 0.1 points"
        )
    frac = cfg.adaptive_classification.cal_fraction
    if cfg.adaptive_classification.enabled and not (
        isinstance(frac, int | float) and not isinstance(frac, bool) and 0 < frac < 1
    ):
        raise ConfigError(f"adaptive_classification.cal_fraction={frac!r} must be between 0 and 1")
    adaptive = cfg.adaptive_retrieval
    if adaptive.enabled:
        check_choice(adaptive.get("first_stage", "exact"), "adaptive_retrieval.first_stage",
                     EVAL_BACKENDS)  # fmt: skip
        shortlist = adaptive.shortlist_k
        check_positive_int(shortlist, "adaptive_retrieval.shortlist_k", 200)
        largest_k = max(_plain(retrieval.ks)) if retrieval.enabled else 10
        if shortlist < largest_k:
            raise ConfigError(
                f"adaptive_retrieval.shortlist_k={shortlist} is below the largest retrieval k "
                f"{largest_k}: raise it to at least {largest_k}"
            )
        dims, shortlists = adaptive.funnel_dims, adaptive.funnel_shortlists
        if (dims is None) != (shortlists is None):
            given = "funnel_dims" if dims is not None else "funnel_shortlists"
            raise ConfigError(
                f"adaptive_retrieval.{given} is set without the other: give both "
                f"funnel_dims=[...] and funnel_shortlists=[...] of the same length, or neither"
            )
        if dims is not None:
            dims = check_nesting(dims, "adaptive_retrieval.funnel_dims")
            shortlists = check_positive_ints(shortlists, "adaptive_retrieval.funnel_shortlists")
            if len(dims) != len(shortlists):
                raise ConfigError(
                    f"adaptive_retrieval.funnel_dims {dims} and funnel_shortlists {shortlists} "
                    f"differ in length: give one shortlist per funnel dim"
                )
            if any(b > a for a, b in zip(shortlists, shortlists[1:])):
                raise ConfigError(
                    f"adaptive_retrieval.funnel_shortlists {shortlists} must not increase"
                )
    if cfg.robustness.corruptions:
        check_positive_ints(cfg.robustness.severities, "robustness.severities", "[1,3,5]")


def check_eval_against(
    cfg: DictConfig, features: int, nesting: Sequence[int], database_size: int
) -> list[int]:
    """The `mrl-eval` options that depend on the model and the data; returns the dims."""
    dims = check_nesting(_plain(cfg.dims) if cfg.dims else list(nesting), "dims", features)
    adaptive = cfg.adaptive_retrieval
    if adaptive.enabled and adaptive.funnel_dims is not None:
        check_nesting(adaptive.funnel_dims, "adaptive_retrieval.funnel_dims", features)
    if cfg.retrieval.enabled:
        for name in ("ks", "knn_ks"):
            largest = max(_plain(cfg.retrieval[name]))
            if largest > database_size:
                raise ConfigError(
                    f"retrieval.{name} goes up to {largest} but the database has only "
                    f"{database_size} items: use values of at most {database_size}"
                )
    return dims
