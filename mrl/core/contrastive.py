"""Matryoshka contrastive loss: in-batch-negatives InfoNCE summed over nested embedding prefixes.

For each nesting dim m, the prefixes `anchor[:, :m]` and `positive[:, :m]` are re-normalised, their
cosine similarities times `scale` are the logits, and the target of anchor i is positive i (every
other positive in the batch is a negative). This is sentence-transformers'
`MatryoshkaLoss(model, MultipleNegativesRankingLoss(model), matryoshka_dims)`; with
`symmetric=True` it is the average with the positive -> anchor direction (their
`directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction"`, the CLIP loss).
The loss only slices embeddings computed once, so the encoder runs once per step whatever the
number of dims. Plain PyTorch; the 2D (layer x dim) form is `mrl.core.matryoshka_2d`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from mrl.core.losses import NestedLoss
from mrl.core.nesting import validate_nesting


def gather_with_grad(x: Tensor) -> tuple[Tensor, int]:
    """`(all ranks' rows concatenated, offset of this rank's rows)`; gradients flow back to every
    rank's rows. Without an initialised process group of size > 1, `(x, 0)`.

    Every rank must pass the same number of rows (training loaders drop the last batch).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return x, 0
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0), dist.get_rank() * x.shape[0]


def per_prefix_infonce(
    anchor: Tensor,
    positive: Tensor,
    all_anchors: Tensor,
    all_positives: Tensor,
    target: Tensor,
    nesting: Sequence[int],
    scale: float,
    symmetric: bool,
) -> Tensor:
    """In-batch-negatives InfoNCE of each prefix, `(K,)`, one prefix at a time: each prefix
    re-normalised, anchor i's target the row `target[i]` of `all_positives` (and, when
    `symmetric`, the average with the positive -> anchor direction over `all_anchors`)."""
    losses = []
    for m in nesting:
        a_m = F.normalize(anchor[:, :m], dim=-1)
        p_all = F.normalize(all_positives[:, :m], dim=-1)
        loss = F.cross_entropy(scale * a_m @ p_all.T, target)
        if symmetric:
            p_m = F.normalize(positive[:, :m], dim=-1)
            a_all = F.normalize(all_anchors[:, :m], dim=-1)
            loss = 0.5 * (loss + F.cross_entropy(scale * p_m @ a_all.T, target))
        losses.append(loss)
    return torch.stack(losses)


class MatryoshkaContrastiveLoss(NestedLoss):
    """`sum_m w_m * InfoNCE(anchor[:, :m], positive[:, :m])` over the nesting dims.

    Args:
        nesting: the prefix sizes m (strictly increasing).
        weights: one non-negative weight per dim; `None` = 1 for every dim.
        scale: multiplies the cosine similarities (1 / temperature).
        symmetric: also rank the anchors for each positive, and average the two directions.
        gather: under DDP, use the other processes' rows as extra negatives (with gradients).

    Call as `loss(anchor_emb, positive_emb)` with two `(B, D)` tensors, rows paired by index.
    """

    def __init__(
        self,
        nesting: Sequence[int],
        weights: Sequence[float] | None = None,
        scale: float = 20.0,
        symmetric: bool = False,
        gather: bool = True,
    ) -> None:
        nesting = validate_nesting(nesting)
        super().__init__(weights, nesting)
        self.nesting = nesting
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale!r}")
        self.scale = float(scale)
        self.symmetric = bool(symmetric)
        self.gather = bool(gather)

    def per_dim(self, anchor: Tensor, positive: Tensor) -> Tensor:
        """The unweighted loss of each nesting dim, shape `(K,)`.

        Two `(B, D)` tensors are sliced into their prefixes. Two `(K, B, P)` stacks are already
        one embedding per nesting dim (a projection head's outputs, `MRLHead`): each slice is
        scored at its full width.
        """
        if anchor.ndim == 3 and anchor.shape == positive.shape:
            return self._per_projection(anchor, positive)
        if anchor.ndim != 2 or anchor.shape != positive.shape:
            raise ValueError(
                f"need anchor and positive embeddings of one shape (B, D), got "
                f"{tuple(anchor.shape)} and {tuple(positive.shape)}"
            )
        if self.nesting[-1] > anchor.shape[1]:
            raise ValueError(
                f"largest nesting dim {self.nesting[-1]} exceeds the embedding size "
                f"{anchor.shape[1]}"
            )
        all_anchors, all_positives, target = self._candidates(anchor, positive)
        return per_prefix_infonce(anchor, positive, all_anchors, all_positives, target,
                                  self.nesting, self.scale, self.symmetric)  # fmt: skip

    def _per_projection(self, anchor: Tensor, positive: Tensor) -> Tensor:
        if anchor.shape[0] != len(self.nesting):
            raise ValueError(
                f"need one projected embedding per nesting dim ({len(self.nesting)}), got "
                f"{anchor.shape[0]}"
            )
        losses = []
        for a, p in zip(anchor, positive):
            all_a, all_p, target = self._candidates(a, p)
            losses.append(per_prefix_infonce(a, p, all_a, all_p, target, (a.shape[1],),
                                             self.scale, self.symmetric)[0])  # fmt: skip
        return torch.stack(losses)

    def _candidates(self, anchor: Tensor, positive: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """`(all anchors, all positives, target)`: this process's rows, or every process's
        under DDP with `gather`, and the index of each anchor's positive among them."""
        all_anchors, all_positives, offset = anchor, positive, 0
        if self.gather:
            all_positives, offset = gather_with_grad(positive)
            if self.symmetric:
                all_anchors, _ = gather_with_grad(anchor)
        target = torch.arange(offset, offset + anchor.shape[0], device=anchor.device)
        return all_anchors, all_positives, target

    def extra_repr(self) -> str:
        return f"nesting={list(self.nesting)}, scale={self.scale}, symmetric={self.symmetric}"
