"""The checks of plain values that every layer shares: one positive integer, a list of them.

Each raises `ConfigError` (a `ValueError`) with one line naming the setting, the value and, when
given, the fix. Nesting lists have their own check, `mrl.core.nesting.validate_nesting`.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any

from mrl.core.errors import ConfigError


def is_positive_int(value: Any) -> bool:
    """Whether `value` is an integer (Python or NumPy, not a bool) of at least 1."""
    if isinstance(value, bool):
        return False
    try:
        return operator.index(value) >= 1
    except TypeError:
        return False


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
