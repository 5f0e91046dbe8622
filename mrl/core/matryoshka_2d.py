"""2D Matryoshka: in-batch-negatives InfoNCE over (layer, dim) cells of one forward pass.

The encoder returns every layer's pooled output at once, `(L, B, D)` for anchors and positives
(`HFTextEncoder.forward_layers`: one forward pass, no re-encoding per layer), so a model can be
cut in depth as well as in width. Cell `(l, m)` (layers counted from 1, `L` the last) is
scored by the InfoNCE of `anchor_l[:, :m]` against `positive_l[:, :m]`, plus `kl_weight` times
an alignment term: the KL divergence from the teacher's in-batch distribution (the last layer
at the full dim, detached, so the teacher is not pulled towards the students) to the cell's,
both softened by `kl_temperature`, summed over the candidates and averaged over the anchors,
times `kl_temperature ** 2`. Every term is a mean over the batch's anchors, so no weight
depends on the batch size. Two forms:

- `mode="random"` (2DMSE, Li et al. 2024): every step trains the last layer at every nesting
  dim, and `layers_per_step` earlier layers drawn at random at every dim, each weighted
  `prior_layers_weight / (1 + L - l)` (shallower layers count less). The draws come from
  `seed` and a step counter kept in the state dict: every process of a DDP job draws the same
  layers, and a resumed run draws what the uninterrupted one would.
- `mode="pairs"` (Starbucks, Zhuang et al. 2024): a fixed list of `(layer, dim)` cells, the
  mean of their losses every step.

`per_dim` returns one loss per nesting dim (the sum over the layers trained at that dim), so
the weighting and logging of `NestedLoss` apply unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mrl.core.contrastive import gather_with_grad
from mrl.core.errors import ConfigError
from mrl.core.losses import NestedLoss
from mrl.core.nesting import validate_nesting
from mrl.core.validate import positive_int

MODES = ("random", "pairs")


def _cosine_logits(queries: Tensor, documents: Tensor, scale: float) -> Tensor:
    return scale * F.normalize(queries, dim=-1) @ F.normalize(documents, dim=-1).T


def alignment_kl(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """`T^2 * mean_i KL(softmax(teacher_i / T) || softmax(student_i / T))` over the rows i of
    two `(Q, N)` logit matrices; the teacher is detached."""
    target = F.log_softmax(teacher.detach() / temperature, dim=-1)
    log_student = F.log_softmax(student / temperature, dim=-1)
    kl = (target.exp() * (target - log_student)).sum(-1).mean()
    return temperature**2 * kl


def _gather_layers(x: Tensor) -> tuple[Tensor, int]:
    """`gather_with_grad` of `(L, B, D)` layer stacks along the rows."""
    gathered, offset = gather_with_grad(x.transpose(0, 1).contiguous())
    return gathered.transpose(0, 1), offset


class Matryoshka2DLoss(NestedLoss):
    """Matryoshka InfoNCE over layers and dims; see the module docstring.

    Args:
        nesting: the dims m (strictly increasing). In `pairs` mode, every pair's dim must be
            one of them and dims with no pair have a zero loss.
        num_layers: L, the encoder's number of layers (the stacks' first axis); `None` = bound
            later by `bind_layers` (the text module binds the encoder's).
        mode: `random` (2DMSE) or `pairs` (Starbucks).
        pairs: `(layer, dim)` cells for `pairs` mode, layers counted from 1.
        layers_per_step: earlier layers drawn per step in `random` mode.
        prior_layers_weight: scales the drawn layers' losses in `random` mode.
        kl_weight: weight of the alignment term in every cell but the teacher's; 0 turns it off.
        kl_temperature: softens both distributions of the alignment term.
        scale: multiplies the cosine similarities (1 / temperature of the InfoNCE).
        weights: one weight per nesting dim (`NestedLoss`); `None` = 1 each.
        gather: under DDP, the other processes' rows are extra negatives (with gradients).
        seed: seeds the layer draws of `random` mode.

    Call as `loss(anchor_layers, positive_layers)` with two `(L, B, D)` tensors.
    """

    layered = True  # the module feeds it every layer's embeddings

    def __init__(
        self,
        nesting: Sequence[int],
        num_layers: int | None = None,
        mode: str = "random",
        pairs: Sequence[Sequence[int]] | None = None,
        layers_per_step: int = 1,
        prior_layers_weight: float = 1.0,
        kl_weight: float = 1.0,
        kl_temperature: float = 0.3,
        scale: float = 20.0,
        weights: Sequence[float] | None = None,
        gather: bool = True,
        seed: int = 0,
    ) -> None:
        nesting = validate_nesting(nesting)
        super().__init__(weights, nesting)
        self.nesting = nesting
        if mode not in MODES:
            raise ConfigError(f"loss.mode={mode!r} is not one of {MODES}")
        self.mode = mode
        if mode == "pairs" and not pairs:
            raise ConfigError("loss.mode=pairs needs loss.pairs, a list of [layer, dim] cells")
        if mode == "random" and pairs:
            raise ConfigError("loss.pairs is for mode=pairs; set it to null for mode=random")
        self._pairs_given = [list(p) for p in pairs] if pairs else []
        self.pairs: tuple[tuple[int, int], ...] = ()
        self.layers_per_step = positive_int(layers_per_step, "loss.layers_per_step")
        for name, value in (("prior_layers_weight", prior_layers_weight),
                            ("kl_weight", kl_weight)):  # fmt: skip
            if not value >= 0:
                raise ConfigError(f"loss.{name} must be non-negative, got {value!r}")
        if not kl_temperature > 0 or not scale > 0:
            raise ConfigError(
                f"loss.kl_temperature and loss.scale must be positive, got {kl_temperature!r} "
                f"and {scale!r}"
            )
        self.prior_layers_weight = float(prior_layers_weight)
        self.kl_weight, self.kl_temperature = float(kl_weight), float(kl_temperature)
        self.scale, self.gather, self.seed = float(scale), bool(gather), int(seed)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.num_layers: int | None = None
        if num_layers is not None:
            self.bind_layers(num_layers)

    def bind_layers(self, num_layers: int) -> None:
        """Fix L, the encoder's number of layers, and check the cells against it; raises
        `ConfigError` if the loss was already bound to another L."""
        num_layers = positive_int(num_layers, "loss.num_layers")
        if self.num_layers is not None and num_layers != self.num_layers:
            raise ConfigError(
                f"loss.num_layers={self.num_layers} but the encoder has {num_layers} layers; "
                f"set loss.num_layers={num_layers} (or null: the encoder's)"
            )
        if self.mode == "random" and self.layers_per_step > num_layers - 1:
            raise ConfigError(
                f"loss.layers_per_step={self.layers_per_step} needs that many layers below the "
                f"last; the encoder has {num_layers}: use at most {num_layers - 1}"
            )
        self.num_layers = num_layers
        if self.mode == "pairs":
            self.pairs = self._checked_pairs(self._pairs_given)

    def _checked_pairs(self, pairs: Sequence[Sequence[int]]) -> tuple[tuple[int, int], ...]:
        cells = []
        for pair in pairs:
            if len(pair) != 2:
                raise ConfigError(f"loss.pairs: {list(pair)!r} is not a [layer, dim] pair")
            layer, dim = int(pair[0]), int(pair[1])
            if not 1 <= layer <= self.num_layers or dim not in self.nesting:
                raise ConfigError(
                    f"loss.pairs: [{layer}, {dim}] needs a layer in 1..{self.num_layers} and a "
                    f"dim of the nesting {list(self.nesting)}"
                )
            cells.append((layer, dim))
        if len(set(cells)) != len(cells):
            raise ConfigError(f"loss.pairs lists a cell twice: {cells}")
        return tuple(cells)

    def cells(self) -> list[tuple[int, int, float]]:
        """This step's `(layer, dim, weight)` cells; in `random` mode a new draw per call."""
        if self.mode == "pairs":
            return [(layer, m, 1.0 / len(self.pairs)) for layer, m in self.pairs]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.steps))
        self.steps += 1
        drawn = torch.randperm(self.num_layers - 1, generator=generator)[: self.layers_per_step]
        layers = [(self.num_layers, 1.0)] + [
            (int(i) + 1, self.prior_layers_weight / (1 + self.num_layers - (int(i) + 1)))
            for i in sorted(drawn.tolist())
        ]
        return [(layer, m, w) for layer, w in layers for m in self.nesting]

    def per_dim(self, anchor: Tensor, positive: Tensor) -> Tensor:
        """The loss of each nesting dim, shape `(K,)`: the weighted sum of its cells' losses."""
        if anchor.ndim != 3 or anchor.shape != positive.shape:
            raise ValueError(
                f"need anchor and positive layer stacks of one shape (L, B, D), got "
                f"{tuple(anchor.shape)} and {tuple(positive.shape)}"
            )
        if self.num_layers is None:
            self.bind_layers(anchor.shape[0])
        if anchor.shape[0] != self.num_layers or self.nesting[-1] > anchor.shape[2]:
            raise ValueError(
                f"stacks of shape {tuple(anchor.shape)} do not fit num_layers={self.num_layers}"
                f" and nesting {list(self.nesting)}"
            )
        all_positives, offset = _gather_layers(positive) if self.gather else (positive, 0)
        target = torch.arange(offset, offset + anchor.shape[1], device=anchor.device)
        teacher = None
        if self.kl_weight > 0:
            teacher = _cosine_logits(anchor[-1], all_positives[-1], self.scale).detach()
        index = {m: i for i, m in enumerate(self.nesting)}
        losses = [anchor.new_zeros(()) for _ in self.nesting]
        for layer, m, weight in self.cells():
            logits = _cosine_logits(anchor[layer - 1, :, :m], all_positives[layer - 1, :, :m],
                                    self.scale)  # fmt: skip
            cell = F.cross_entropy(logits, target)
            if teacher is not None and (layer, m) != (self.num_layers, anchor.shape[2]):
                cell = cell + self.kl_weight * alignment_kl(logits, teacher, self.kl_temperature)
            losses[index[m]] = losses[index[m]] + weight * cell
        return torch.stack(losses)

    def extra_repr(self) -> str:
        cells = f"pairs={list(self.pairs)}" if self.pairs else f"per_step={self.layers_per_step}"
        return f"{self.mode}, layers={self.num_layers}, nesting={list(self.nesting)}, {cells}"
