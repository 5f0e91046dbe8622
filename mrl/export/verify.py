"""Checks of an exported tier: ONNX Runtime against PyTorch, the int8 variant against the float
model, and the figures the model card records.

A float export that differs from PyTorch by more than `PARITY_ATOL` (on unit vectors) is an
`ExportError`: the graph is wrong, and nothing is kept. The int8 model is held to
`INT8_MIN_COSINE`, its smallest cosine to the float model's embedding of the same input.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from mrl.export.runtime import open_session

# Float ONNX against PyTorch: both compute the same float32 operations in another order.
PARITY_ATOL = 1e-4
# Dynamic int8 quantisation perturbs every weight; below this cosine a tier's neighbours change.
INT8_MIN_COSINE = 0.95


class ExportError(Exception):
    """An exported model failed its check against the model it was exported from."""


def session(path: str | Path):  # -> onnxruntime.InferenceSession
    """An ONNX Runtime CPU session of `path`, with as many threads as PyTorch uses."""
    return open_session(path, torch.get_num_threads())


def run_session(sess, feeds: dict[str, np.ndarray], output: str) -> np.ndarray:
    """One output of `sess` on `feeds`, as float32."""
    return np.asarray(sess.run([output], feeds)[0], dtype=np.float32)


def run_outputs(sess, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
    """The outputs `outputs` of `sess` on `feeds`, from one call, by name, as float32."""
    values = sess.run(outputs, feeds)
    return {name: np.asarray(v, dtype=np.float32) for name, v in zip(outputs, values)}


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of `a` with the same row of `b` (1 where both are 0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    dots = (a * b).sum(axis=1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 1.0)


def parity(got: np.ndarray, want: np.ndarray) -> dict[str, float | int]:
    """How far `got` is from `want` (same shape): max abs difference, min cosine per row, the
    largest deviation of a row's norm from 1, and the number of all-zero rows of `want`."""
    if got.shape != want.shape:
        raise ExportError(f"exported output has shape {got.shape}, PyTorch's {want.shape}")
    norms = np.linalg.norm(np.asarray(got, np.float64), axis=1)
    zero = np.linalg.norm(np.asarray(want, np.float64), axis=1) == 0
    return {
        "rows": int(got.shape[0]),
        "max_abs_diff": float(np.abs(got.astype(np.float64) - want).max()),
        "min_cosine": float(row_cosines(got, want).min()),
        "max_norm_error": float(np.abs(norms[~zero] - 1).max()) if (~zero).any() else 0.0,
        "zero_rows": int(zero.sum()),
    }


def require_parity(figures: dict, what: str, atol: float = PARITY_ATOL) -> dict:
    """`figures` with the tolerance recorded; `ExportError` when they exceed it."""
    if not figures["max_abs_diff"] <= atol:  # also catches NaN
        raise ExportError(
            f"{what} differs from PyTorch by {figures['max_abs_diff']:.3g} (tolerance {atol:g}, "
            f"min cosine {figures['min_cosine']:.6f}): the exported graph is not the model"
        )
    return {**figures, "tolerance_abs": atol}


class _DropPreprocessingAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def quantize_int8(model: Path, out: Path) -> Path:
    """Dynamic int8 quantisation (weights int8 per output channel, activations quantised at run
    time) of an ONNX model with ONNX Runtime's `quantize_dynamic`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-tensor scales cost MiniLM's short sentences up to 0.09 of cosine at dim 64; per
    # channel, 0.02.
    advice = _DropPreprocessingAdvice()
    logging.getLogger().addFilter(advice)
    try:
        quantize_dynamic(str(model), str(out), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        logging.getLogger().removeFilter(advice)
    return out


def int8_figures(
    float_embeddings: np.ndarray,
    int8_embeddings: np.ndarray,
    float_path: Path,
    int8_path: Path,
    min_cosine: float = INT8_MIN_COSINE,
    output: str | None = None,
) -> dict:
    """Size and fidelity of an int8 model against the float one on the same inputs (their
    output `output`); `ExportError` when its smallest cosine is below `min_cosine`."""
    cos = row_cosines(int8_embeddings, float_embeddings)
    where = f"{int8_path} ({output})" if output else str(int8_path)
    figures = {
        "file": int8_path.name,
        "output": output,
        "size_bytes": os.path.getsize(int8_path),
        "float_size_bytes": os.path.getsize(float_path),
        "rows": int(cos.shape[0]),
        "min_cosine": float(cos.min()),
        "mean_cosine": float(cos.mean()),
        "max_abs_diff": float(np.abs(int8_embeddings - float_embeddings).max()),
        "tolerance_min_cosine": min_cosine,
    }
    if not figures["min_cosine"] >= min_cosine:
        raise ExportError(
            f"{where} has cosine {figures['min_cosine']:.4f} to the float model (tolerance "
            f"{min_cosine}): int8 loses too much at this dim; export without --int8"
        )
    return figures
