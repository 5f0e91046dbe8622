"""A Matryoshka adaptor for a frozen embedding model (after Yoon et al. 2024,
"Matryoshka-Adaptor"): a small residual map on top of its embeddings, trained so that their
prefixes become good embeddings, without touching (or re-running) the model.

`adapted = e + up(act(down(e)))`, the last layer zero-initialised, so training starts from the
identity. The unsupervised loss asks every prefix of the adapted embeddings to keep the full
original embeddings' geometry: their pairwise cosine similarities within a batch, and more
strongly each item's similarities to its top-k neighbours; a reconstruction term keeps the
adapted vectors near the originals. The supervised form adds the Matryoshka ranking loss on
(query, positive) pairs. Everything runs on cached embeddings: the corpus is encoded once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrl.core.distill import cosine_similarities, off_diagonal_mean, prefix_similarity_gaps
from mrl.core.nesting import validate_nesting
from mrl.core.validate import positive_int


class MatryoshkaAdaptor(nn.Module):
    """The residual map `e -> e + up(gelu(down(e)))` on `dim`-sized embeddings."""

    def __init__(self, dim: int, hidden: int = 512) -> None:
        super().__init__()
        self.dim = positive_int(dim, "dim")
        self.down = nn.Linear(self.dim, positive_int(hidden, "hidden"))
        self.up = nn.Linear(hidden, self.dim)
        nn.init.zeros_(self.up.weight)  # the identity at the start
        nn.init.zeros_(self.up.bias)

    def forward(self, embeddings: Tensor) -> Tensor:
        return embeddings + self.up(F.gelu(self.down(embeddings)))


def similarity_losses(
    original: Tensor, adapted: Tensor, nesting: Sequence[int], top_k: int = 10
) -> tuple[Tensor, Tensor]:
    """`(pairwise, top-k)` losses, each summed over the prefixes of `nesting`: the mean absolute
    difference between a prefix's cosine similarities and the full original embeddings', over
    every pair of the batch, and over each row's `top_k` nearest other rows (by the original).
    The gaps are `mrl.core.distill`'s, the self-distillation loss's."""
    nesting = validate_nesting(nesting, original.shape[1])
    target = cosine_similarities(original)
    rows = target.shape[0]
    k = min(positive_int(top_k, "top_k"), rows - 1)
    diagonal = torch.eye(rows, dtype=torch.bool, device=original.device)
    neighbours = target.masked_fill(diagonal, float("-inf")).topk(k, dim=1).indices
    pairwise = original.new_zeros(())
    top = original.new_zeros(())
    for difference in prefix_similarity_gaps(adapted, target, nesting):
        pairwise = pairwise + off_diagonal_mean(difference)
        top = top + difference.gather(1, neighbours).mean()
    return pairwise, top


def adaptor_loss(
    original: Tensor,
    adapted: Tensor,
    nesting: Sequence[int],
    top_k: int = 10,
    pairwise_weight: float = 1.0,
    top_k_weight: float = 1.0,
    reconstruction_weight: float = 1.0,
) -> Tensor:
    """The unsupervised adaptor loss: the similarity losses plus the mean squared distance of
    the adapted embeddings from the originals (both unit-normalised)."""
    pairwise, top = similarity_losses(original, adapted, nesting, top_k)
    reconstruction = (F.normalize(adapted, dim=-1) - F.normalize(original, dim=-1)).square()
    return (
        pairwise_weight * pairwise
        + top_k_weight * top
        + reconstruction_weight * reconstruction.sum(1).mean()
    )
