"""The Matryoshka loss: a weighted sum of cross-entropies over the nested heads' logits."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MatryoshkaLoss(nn.Module):
    """`sum_m w_m * cross_entropy(logits_m, target)` over the nesting dims.

    Call it as `loss(logits_per_dim, target)` where `logits_per_dim` is a `(K, B, C)` tensor or a
    sequence of K `(B, C)` tensors. Weights default to 1 for every dim; when given they must be
    non-negative and as many as the dims. The weights live in a buffer, so the loss follows its
    module to any device, and they are cast to the logits' dtype at call time.
    """

    weights: Tensor | None

    def __init__(
        self, weights: Sequence[float] | None = None, label_smoothing: float = 0.0
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        if weights is None:
            self.register_buffer("weights", None, persistent=False)
            return
        w = torch.as_tensor(list(weights), dtype=torch.float32)
        if w.ndim != 1 or w.numel() == 0:
            raise ValueError(f"loss weights must be a non-empty list of numbers, got {weights!r}")
        if not torch.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"loss weights must be finite and non-negative, got {list(weights)}")
        self.register_buffer("weights", w, persistent=False)

    def check_num_dims(self, num_dims: int) -> None:
        """Raise `ValueError` if explicit weights do not match `num_dims` nesting dims."""
        if self.weights is not None and self.weights.numel() != num_dims:
            raise ValueError(
                f"loss has {self.weights.numel()} weights but the head has {num_dims} nesting "
                f"dims: give one weight per dim (or weights=null for all ones)"
            )

    def per_dim(self, logits_per_dim: Tensor | Sequence[Tensor], target: Tensor) -> Tensor:
        """Unweighted mean cross-entropy of each dim, shape `(K,)`."""
        logits = (
            logits_per_dim
            if isinstance(logits_per_dim, Tensor)
            else torch.stack(list(logits_per_dim))
        )
        num_dims, batch, num_classes = logits.shape
        self.check_num_dims(num_dims)
        # One fused cross-entropy over all K*B rows instead of K separate calls.
        ce = F.cross_entropy(
            logits.reshape(num_dims * batch, num_classes),
            target.repeat(num_dims),
            reduction="none",
            label_smoothing=self.label_smoothing,
        )
        return ce.view(num_dims, batch).mean(dim=1)

    def weighted(self, per_dim: Tensor) -> Tensor:
        """Combine per-dim losses `(K,)` into the scalar training loss."""
        if self.weights is None:
            return per_dim.sum()
        return (self.weights.to(device=per_dim.device, dtype=per_dim.dtype) * per_dim).sum()

    def forward(self, logits_per_dim: Tensor | Sequence[Tensor], target: Tensor) -> Tensor:
        """The scalar Matryoshka loss."""
        return self.weighted(self.per_dim(logits_per_dim, target))
