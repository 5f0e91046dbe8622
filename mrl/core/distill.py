"""Self-distillation of nested prefixes: each prefix of a student's embeddings keeps the pairwise
geometry of a frozen teacher's full embeddings.

For each nesting dim m, the gap between the cosine-similarity matrix of `student[:, :m]` and the
full teacher's is `|cos(student[:, :m]) - cos(teacher)|` entry by entry; the loss of dim m is its
mean over the batch's off-diagonal pairs (the diagonal is 1 on both sides). The teacher is
typically a frozen copy of the base model and is detached, so no gradient reaches it. The same
gaps are the Matryoshka adaptor's similarity losses (`mrl.core.adaptor`). Plain PyTorch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mrl.core.losses import NestedLoss
from mrl.core.nesting import validate_nesting


def cosine_similarities(x: Tensor) -> Tensor:
    """The `(B, B)` cosine similarities between the rows of `x`."""
    x = F.normalize(x, dim=-1)
    return x @ x.T


def prefix_similarity_gaps(student: Tensor, target: Tensor, nesting: Sequence[int]) -> list[Tensor]:
    """For each m of `nesting`, the `(B, B)` matrix `|cos(student[:, :m]) - target|`, where
    `target` is the `(B, B)` cosine-similarity matrix to keep."""
    return [(cosine_similarities(student[:, :m]) - target).abs() for m in nesting]


def off_diagonal_mean(x: Tensor) -> Tensor:
    """The mean of a square matrix's entries off its diagonal."""
    rows = x.shape[0]
    return x[~torch.eye(rows, dtype=torch.bool, device=x.device)].mean()


class SimilarityDistillationLoss(NestedLoss):
    """`sum_m w_m * mean_{i != j} |cos(s_i[:m], s_j[:m]) - cos(t_i, t_j)|` over the nesting dims.

    Args:
        nesting: the prefix sizes m of the student (strictly increasing).
        weights: one non-negative weight per dim; `None` = 1 for every dim.

    Call as `loss(student, teacher)` with `(B, D)` student and `(B, T)` teacher embeddings of
    the same B >= 2 rows; the teacher's width T may differ from the student's.
    """

    def __init__(self, nesting: Sequence[int], weights: Sequence[float] | None = None) -> None:
        nesting = validate_nesting(nesting)
        super().__init__(weights, nesting)
        self.nesting = nesting

    def per_dim(self, student: Tensor, teacher: Tensor) -> Tensor:
        """The unweighted loss of each nesting dim, shape `(K,)`."""
        if student.ndim != 2 or teacher.ndim != 2 or student.shape[0] != teacher.shape[0]:
            raise ValueError(
                f"need student (B, D) and teacher (B, T) embeddings of the same rows, got "
                f"{tuple(student.shape)} and {tuple(teacher.shape)}"
            )
        if student.shape[0] < 2:
            raise ValueError(f"need at least 2 rows to compare pairs, got {student.shape[0]}")
        if self.nesting[-1] > student.shape[1]:
            raise ValueError(
                f"largest nesting dim {self.nesting[-1]} exceeds the embedding size "
                f"{student.shape[1]}"
            )
        target = cosine_similarities(teacher.detach())
        gaps = prefix_similarity_gaps(student, target, self.nesting)
        return torch.stack([off_diagonal_mean(gap) for gap in gaps])

    def extra_repr(self) -> str:
        return f"nesting={list(self.nesting)}"
