"""Checks of single config values that every command's config check is built from: a nesting
list, positive integers, a device, a seed, a choice. Each raises `ConfigError` with one line
naming the setting, the bad value and the fix."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from omegaconf import ListConfig

from mrl.core.errors import ConfigError
from mrl.core.nesting import validate_nesting
from mrl.core.validate import is_positive_int, positive_ints


def plain(value: Any) -> Any:
    """A list config as a plain list; anything else as it is."""
    return list(value) if isinstance(value, ListConfig) else value


def check_nesting(value: Any, name: str = "nesting", features: int | None = None) -> list[int]:
    """A non-empty, strictly increasing list of positive integers (at most `features`):
    `validate_nesting`, after refusing a scalar a config could give."""
    value = plain(value)
    if not isinstance(value, list):
        raise ConfigError(
            f"{name}={value!r} is not a list: give the dims as a list, e.g. {name}=[8,16,32]"
        )
    return list(validate_nesting(value, features, name))


def check_positive_ints(value: Any, name: str, example: str = "[10,50]") -> list[int]:
    """A non-empty list of positive integers (`mrl.core.validate.positive_ints`)."""
    return positive_ints(plain(value), name, hint=f"e.g. {name}={example}")


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
