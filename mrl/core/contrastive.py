"""Matryoshka contrastive loss: in-batch-negatives InfoNCE summed over nested embedding prefixes.

For each nesting dim m, the prefixes `anchor[:, :m]` and `positive[:, :m]` are re-normalised, their
cosine similarities times `scale` are the logits, and the target of anchor i is positive i (every
other positive in the batch is a negative). This is sentence-transformers'
`MatryoshkaLoss(model, MultipleNegativesRankingLoss(model), matryoshka_dims)`; with
`symmetric=True` it is the average with the positive -> anchor direction (their
`directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction"`, the CLIP loss).
The loss only slices embeddings computed once, so the encoder runs once per step whatever the
number of dims. With `fused=True` the K similarity matrices share their arithmetic: their dot
products are partial sums over the column chunks (`nested_cosine_logits`), one matrix product
instead of K. Plain PyTorch; the 2D (layer x dim) form is `mrl.core.matryoshka_2d`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from mrl.core.fused import tied_nested_linear
from mrl.core.losses import NestedLoss
from mrl.core.nesting import validate_nesting

# F.normalize's floor on a norm.
_EPS = 1e-12


def gather_with_grad(x: Tensor) -> tuple[Tensor, int]:
    """`(all ranks' rows concatenated, offset of this rank's rows)`; gradients flow back to every
    rank's rows. Without an initialised process group of size > 1, `(x, 0)`.

    Every rank must pass the same number of rows (training loaders drop the last batch).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return x, 0
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0), dist.get_rank() * x.shape[0]


def _prefix_inverse_norms(x: Tensor, nesting: tuple[int, ...]) -> Tensor:
    """`(K, N)`: 1 / max(|x[:, :m]|, eps) for every m of `nesting` (as `F.normalize`), from the
    cumulative sums of the chunks' squares."""
    sizes = [b - a for a, b in zip((0, *nesting[:-1]), nesting)]
    squares = torch.stack([c.square().sum(1) for c in x[:, : nesting[-1]].split(sizes, dim=1)])
    return squares.cumsum(0).clamp_min(_EPS**2).rsqrt()


def nested_cosine_logits(
    queries: Tensor, documents: Tensor, nesting: tuple[int, ...], scale: float
) -> Tensor:
    """`(K, Q, N)`: `scale` times the cosine similarity of every query prefix `[:, :m]` to every
    document prefix, for each m of `nesting`: one pass over the column chunks builds every
    prefix's dot products (their partial sums, the tied head's kernel), and the cumulative
    sums of squares give every prefix's norms."""
    dots = tied_nested_linear(queries, documents, None, nesting)
    q_inv = _prefix_inverse_norms(queries, nesting)
    d_inv = _prefix_inverse_norms(documents, nesting)
    return dots * (scale * q_inv).unsqueeze(2) * d_inv.unsqueeze(1)


def _per_dim_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Mean cross-entropy of each dim's `(Q, N)` logits against `target`, shape `(K,)`."""
    k, q, n = logits.shape
    ce = F.cross_entropy(logits.reshape(k * q, n), target.repeat(k), reduction="none")
    return ce.view(k, q).mean(1)


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
        fused: build the K similarity matrices from shared chunk products
            (`nested_cosine_logits`: one matrix product instead of K, the same values). It
            trades matrix products for passes over K (B, N) matrices, and on a 2-core CPU it is
            not faster (experiments/results/bench/kernels.md), so the prefix loop is the default.

    Call as `loss(anchor_emb, positive_emb)` with two `(B, D)` tensors, rows paired by index.
    """

    def __init__(
        self,
        nesting: Sequence[int],
        weights: Sequence[float] | None = None,
        scale: float = 20.0,
        symmetric: bool = False,
        gather: bool = True,
        fused: bool = False,
    ) -> None:
        nesting = validate_nesting(nesting)
        super().__init__(weights, nesting)
        self.nesting = nesting
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale!r}")
        self.scale = float(scale)
        self.symmetric = bool(symmetric)
        self.gather = bool(gather)
        self.fused = bool(fused)

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
        if not self.fused:
            return per_prefix_infonce(anchor, positive, all_anchors, all_positives, target,
                                      self.nesting, self.scale, self.symmetric)  # fmt: skip
        logits = nested_cosine_logits(anchor, all_positives, self.nesting, self.scale)
        losses = _per_dim_cross_entropy(logits, target)
        if self.symmetric:
            # Without other ranks, positive -> anchor is the same matrix read by columns.
            back = (
                logits.transpose(1, 2)
                if all_anchors is anchor
                else nested_cosine_logits(positive, all_anchors, self.nesting, self.scale)
            )
            losses = 0.5 * (losses + _per_dim_cross_entropy(back, target))
        return losses

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
