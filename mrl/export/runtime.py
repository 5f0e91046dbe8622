"""Exported tiers under ONNX Runtime: a CPU session with a set number of threads, a tier's
embeddings (one output of the export's model) over batches of inputs, and the wall time of a
session's calls."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np


def open_session(path: str | Path, threads: int):  # -> onnxruntime.InferenceSession
    """An ONNX Runtime CPU session of `path` with `threads` intra-op threads and one inter-op
    thread, operators run one after another."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # warnings about unused initialisers are not the user's
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def embed(sess, batches: Iterable[dict[str, np.ndarray]], output: str) -> np.ndarray:
    """The output `output` of `sess` (a tier's embeddings) over every batch of feeds, stacked."""
    return np.concatenate([sess.run([output], feeds)[0] for feeds in batches])


def time_calls(
    sess, feeds: Sequence[dict[str, np.ndarray]], calls: int, output: str, start: int = 0
) -> list[float]:
    """The wall seconds of `calls` calls of `sess` for its output `output`, on `feeds` in turn
    from the `start`-th (wrapping around)."""
    seconds = []
    for i in range(calls):
        inputs = feeds[(start + i) % len(feeds)]
        began = time.perf_counter()
        sess.run([output], inputs)
        seconds.append(time.perf_counter() - began)
    return seconds
