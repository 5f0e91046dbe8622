"""The checks of plain values that every layer shares: one positive integer, a list of them,
one integer >= 0.

Each raises `ConfigError` (a `ValueError`) with one line naming the setting, the value and, when
given, the fix. Nesting lists have their own check, `mrl.core.nesting.validate_nesting`.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any

from mrl.core.errors import ConfigError


def _as_int(value: Any) -> int | None:
    """`value` as an `int` when it is an integer (Python or NumPy, not a bool), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def is_positive_int(value: Any) -> bool:
    """Whether `value` is an integer (Python or NumPy, not a bool) of at least 1."""
    number = _as_int(value)
    return number is not None and number >= 1


def is_non_negative_int(value: Any) -> bool:
    """Whether `value` is an integer (Python or NumPy, not a bool) of at least 0."""
    number = _as_int(value)
    return number is not None and number >= 0


def _fix(hint: str) -> str:
    return f"; {hint}" if hint else ""


def positive_int(value: Any, name: str, *, optional: bool = False, hint: str = "") -> Any:
    """`value` as an `int` (None stays None when `optional`), else `ConfigError` naming `name`."""
    if value is None and optional:
        return None
    if not is_positive_int(value):
        kind = "a positive integer or null" if optional else "a positive integer"
        raise ConfigError(f"{name} must be {kind}, got {value!r}{_fix(hint)}")
    return operator.index(value)


def non_negative_int(value: Any, name: str, *, hint: str = "") -> int:
    """`value` as an `int` when it is an integer >= 0, else `ConfigError` naming `name`."""
    if not is_non_negative_int(value):
        raise ConfigError(f"{name} must be an integer >= 0, got {value!r}{_fix(hint)}")
    return operator.index(value)


def positive_ints(values: Any, name: str, *, hint: str = "") -> list[int]:
    """A non-empty list of positive integers as `int`s, else `ConfigError` naming the entry."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ConfigError(f"{name} must be a list of positive integers, got {values!r}{_fix(hint)}")
    values = list(values)
    if not values:
        raise ConfigError(f"{name} is empty: give at least one positive integer{_fix(hint)}")
    for v in values:
        if not is_positive_int(v):
            raise ConfigError(
                f"{name} entry {v!r} is not a positive integer ({name}={values}){_fix(hint)}"
            )
    return [operator.index(v) for v in values]
