"""Validation and helpers for nesting lists (the representation sizes m that MRL trains)."""

import operator
from collections.abc import Iterable, Sequence
from itertools import pairwise

from mrl.core.errors import ConfigError
from mrl.core.validate import is_positive_int


def validate_nesting(
    nesting: Iterable[int], in_features: int | None = None, name: str = "nesting"
) -> tuple[int, ...]:
    """Return `nesting` as an ascending tuple of `int`s, or raise `ConfigError` (a `ValueError`)
    naming the bad value.

    A valid nesting list is non-empty, made of strictly increasing positive integers, and its
    largest entry is at most `in_features` (the representation size) when that is given.
    `name` is the setting the list came from, for the message. This is the one rule for a
    nesting list: config checks, heads, losses and the evaluation call it; `check_fits` is its
    width half, for a list its owner has already validated.
    """
    if isinstance(nesting, (str, bytes)) or not isinstance(nesting, Iterable):
        raise ConfigError(f"{name} must be a list of integers, got {nesting!r}")
    dims = tuple(nesting)
    if not dims:
        raise ConfigError(f"{name} is empty: give at least one representation size, e.g. [8, 16]")
    for m in dims:
        if not is_positive_int(m):
            raise ConfigError(f"{name} entry {m!r} is not a positive integer ({name}={list(dims)})")
    dims = tuple(operator.index(m) for m in dims)
    for a, b in pairwise(dims):
        if b <= a:
            raise ConfigError(
                f"{name} must be strictly increasing, but {b} follows {a} ({name}={list(dims)})"
            )
    if in_features is not None:
        check_fits(dims, in_features, name)
    return dims


def check_fits(dims: Sequence[int], in_features: int, name: str = "nesting") -> None:
    """Raise `ConfigError` when the largest of the valid, ascending `dims` exceeds `in_features`
    (the representation size); `name` is the setting the list came from, for the message."""
    if dims[-1] > in_features:
        raise ConfigError(
            f"largest {name} dim {dims[-1]} exceeds the representation size {in_features} "
            f"({name}={list(dims)}): lower the list or use a wider encoder"
        )


def halving_nesting(largest: int, smallest: int) -> list[int]:
    """Powers-of-two style nesting `[smallest, 2*smallest, ..., largest]` as in the paper."""
    if smallest <= 0 or largest < smallest:
        raise ValueError(
            f"need 0 < smallest <= largest, got smallest={smallest}, largest={largest}"
        )
    dims = [largest]
    while dims[-1] // 2 >= smallest:
        dims.append(dims[-1] // 2)
    return dims[::-1]
