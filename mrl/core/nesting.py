"""Validation and helpers for nesting lists (the representation sizes m that MRL trains), and
the count of all-zero prefixes, whose embeddings are zero vectors."""

import operator
from collections.abc import Iterable, Sequence
from itertools import pairwise

import numpy as np

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


# Rows per step of `zero_prefix_counts`: bounds its boolean work array to 64k x width bytes.
_ZERO_PREFIX_CHUNK = 65536


def zero_prefix_counts(features: np.ndarray, dims: Sequence[int]) -> dict[int, int]:
    """`{m: rows of features[:, :m] that are all zero}` for every m of `dims`; `features` is
    `(N, width)`, any numeric dtype (a CPU tensor too). Such a prefix has no direction: its
    unit-normalised embedding is the zero vector."""
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features must be (N, width), got shape {features.shape}")
    width = features.shape[1]
    first_nonzero = np.empty(len(features), dtype=np.int64)
    for start in range(0, len(features), _ZERO_PREFIX_CHUNK):
        nonzero = features[start : start + _ZERO_PREFIX_CHUNK] != 0
        first = nonzero.argmax(axis=1)
        first_nonzero[start : start + len(nonzero)] = np.where(nonzero.any(axis=1), first, width)
    return {int(m): int(np.count_nonzero(first_nonzero >= m)) for m in dims}
