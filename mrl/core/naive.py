"""The naive Matryoshka computations, autograd only: one slice and one product per nesting dim,
the authors' layer as its equations read.

They are the references the heads are tested and timed against (the tied head's fused kernel,
`mrl.core.fused`, and the untied heads' own `Linear`s); no trainer uses them.
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
