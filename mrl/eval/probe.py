"""Linear probes on embedding prefixes, for models without trained nested heads.

For each nesting dim m a multinomial logistic regression is fitted on the database (train)
embeddings' prefix ``x[:, :m]`` with full-batch L-BFGS, and top-1 / top-5 accuracy is measured
on the query embeddings' prefix.
"""

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

# Rows per forward/backward pass inside one L-BFGS closure: bounds the memory of the logits
# without changing the (full-batch) objective.
_CHUNK = 65_536
# Features whose training std is below this are left unscaled (only centred).
_MIN_STD = 1e-8


def _as_tensor(x: np.ndarray | torch.Tensor, dtype: torch.dtype, device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(device=device, dtype=dtype)
    # A copy: memory-mapped embeddings are read-only and often a strided prefix slice.
    return torch.tensor(np.asarray(x), dtype=dtype, device=device)


class LinearProbe:
    """A fitted multinomial logistic regression with its feature standardisation.

    ``logits = ((x - mean) / std) @ weight.T + bias``; ``mean`` and ``std`` are the training
    statistics (zeros and ones when fitted without standardisation).
    """

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
    ) -> None:
        self.weight = weight
        self.bias = bias
        self.mean = mean
        self.std = std

    @property
    def num_classes(self) -> int:
        """Number of classes C."""
        return self.weight.shape[0]

    @property
    def in_features(self) -> int:
        """Number of input features m."""
        return self.weight.shape[1]

    def predict_logits(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``(N, C)`` float32 logits for ``x`` of shape ``(N, m)``, on the probe's device."""
        x = _as_tensor(x, torch.float32, self.weight.device)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"expected inputs of shape (N, {self.in_features}), got {tuple(x.shape)}"
            )
        with torch.no_grad():
            return ((x - self.mean) / self.std) @ self.weight.T + self.bias

    def accuracy(
        self,
        x: np.ndarray | torch.Tensor,
        y: np.ndarray | torch.Tensor,
        top_k: Sequence[int] = (1, 5),
    ) -> dict[str, float]:
        """Top-k accuracies ``{"top1": ..., "top5": ...}``; k larger than C is skipped."""
        logits = self.predict_logits(x)
        y = _as_tensor(y, torch.long, logits.device)
        ks = [k for k in top_k if k <= self.num_classes]
        if not ks or y.numel() == 0:
            return {f"top{k}": float("nan") for k in ks}
        top = logits.topk(max(ks), dim=1).indices
        hit = top == y[:, None]
        return {f"top{k}": hit[:, :k].any(dim=1).float().mean().item() for k in ks}


def fit_linear_probe(
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    num_classes: int,
    weight_decay: float = 1e-4,
    max_iter: int = 100,
    standardize: bool = True,
    seed: int = 0,
    device: str | torch.device = "cpu",
    max_samples: int | None = 200_000,
) -> LinearProbe:
    """Fit a multinomial logistic regression on ``x`` ``(N, m)`` with labels ``y`` ``(N,)``.

    Minimises ``mean cross-entropy + weight_decay / 2 * ||W||^2`` (bias not penalised) with
    full-batch L-BFGS (strong-Wolfe line search, at most ``max_iter`` iterations) in float32
    from a zero initialisation. This equals scikit-learn's ``LogisticRegression`` with
    ``C = 1 / (weight_decay * N)``. With ``standardize`` the features are centred and scaled by
    the training mean and (population) std, kept in the probe; constant features are only
    centred.

    When ``N > max_samples`` the probe is fitted on a random subsample of ``max_samples``
    rows drawn with ``seed`` (pass None to always use every row); the objective is still
    evaluated in chunks, so memory stays bounded. The result is deterministic given ``seed``.
    """
    x = _as_tensor(x, torch.float32, device)
    y = _as_tensor(y, torch.long, device)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"need x (N, m) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] == 0:
        raise ValueError("cannot fit a probe on zero examples")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]")
    if max_samples is not None and x.shape[0] > max_samples:
        keep = np.sort(np.random.default_rng(seed).choice(x.shape[0], max_samples, replace=False))
        keep_t = torch.as_tensor(keep, device=x.device)
        x, y = x[keep_t], y[keep_t]

    n, m = x.shape
    if standardize:
        mean = x.mean(dim=0)
        std = x.std(dim=0, unbiased=False)
        std = torch.where(std < _MIN_STD, torch.ones_like(std), std)
        z = (x - mean) / std
    else:
        mean = torch.zeros(m, device=x.device)
        std = torch.ones(m, device=x.device)
        z = x

    weight = torch.zeros(num_classes, m, device=x.device, requires_grad=True)
    bias = torch.zeros(num_classes, device=x.device, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        total = torch.zeros((), device=x.device)
        for start in range(0, n, _CHUNK):
            logits = z[start : start + _CHUNK] @ weight.T + bias
            chunk = F.cross_entropy(logits, y[start : start + _CHUNK], reduction="sum") / n
            chunk.backward()
            total += chunk.detach()
        penalty = 0.5 * weight_decay * weight.pow(2).sum()
        penalty.backward()
        return total + penalty.detach()

    optimizer.step(closure)
    return LinearProbe(weight.detach(), bias.detach(), mean, std)


def probe_per_dim(
    database: np.ndarray | torch.Tensor,
    database_labels: np.ndarray | torch.Tensor,
    queries: np.ndarray | torch.Tensor,
    query_labels: np.ndarray | torch.Tensor,
    dims: Sequence[int],
    num_classes: int,
    progress: bool = True,
    **kw,
) -> list[dict]:
    """Fit a probe on ``database[:, :m]`` for every ``m`` in ``dims``; score it on ``queries``.

    ``kw`` goes to :func:`fit_linear_probe` (its ``device`` is also used for the data).

    Returns:
        Tidy rows ``{"dim": m, "metric": "probe_top1" | "probe_top5", "value": float}``; top-5
        only when ``num_classes >= 5``.
    """
    device = kw.get("device", "cpu")
    database = _as_tensor(database, torch.float32, device)
    queries = _as_tensor(queries, torch.float32, device)
    database_labels = _as_tensor(database_labels, torch.long, device)
    query_labels = _as_tensor(query_labels, torch.long, device)
    for m in dims:
        if not 0 < m <= min(database.shape[1], queries.shape[1]):
            raise ValueError(f"dim {m} is outside the embedding size {database.shape[1]}")
    top_k = (1, 5) if num_classes >= 5 else (1,)
    rows = []
    for m in tqdm(dims, desc="linear probes", unit="dim", disable=not progress):
        probe = fit_linear_probe(database[:, :m], database_labels, num_classes, **kw)
        scores = probe.accuracy(queries[:, :m], query_labels, top_k=top_k)
        rows.extend(
            {"dim": int(m), "metric": f"probe_top{k}", "value": scores[f"top{k}"]} for k in top_k
        )
    return rows
