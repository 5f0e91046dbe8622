"""Smaller codes for stored embeddings: float16, int8 with calibrated per-dim ranges, and sign
bits, each with the scores a search uses on them.

The int8 and binary codes are the ones sentence-transformers' `quantize_embeddings` writes:
- int8: per dim, `ranges = [min, max]` over calibration rows, `step = (max - min) / 255` (1 where
  a dim is constant), code = clip(floor((x - min) / step), 0, 255) - 128;
- binary ("ubinary"): bit = x > 0, packed eight to a byte, first dim in the high bit; the
  Hamming distance of two codes counts the dims whose signs differ.

`dequantize_int8` maps a code back to the centre of its bucket (sentence-transformers rescores
with the raw codes instead; the centre is the closer estimate of the value).
"""

from __future__ import annotations

import numpy as np

PRECISIONS = ("float32", "float16", "int8", "binary")


def bytes_per_vector(dim: int, precision: str) -> float:
    """Bytes one `dim`-value vector takes at `precision`."""
    per_value = {"float32": 4.0, "float16": 2.0, "int8": 1.0, "binary": 1 / 8}
    if precision not in per_value:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    return dim * per_value[precision] if precision != "binary" else float(-(-dim // 8))


def int8_ranges(calibration: np.ndarray) -> np.ndarray:
    """`(2, D)` float32 per-dim `[min; max]` of the calibration rows."""
    calibration = np.asarray(calibration, dtype=np.float32)
    if calibration.ndim != 2 or len(calibration) < 2:
        raise ValueError("int8 ranges need at least two calibration rows (a 2-D array)")
    return np.vstack([calibration.min(axis=0), calibration.max(axis=0)])


def _steps(ranges: np.ndarray) -> np.ndarray:
    steps = (ranges[1] - ranges[0]) / 255
    return np.where(steps == 0, 1, steps).astype(np.float32)


def int8_codes(x: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """int8 codes of the rows of `x` under `ranges` (see the module docstring)."""
    x = np.asarray(x, dtype=np.float32)
    ranges = np.asarray(ranges, dtype=np.float32)
    if ranges.shape != (2, x.shape[1]):
        raise ValueError(f"ranges must be (2, {x.shape[1]}), got {ranges.shape}")
    values = np.clip(np.floor((x - ranges[0]) / _steps(ranges)), 0, 255)
    return (values - 128).astype(np.int8)


def dequantize_int8(codes: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """float32 bucket centres of int8 codes (a constant dim's value for its codes)."""
    ranges = np.asarray(ranges, dtype=np.float32)
    centres = ranges[0] + (codes.astype(np.float32) + 128.5) * _steps(ranges)
    return np.where(ranges[1] > ranges[0], centres, ranges[0]).astype(np.float32)


def binary_codes(x: np.ndarray, threshold: float | np.ndarray = 0.0) -> np.ndarray:
    """Rows of `x` as bits (1 where a value exceeds `threshold`, a scalar or one per column)
    packed eight to a byte, first column in the high bit: `uint8 (N, ceil(D / 8))`."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must be a 2-D array (rows x dims), got shape {x.shape}")
    return np.packbits(x > threshold, axis=1)


def unpack_bits(codes: np.ndarray, dim: int) -> np.ndarray:
    """float32 0/1 values of packed codes, `dim` columns."""
    return np.unpackbits(codes, axis=1, count=dim).astype(np.float32)
