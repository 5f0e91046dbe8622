"""OmegaConf resolvers used by the configs in `conf/`; importing this module registers them."""

import os
import secrets
import time
from collections.abc import Sequence
from typing import Any

from omegaconf import ListConfig, OmegaConf

from mrl.core.errors import ConfigError
from mrl.core.heads import method_head
from mrl.core.validate import positive_int


def run_name(run_id: str | int | None) -> str:
    """The run directory's name: `run_id` when given; under SLURM one named after the job
    (`slurm-<job id>`, or `slurm-<array job>_<task>`), which a requeued job keeps; else a
    timestamp with a random suffix."""
    if run_id not in (None, ""):
        return str(run_id)
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"slurm-{array_job}_{task}"
    if os.environ.get("SLURM_JOB_ID"):
        return f"slurm-{os.environ['SLURM_JOB_ID']}"
    return f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{secrets.token_hex(2)}"


def loss_weights(scheme: str, nesting: list[int]) -> list[float]:
    """Per-dim loss weights with mean 1: `uniform`, `increasing` (w_k proportional to k) or
    `decreasing` (the reverse), k = 1..K over the nesting dims."""
    k = len(nesting)
    ramp = [2.0 * (i + 1) / (k + 1) for i in range(k)]  # 1..K rescaled to mean 1
    schemes = {"uniform": [1.0] * k, "increasing": ramp, "decreasing": ramp[::-1]}
    if scheme not in schemes:
        raise ValueError(f"unknown loss weighting {scheme!r}: choose one of {sorted(schemes)}")
    return schemes[scheme]


def _count(name: str, value: Any) -> int:
    """A positive integer setting of `mrl.scale_lr`; a string of digits (a command line's
    `trainer.devices=2`) counts as its number."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    return positive_int(value, f"mrl.scale_lr: {name}")


def _device_count(devices: Any) -> int:
    """Processes per node from a Trainer `devices` value: a count, or a list of device ids."""
    ids = None
    if isinstance(devices, ListConfig | Sequence) and not isinstance(devices, str):
        ids = list(devices)
    elif isinstance(devices, str) and "," in devices:
        ids = [d for d in devices.split(",") if d.strip()]
    if ids is not None:
        if not ids:
            raise ConfigError("mrl.scale_lr: trainer.devices is an empty list")
        return len(ids)
    try:
        return _count("trainer.devices", devices)
    except ConfigError:
        # "auto" and -1 depend on the machine, so the global batch (and the lr) would too.
        raise ConfigError(
            f"mrl.scale_lr: the learning rate is scaled with the global batch, so "
            f"trainer.devices must be a number of devices or a list of ids, got {devices!r}: "
            f"set trainer.devices=<n>"
        ) from None


def scale_lr(
    lr_per_256: float,
    batch_size: int,
    devices: Any = 1,
    num_nodes: int = 1,
    accumulate_grad_batches: int = 1,
) -> float:
    """The linear scaling rule: `lr_per_256 * global_batch / 256`.

    `global_batch = batch_size * devices * num_nodes * accumulate_grad_batches`, with
    `batch_size` per device (as in the data configs) and `devices` a count or a list of ids.
    """
    if isinstance(lr_per_256, bool) or not isinstance(lr_per_256, int | float) or lr_per_256 <= 0:
        raise ConfigError(f"mrl.scale_lr: lr_per_256 must be a positive number, got {lr_per_256!r}")
    global_batch = (
        _count("data.batch_size", batch_size)
        * _device_count(devices)
        * _count("trainer.num_nodes", num_nodes)
        * _count("trainer.accumulate_grad_batches", accumulate_grad_batches)
    )
    return float(lr_per_256) * global_batch / 256


def head_nesting(method: str, nesting: Sequence[int]) -> list[int]:
    """The head's nesting list of `method` (see `mrl.core.heads.method_head`)."""
    return method_head(method, list(nesting))[0]


def head_tied(method: str) -> bool:
    """Whether `method`'s head is tied (MRL-E)."""
    return method_head(method, [1])[1]


def register_resolvers() -> None:
    """Register `mrl.max`, `mrl.loss_weights`, `mrl.run_name`, `mrl.scale_lr` (`scale_lr`),
    `mrl.head_nesting` and `mrl.head_tied` once per process."""
    if not OmegaConf.has_resolver("mrl.max"):
        OmegaConf.register_new_resolver("mrl.max", lambda xs: max(xs))
    if not OmegaConf.has_resolver("mrl.loss_weights"):
        OmegaConf.register_new_resolver("mrl.loss_weights", loss_weights)
    if not OmegaConf.has_resolver("mrl.run_name"):
        # Cached so that one config object always names the same run directory.
        OmegaConf.register_new_resolver("mrl.run_name", run_name, use_cache=True)
    if not OmegaConf.has_resolver("mrl.scale_lr"):
        OmegaConf.register_new_resolver("mrl.scale_lr", scale_lr)
    if not OmegaConf.has_resolver("mrl.head_nesting"):
        OmegaConf.register_new_resolver("mrl.head_nesting", head_nesting)
        OmegaConf.register_new_resolver("mrl.head_tied", head_tied)


register_resolvers()
