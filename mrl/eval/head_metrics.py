"""The trained nested heads on stored features: their class probabilities per dim, top-k
accuracy, and the rows `mrl-eval` records for them."""

from __future__ import annotations

import numpy as np
import torch

from mrl.core.heads import MRLHead


@torch.no_grad()
def head_probabilities(head: MRLHead, features: np.ndarray, batch_size: int) -> np.ndarray:
    """Softmax outputs `(K, N, C)` of the nested heads on stored features (no re-encoding)."""
    head = head.cpu().eval()
    out = [
        torch.softmax(
            head(torch.from_numpy(np.array(features[i : i + batch_size], np.float32))), -1
        )
        for i in range(0, len(features), batch_size)
    ]
    return torch.cat(out, dim=1).numpy()


def topk_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among the k most probable classes (`probs` is N x C)."""
    k = min(k, probs.shape[1])
    top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def head_rows(head: MRLHead, probs: np.ndarray, labels: np.ndarray) -> list[dict]:
    """`head_top1` / `head_top5` rows for every trained head."""
    rows = []
    for m, p in zip(head.nesting, probs, strict=True):
        rows.append({"dim": m, "metric": "head_top1", "value": topk_accuracy(p, labels, 1)})
        if head.num_classes >= 5:
            rows.append({"dim": m, "metric": "head_top5", "value": topk_accuracy(p, labels, 5)})
    return rows


def restrict_to_subset(
    probs: np.ndarray, labels: np.ndarray, subset: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the subset's logits' probabilities and relabel targets as positions in the subset."""
    position = {c: i for i, c in enumerate(subset)}
    return probs[..., subset], np.array([position[int(y)] for y in labels])


def is_full_size_single_head(head: MRLHead, num_features: int) -> bool:
    """A plain (non-Matryoshka) model: one head on the whole representation."""
    return len(head.nesting) == 1 and head.nesting[0] == num_features
