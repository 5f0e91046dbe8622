"""Post-hoc baselines computed from a full-size (non-Matryoshka) model's embeddings.

- SVD: project the features onto their top-m principal directions, fitted on the database
  split (centred), then fit a linear probe per m.
- Random features: m coordinates chosen at random (one seeded permutation, so the choices are
  nested), then a linear probe per m.
- SVD of the classifier (the official variant): replace the trained classifier's weight W (C x D)
  by its best rank-m approximation and classify the full features with it.
"""

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from mrl.core.nesting import validate_nesting


def principal_directions(
    features: np.ndarray, chunk_rows: int = 65_536
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(mean (D,), components (D, D), explained variance (D,))`, components by column, largest
    variance first, from the covariance accumulated in float64 chunks (memory O(D^2))."""
    n, d = features.shape
    total = np.zeros(d)
    scatter = np.zeros((d, d))
    for i in range(0, n, chunk_rows):
        x = np.asarray(features[i : i + chunk_rows], dtype=np.float64)
        total += x.sum(axis=0)
        scatter += x.T @ x
    mean = total / n
    cov = (scatter - n * np.outer(mean, mean)) / max(1, n - 1)
    variance, vectors = np.linalg.eigh(cov)
    order = np.argsort(variance)[::-1]
    return mean, vectors[:, order], variance[order]


def project(features: np.ndarray, mean: np.ndarray, components: np.ndarray, m: int) -> np.ndarray:
    """Coordinates of the centred `features` on the first `m` principal directions (float32)."""
    return ((np.asarray(features, dtype=np.float64) - mean) @ components[:, :m]).astype(np.float32)


def random_coordinates(num_features: int, seed: int) -> np.ndarray:
    """A seeded permutation of the coordinates; its first m entries are the random m-subset."""
    return np.random.default_rng(seed).permutation(num_features)


def low_rank_weight(weight: np.ndarray, rank: int) -> np.ndarray:
    """The best rank-`rank` approximation (Frobenius norm) of `weight`, by truncated SVD."""
    u, s, vt = np.linalg.svd(np.asarray(weight, dtype=np.float64), full_matrices=False)
    r = min(rank, len(s))
    return (u[:, :r] * s[:r]) @ vt[:r]


def svd_classifier_rows(
    weight: np.ndarray,
    bias: np.ndarray | None,
    queries: np.ndarray,
    query_labels: np.ndarray,
    dims: Sequence[int],
    batch_size: int = 65_536,
) -> list[dict]:
    """Top-1 (and top-5) per rank m of the classifier `weight` (C x D) truncated to rank m."""
    dims = validate_nesting(dims, weight.shape[1])
    rows = []
    for m in dims:
        w = low_rank_weight(weight, m)
        correct = {1: 0, 5: 0}
        for i in range(0, len(queries), batch_size):
            logits = np.asarray(queries[i : i + batch_size], dtype=np.float64) @ w.T
            if bias is not None:
                logits = logits + bias
            y = query_labels[i : i + batch_size]
            order = np.argsort(-logits, axis=1, kind="stable")
            for k in correct:
                correct[k] += int((order[:, :k] == y[:, None]).any(axis=1).sum())
        rows.append({"dim": m, "metric": "head_top1", "value": correct[1] / len(queries)})
        if weight.shape[0] >= 5:
            rows.append({"dim": m, "metric": "head_top5", "value": correct[5] / len(queries)})
    return rows


def iter_baseline_features(
    name: str,
    database: np.ndarray,
    queries: np.ndarray,
    dims: Sequence[int],
    seed: int = 0,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """`(m, database_m, queries_m)` for the `svd` or `random` baseline, one dim at a time (so
    only one dim's features are in memory)."""
    dims = validate_nesting(dims, database.shape[1])
    if name == "svd":
        mean, components, _ = principal_directions(database)
        for m in dims:
            yield m, project(database, mean, components, m), project(queries, mean, components, m)
    elif name == "random":
        order = random_coordinates(database.shape[1], seed)
        for m in dims:
            chosen = np.sort(order[:m])
            yield (
                m,
                np.ascontiguousarray(database[:, chosen], dtype=np.float32),
                np.ascontiguousarray(queries[:, chosen], dtype=np.float32),
            )
    else:
        raise ValueError(f"unknown feature baseline {name!r}: choose svd or random")


def torch_head_weight(head: torch.nn.Module) -> tuple[np.ndarray, np.ndarray | None]:
    """Weight and bias of a single-head (FF) `MRLHead` as NumPy arrays."""
    weight, bias = head.at(head.nesting[-1])
    bias = None if bias is None else bias.detach().cpu().numpy()
    return weight.detach().cpu().numpy(), bias
