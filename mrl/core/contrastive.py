"""Matryoshka contrastive loss: InfoNCE summed over nested embedding prefixes, with in-batch
negatives and optional hard negatives.

For each nesting dim m, the prefixes `anchor[:, :m]` and `positive[:, :m]` are re-normalised, their
cosine similarities times `scale` are the logits, and the target of anchor i is positive i (every
other positive in the batch is a negative). Hard negatives, `(B, N, D)` with row i's N negatives
mined for anchor i, join every anchor's candidates: anchor i is scored against all the batch's
positives followed by all B*N negatives (each prefix re-normalised the same way), the target
still its own positive. This is sentence-transformers'
`MatryoshkaLoss(model, MultipleNegativesRankingLoss(model), matryoshka_dims)`, the negatives
being their (anchor, positive, negative_1, ..., negative_N) columns; with `symmetric=True` it is
the average with the positive -> anchor direction (their
`directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction"`, the CLIP loss),
in which each positive ranks the batch's anchors only: hard negatives are documents, never
queries, so that direction ignores them, as theirs does. Under DDP with `gather`, the positives
and the negatives of every process are candidates (with gradients). The loss only slices
embeddings computed once, so the encoder runs once per step whatever the number of dims.
Plain PyTorch; the 2D (layer x dim) form is `mrl.core.matryoshka_2d`.
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
    all_negatives: Tensor | None = None,
) -> Tensor:
    """InfoNCE of each prefix, `(K,)`, one prefix at a time: each prefix re-normalised, anchor i
    scored against the rows of `all_positives` followed by those of `all_negatives` (hard
    negatives, `(M, D)`, when given), its target the row `target[i]` of `all_positives`. When
    `symmetric`, the average with the positive -> anchor direction, in which each positive
    ranks the rows of `all_anchors` (no hard negatives there)."""
    losses = []
    for m in nesting:
        a_m = F.normalize(anchor[:, :m], dim=-1)
        p_all = F.normalize(all_positives[:, :m], dim=-1)
        if all_negatives is not None:
            p_all = torch.cat([p_all, F.normalize(all_negatives[:, :m], dim=-1)])
        loss = F.cross_entropy(scale * a_m @ p_all.T, target)
        if symmetric:
            p_m = F.normalize(positive[:, :m], dim=-1)
            a_all = F.normalize(all_anchors[:, :m], dim=-1)
            loss = 0.5 * (loss + F.cross_entropy(scale * p_m @ a_all.T, target))
        losses.append(loss)
    return torch.stack(losses)


def check_negatives(negatives: Tensor, anchor: Tensor) -> None:
    """Raise `ValueError` unless `negatives` holds N >= 1 rows of the anchors' width per anchor:
    `(B, N, D)` for `(B, D)` anchors, `(K, B, N, P)` for `(K, B, P)` stacks."""
    rows, width, shape = tuple(anchor.shape[:-1]), anchor.shape[-1], tuple(negatives.shape)
    if len(shape) != anchor.ndim + 1 or shape[:-2] != rows or shape[-1] != width or shape[-2] < 1:
        wanted = ", ".join([*map(str, rows), "N", str(width)])
        raise ValueError(
            f"need hard negatives of shape ({wanted}) with N >= 1 for anchors of shape "
            f"{tuple(anchor.shape)}, got {shape}"
        )


class MatryoshkaContrastiveLoss(NestedLoss):
    """`sum_m w_m * InfoNCE(anchor[:, :m], positive[:, :m])` over the nesting dims.

    Args:
        nesting: the prefix sizes m (strictly increasing).
        weights: one non-negative weight per dim; `None` = 1 for every dim.
        scale: multiplies the cosine similarities (1 / temperature).
        symmetric: also rank the anchors for each positive, and average the two directions
            (that direction does not use the hard negatives).
        gather: under DDP, use the other processes' positives and hard negatives as extra
            candidates (with gradients).

    Call as `loss(anchor_emb, positive_emb)` with two `(B, D)` tensors, rows paired by index, or
    `loss(anchor_emb, positive_emb, negatives)` with `(B, N, D)` hard negatives, row i's for
    anchor i (every process the same B and N under DDP).
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

    def per_dim(self, anchor: Tensor, positive: Tensor, negatives: Tensor | None = None) -> Tensor:
        """The unweighted loss of each nesting dim, shape `(K,)`.

        Two `(B, D)` tensors are sliced into their prefixes, and so are `(B, N, D)` negatives.
        Two `(K, B, P)` stacks are already one embedding per nesting dim (a projection head's
        outputs, `MRLHead`), with `(K, B, N, P)` negatives: each slice is scored at its full
        width.
        """
        if anchor.ndim == 3 and anchor.shape == positive.shape:
            return self._per_projection(anchor, positive, negatives)
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
        if negatives is not None:
            check_negatives(negatives, anchor)
        return self._infonce(anchor, positive, negatives, self.nesting)

    def _per_projection(self, anchor: Tensor, positive: Tensor, negatives: Tensor | None) -> Tensor:
        if anchor.shape[0] != len(self.nesting):
            raise ValueError(
                f"need one projected embedding per nesting dim ({len(self.nesting)}), got "
                f"{anchor.shape[0]}"
            )
        if negatives is not None:
            check_negatives(negatives, anchor)
        slices = negatives if negatives is not None else [None] * len(self.nesting)
        losses = [self._infonce(a, p, n, (a.shape[1],))[0]
                  for a, p, n in zip(anchor, positive, slices)]  # fmt: skip
        return torch.stack(losses)

    def _infonce(
        self, anchor: Tensor, positive: Tensor, negatives: Tensor | None, nesting: Sequence[int]
    ) -> Tensor:
        """`per_prefix_infonce` of `(B, D)` rows and `(B, N, D)` negatives over `nesting`."""
        all_anchors, all_positives, target = self._candidates(anchor, positive)
        all_negatives = None
        if negatives is not None:
            all_negatives = negatives.reshape(-1, negatives.shape[-1])
            if self.gather:
                all_negatives, _ = gather_with_grad(all_negatives)
        return per_prefix_infonce(anchor, positive, all_anchors, all_positives, target, nesting,
                                  self.scale, self.symmetric, all_negatives)  # fmt: skip

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
