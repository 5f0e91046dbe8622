"""The naive Matryoshka computations, autograd only: one slice and one product per nesting dim.

They are the references the fused heads (`mrl.core.fused`) are tested and timed against; no
trainer uses them. (The contrastive loss's prefix loop, `per_prefix_infonce`, is a production
path of `MatryoshkaContrastiveLoss` and lives there.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def nested_logits(
    z: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor | None], nesting: Sequence[int]
) -> Tensor:
    """Untied heads: `stack_k(z[:, :m_k] @ weights[k].T + biases[k])`."""
    return torch.stack([F.linear(z[:, :m], w, b) for m, w, b in zip(nesting, weights, biases)])


def tied_nested_logits(
    z: Tensor, weight: Tensor, bias: Tensor | None, nesting: Sequence[int]
) -> Tensor:
    """Tied head (MRL-E): `stack_k(z[:, :m_k] @ weight[:, :m_k].T + bias)`."""
    return torch.stack([F.linear(z[:, :m], weight[:, :m], bias) for m in nesting])
