"""Adaptive classification with nested heads: a confidence cascade over the Matryoshka dims.

An example goes up the nesting dims and exits at the first head whose maximum softmax
probability reaches that dim's threshold; the largest head always accepts. The thresholds are
calibrated per dim on one split and the cascade is evaluated on a disjoint report split, so the
reported accuracy / expected-dimension trade-off is not fitted to the examples it is measured on.

Everything here is numpy on precomputed probabilities of shape ``(K, N, C)``: K heads in
ascending dim order, N examples, C classes.
"""

from collections.abc import Sequence

import numpy as np

# Accuracies are ratios of counts; this absorbs the rounding of e.g. 9 / 10 against 0.9.
_EPS = 1e-12


def _check_probs(probs: np.ndarray) -> np.ndarray:
    probs = np.asarray(probs)
    if probs.ndim != 3:
        raise ValueError(f"probs must have shape (K, N, C), got {probs.shape}")
    if probs.shape[0] == 0 or probs.shape[2] == 0:
        raise ValueError(f"probs needs at least one head and one class, got {probs.shape}")
    return probs


def _check_inputs(
    probs: np.ndarray, labels: np.ndarray, dims: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    probs = _check_probs(probs)
    labels = np.asarray(labels)
    if labels.shape != (probs.shape[1],):
        raise ValueError(f"labels must have shape ({probs.shape[1]},), got {labels.shape}")
    if dims is None:
        return probs, labels, None
    dims_arr = np.asarray(dims)
    if dims_arr.shape != (probs.shape[0],):
        raise ValueError(f"need one dim per head ({probs.shape[0]}), got {list(dims)}")
    if np.any(np.diff(dims_arr) <= 0):
        raise ValueError(f"dims must be strictly increasing, got {list(dims)}")
    return probs, labels, dims_arr


def _full_thresholds(thresholds: Sequence[float], k: int) -> np.ndarray:
    """Thresholds as a length-K float array; K-1 values are accepted (the last is implied)."""
    thr = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if thr.shape[0] == k - 1:
        thr = np.append(thr, 0.0)
    if thr.shape[0] != k:
        raise ValueError(f"need {k} thresholds (or {k - 1}), got {thr.shape[0]}")
    return thr


def cascade_predict(
    probs: np.ndarray, thresholds: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Run the cascade on every example at once.

    Args:
        probs: ``(K, N, C)`` softmax outputs of the K nested heads, smallest dim first.
        thresholds: K per-head thresholds on the max probability (K-1 also accepted); an
            example exits at the first head ``k`` with ``max prob >= thresholds[k]``. The last
            threshold is ignored: the largest head always accepts.

    Returns:
        ``(exit_index, predictions)``, both ``(N,)`` integer arrays: the head each example exits
        at and that head's argmax class.
    """
    probs = _check_probs(probs)
    k, n, _ = probs.shape
    thr = _full_thresholds(thresholds, k)
    accept = probs.max(axis=2) >= thr[:, None]
    accept[-1] = True
    exit_index = np.argmax(accept, axis=0)  # first True per column
    predictions = np.argmax(probs[exit_index, np.arange(n)], axis=1)
    return exit_index, predictions


def cascade_summary(
    probs: np.ndarray, labels: np.ndarray, dims: Sequence[int], thresholds: Sequence[float]
) -> dict:
    """Accuracy, expected dim and per-dim exit fractions of the cascade under ``thresholds``.

    Returns:
        ``{"accuracy": float, "expected_dim": float, "exit_fractions": {dim: fraction}}``.
    """
    probs, labels, dims_arr = _check_inputs(probs, labels, dims)
    exit_index, predictions = cascade_predict(probs, thresholds)
    n = labels.shape[0]
    counts = np.bincount(exit_index, minlength=len(dims_arr))
    return {
        "accuracy": float(np.mean(predictions == labels)) if n else float("nan"),
        "expected_dim": float(np.mean(dims_arr[exit_index])) if n else float("nan"),
        "exit_fractions": {
            int(m): float(c / n) if n else float("nan") for m, c in zip(dims_arr, counts)
        },
    }


def calibrate_thresholds(
    probs_cal: np.ndarray, labels_cal: np.ndarray, target_accuracy: float
) -> np.ndarray:
    """Per-dim thresholds chosen sequentially on a calibration split.

    At head k (smallest first), among the calibration examples that have not exited at an
    earlier head, the threshold is the smallest candidate ``t`` (the candidates are those
    examples' max probabilities) such that the examples with ``max prob >= t`` are classified
    by head k with accuracy ``>= target_accuracy``; those examples exit and the rest move on.
    If no candidate reaches the target the threshold is ``+inf`` (nobody exits there). The last
    threshold is 0: the largest head takes everyone left.

    One threshold per dim, fitted to the examples that actually reach that dim, follows the
    paper and trades accuracy for dimension better than a single global threshold, because the
    heads' confidences are calibrated differently.

    Returns:
        ``(K,)`` float array of thresholds, usable with :func:`cascade_predict`.
    """
    probs, labels, _ = _check_inputs(probs_cal, labels_cal)
    k = probs.shape[0]
    maxp = probs.max(axis=2)
    correct = np.argmax(probs, axis=2) == labels[None, :]
    thresholds = np.full(k, np.inf)
    thresholds[-1] = 0.0
    remaining = np.ones(probs.shape[1], dtype=bool)
    for head in range(k - 1):
        idx = np.flatnonzero(remaining)
        if idx.size == 0:
            break
        conf, ok = maxp[head, idx], correct[head, idx]
        order = np.argsort(-conf, kind="stable")
        conf, ok = conf[order], ok[order]
        # Accuracy of {max prob >= conf[i]} is read at the last position of each tie run.
        last_of_run = np.append(conf[1:] != conf[:-1], True)
        hits = np.cumsum(ok)[last_of_run]
        sizes = np.flatnonzero(last_of_run) + 1
        passing = np.flatnonzero(hits >= target_accuracy * sizes - _EPS)
        if passing.size == 0:
            continue
        # Candidates are in descending order, so the last passing one is the smallest.
        t = float(conf[last_of_run][passing[-1]])
        thresholds[head] = t
        remaining[idx[maxp[head, idx] >= t]] = False
    return thresholds


def split_calibration(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` at random into a calibration and a report part.

    ``round(fraction * n)`` indices (clamped so that both parts are non-empty) go to
    calibration. Same ``seed``, same split. Both index arrays are sorted.

    Returns:
        ``(cal_idx, report_idx)``: disjoint, together covering ``range(n)``.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie strictly between 0 and 1, got {fraction}")
    if n < 2:
        raise ValueError(f"need at least 2 examples to split, got {n}")
    n_cal = min(max(int(round(fraction * n)), 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:n_cal]), np.sort(perm[n_cal:])


def per_head_accuracy(
    probs: np.ndarray,
    labels: np.ndarray,
    dims: Sequence[int],
    indices: np.ndarray | None = None,
) -> dict[int, float]:
    """Top-1 accuracy of every head on ``indices`` (all examples when None): ``{dim: acc}``."""
    probs, labels, dims_arr = _check_inputs(probs, labels, dims)
    if indices is not None:
        probs, labels = probs[:, indices], labels[indices]
    correct = np.argmax(probs, axis=2) == labels[None, :]
    return {int(m): float(c) for m, c in zip(dims_arr, correct.mean(axis=1))}


def _default_targets(probs_cal: np.ndarray, labels_cal: np.ndarray) -> np.ndarray:
    """A 0.01 grid on [0.5, 1], a finer 101-point grid from the weakest head's accuracy to 1,
    and each head's own calibration accuracy (where its threshold switches on)."""
    head_acc = (np.argmax(probs_cal, axis=2) == labels_cal[None, :]).mean(axis=1)
    low = float(head_acc.min()) if head_acc.size else 0.5
    grid = [np.linspace(0.5, 1.0, 51), np.linspace(low, 1.0, 101), head_acc]
    return np.unique(np.round(np.concatenate(grid), 12))


def _sweep(
    probs: np.ndarray,
    labels: np.ndarray,
    dims: np.ndarray,
    cal_idx: np.ndarray,
    report_idx: np.ndarray,
    targets: Sequence[float] | None,
) -> list[dict]:
    probs_cal, labels_cal = probs[:, cal_idx], labels[cal_idx]
    probs_rep, labels_rep = probs[:, report_idx], labels[report_idx]
    if targets is None:
        targets = _default_targets(probs_cal, labels_cal)
    rows = []
    for target in targets:
        thr = calibrate_thresholds(probs_cal, labels_cal, float(target))
        summary = cascade_summary(probs_rep, labels_rep, dims, thr)
        row = {
            "target": float(target),
            "accuracy": summary["accuracy"],
            "expected_dim": summary["expected_dim"],
        }
        row.update({f"exit@{m}": f for m, f in summary["exit_fractions"].items()})
        row.update({f"threshold@{int(m)}": float(t) for m, t in zip(dims, thr)})
        rows.append(row)
    rows.sort(key=lambda r: (r["expected_dim"], -r["accuracy"], r["target"]))
    return rows


def threshold_sweep(
    probs: np.ndarray,
    labels: np.ndarray,
    dims: Sequence[int],
    cal_fraction: float = 0.5,
    seed: int = 0,
    targets: Sequence[float] | None = None,
) -> list[dict]:
    """Calibrate the cascade for a grid of target accuracies and evaluate each on a report split.

    The examples are split with :func:`split_calibration` (``cal_fraction``, ``seed``). For each
    target, thresholds come from :func:`calibrate_thresholds` on the calibration part and the
    cascade is measured on the report part. The default targets are a 0.01 grid on [0.5, 1],
    a 101-point grid from the weakest head's calibration accuracy to 1, and every head's
    calibration accuracy, which gives a dense accuracy / expected-dim curve.

    Returns:
        Flat rows ``{"target", "accuracy", "expected_dim", "exit@{m}"..., "threshold@{m}"...}``
        (thresholds may be ``inf``), sorted by ``expected_dim``.
    """
    probs, labels, dims_arr = _check_inputs(probs, labels, dims)
    cal_idx, report_idx = split_calibration(labels.shape[0], cal_fraction, seed)
    return _sweep(probs, labels, dims_arr, cal_idx, report_idx, targets)


def smallest_dim_at_accuracy(
    sweep_rows: Sequence[dict], reference_accuracy: float, tolerance: float = 0.001
) -> dict | None:
    """The sweep row with the smallest ``expected_dim`` whose accuracy is within ``tolerance``
    of ``reference_accuracy`` or above it (accuracies are fractions, so 0.001 = 0.1 points).

    Pass as reference the largest head's accuracy on the same report split the sweep used
    (:func:`per_head_accuracy` with the report indices). Ties in ``expected_dim`` go to the
    more accurate row. Returns None when no row qualifies.
    """
    floor = reference_accuracy - tolerance - _EPS
    ok = [r for r in sweep_rows if r["accuracy"] >= floor]
    if not ok:
        return None
    return dict(min(ok, key=lambda r: (r["expected_dim"], -r["accuracy"])))


def smallest_fixed_dim(
    head_accuracy: dict[int, float], reference_accuracy: float, tolerance: float = 0.001
) -> int | None:
    """The smallest dim whose own head alone is within ``tolerance`` of ``reference_accuracy``
    (the same rule as :func:`smallest_dim_at_accuracy`): what a cascade has to beat, since
    serving that one head is as accurate and costs a fixed dim. None when no head qualifies."""
    floor = reference_accuracy - tolerance - _EPS
    ok = [int(d) for d, acc in head_accuracy.items() if acc >= floor]
    return min(ok) if ok else None


def oracle(probs: np.ndarray, labels: np.ndarray, dims: Sequence[int]) -> dict:
    """The best any cascade over these heads could do: each example uses the smallest dim
    whose head is correct, or the largest dim (counted wrong) if no head is.

    Returns:
        ``{"accuracy": fraction with some correct head, "expected_dim": float,
        "exit_fractions": {dim: fraction}}``.
    """
    probs, labels, dims_arr = _check_inputs(probs, labels, dims)
    n = labels.shape[0]
    correct = np.argmax(probs, axis=2) == labels[None, :]
    any_correct = correct.any(axis=0)
    exit_index = np.where(any_correct, np.argmax(correct, axis=0), len(dims_arr) - 1)
    counts = np.bincount(exit_index, minlength=len(dims_arr))
    return {
        "accuracy": float(any_correct.mean()) if n else float("nan"),
        "expected_dim": float(dims_arr[exit_index].mean()) if n else float("nan"),
        "exit_fractions": {
            int(m): float(c / n) if n else float("nan") for m, c in zip(dims_arr, counts)
        },
    }


def adaptive_classification(
    probs: np.ndarray,
    labels: np.ndarray,
    dims: Sequence[int],
    cal_fraction: float = 0.5,
    seed: int = 0,
    targets: Sequence[float] | None = None,
    tolerance: float = 0.001,
) -> dict:
    """The whole adaptive-classification evaluation, everything measured on the report split.

    Returns:
        ``{"sweep": rows (see threshold_sweep), "largest_dim_accuracy": float,
        "smallest_expected_dim": float | None, "dim_reduction": float | None,
        "smallest_fixed_dim": int | None, "matching_row": dict | None, "oracle": dict,
        "per_head_accuracy": {dim: acc}, "n_calibration": int, "n_report": int,
        "tolerance": float}``.
        ``smallest_expected_dim`` is the smallest expected dim of a sweep row within
        ``tolerance`` of the largest head's accuracy and ``dim_reduction`` the largest dim
        divided by it (None when no row matches); ``smallest_fixed_dim`` is the smallest single
        head as accurate (:func:`smallest_fixed_dim`).
    """
    probs, labels, dims_arr = _check_inputs(probs, labels, dims)
    cal_idx, report_idx = split_calibration(labels.shape[0], cal_fraction, seed)
    rows = _sweep(probs, labels, dims_arr, cal_idx, report_idx, targets)
    head_acc = per_head_accuracy(probs, labels, dims_arr, report_idx)
    largest = int(dims_arr[-1])
    match = smallest_dim_at_accuracy(rows, head_acc[largest], tolerance)
    smallest = None if match is None else float(match["expected_dim"])
    return {
        "sweep": rows,
        "largest_dim_accuracy": head_acc[largest],
        "smallest_expected_dim": smallest,
        "dim_reduction": None if smallest is None else largest / smallest,
        "smallest_fixed_dim": smallest_fixed_dim(head_acc, head_acc[largest], tolerance),
        "matching_row": match,
        "oracle": oracle(probs[:, report_idx], labels[report_idx], dims_arr),
        "per_head_accuracy": head_acc,
        "n_calibration": int(cal_idx.size),
        "n_report": int(report_idx.size),
        "tolerance": float(tolerance),
    }
