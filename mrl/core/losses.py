"""The Matryoshka losses' common part, `NestedLoss` (a per-dim loss and its weights), and the
classification form, `MatryoshkaLoss`: a weighted sum of cross-entropies over the nested
heads' logits."""

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrl.core.errors import ConfigError


def weights_tensor(weights: Sequence[float] | None) -> Tensor | None:
    """`weights` as a float32 vector (None stays None), or `ConfigError` unless they are a
    non-empty list of finite, non-negative numbers."""
    if weights is None:
        return None
    w = torch.as_tensor(list(weights), dtype=torch.float32)
    if w.ndim != 1 or w.numel() == 0:
        raise ConfigError(f"loss weights must be a non-empty list of numbers, got {weights!r}")
    if not torch.isfinite(w).all() or (w < 0).any():
        raise ConfigError(f"loss weights must be finite and non-negative, got {list(weights)}")
    return w


def check_loss_weights(
    weights: Tensor | Sequence[float] | None,
    dims: Sequence[int] | int,
    name: str = "loss.weights",
    dims_name: str = "nesting",
) -> None:
    """Raise `ConfigError` unless `weights` is None (all ones) or has one entry per nesting dim.

    `dims` is the nesting list (or only its length); `name` and `dims_name` are the settings
    they came from, for the message. The one check of the weights' length: the losses and the
    training modules run it once, when they are built.
    """
    if weights is None:
        return
    count = weights.numel() if isinstance(weights, Tensor) else len(weights)
    num_dims = dims if isinstance(dims, int) else len(dims)
    if count != num_dims:
        shown = "" if isinstance(dims, int) else f" {list(dims)}"
        raise ConfigError(
            f"{name} has {count} entries but {dims_name} has {num_dims} dims{shown}: give one "
            f"weight per dim (or weights=null for all ones)"
        )


class NestedLoss(nn.Module):
    """The Matryoshka seam: a loss computed for each nesting dim (`per_dim`, shape `(K,)`) and
    summed with one weight per dim, `sum_m w_m * loss_m`.

    Its two forms differ only in where the prefixes are cut: `MatryoshkaLoss` takes logits that
    a head computed from each prefix, `MatryoshkaContrastiveLoss` slices the embeddings itself.
    A new objective implements `per_dim` and inherits the weighting. Weights default to 1 for
    every dim; when given they must be non-negative and one per dim. They live in a buffer, so
    the loss follows its module to any device, and are cast to the per-dim losses' dtype.
    """

    weights: Tensor | None

    def __init__(
        self, weights: Sequence[float] | None = None, nesting: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        self.register_buffer("weights", weights_tensor(weights), persistent=False)
        self._checked_dims: int | None = None  # the K the weights were last checked against
        if nesting is not None:
            self.check_num_dims(nesting, "nesting")

    def check_num_dims(self, dims: Sequence[int] | int, dims_name: str = "the head") -> None:
        """Raise `ConfigError` if explicit weights do not give one weight per nesting dim."""
        check_loss_weights(self.weights, dims, dims_name=dims_name)
        self._checked_dims = dims if isinstance(dims, int) else len(dims)

    def per_dim(self, *inputs: Any) -> Tensor:
        """The unweighted loss of each nesting dim, shape `(K,)`."""
        raise NotImplementedError

    def weighted(self, per_dim: Tensor) -> Tensor:
        """Combine per-dim losses `(K,)` into the scalar training loss."""
        if self.weights is None:
            return per_dim.sum()
        return (self.weights.to(device=per_dim.device, dtype=per_dim.dtype) * per_dim).sum()

    def forward(self, *inputs: Any) -> Tensor:
        """The scalar Matryoshka loss."""
        return self.weighted(self.per_dim(*inputs))


class MatryoshkaLoss(NestedLoss):
    """`sum_m w_m * cross_entropy(logits_m, target)` over the nesting dims.

    Call it as `loss(logits_per_dim, target)` where `logits_per_dim` is a `(K, B, C)` tensor or a
    sequence of K `(B, C)` tensors; the weighting is `NestedLoss`'s. The loss does not know the
    dims when it is built: the module that pairs it with a head calls `check_num_dims(head.nesting)`
    once, and a loss used on its own runs that check on its first call (again only if K changes).
    """

    def __init__(
        self, weights: Sequence[float] | None = None, label_smoothing: float = 0.0
    ) -> None:
        super().__init__(weights)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def per_dim(self, logits_per_dim: Tensor | Sequence[Tensor], target: Tensor) -> Tensor:
        """Unweighted mean cross-entropy of each dim, shape `(K,)`."""
        logits = (
            logits_per_dim
            if isinstance(logits_per_dim, Tensor)
            else torch.stack(list(logits_per_dim))
        )
        num_dims, batch, num_classes = logits.shape
        if num_dims != self._checked_dims:
            self.check_num_dims(num_dims)
        # One fused cross-entropy over all K*B rows instead of K separate calls.
        ce = F.cross_entropy(
            logits.reshape(num_dims * batch, num_classes),
            target.repeat(num_dims),
            reduction="none",
            label_smoothing=self.label_smoothing,
        )
        return ce.view(num_dims, batch).mean(dim=1)
