"""Matryoshka classification heads: one set of logits per nested prefix of the representation.

A run's config names a method; `method_head` is the one reading of that name into the head it
trains (the config's `head:` node resolves through it). The way back, from a head to the name
its results are recorded under, is `head_method` alone (`MRLHead.method`): a head loaded
without a run config (the authors' checkpoints, `mrl.load`) has only its shape to go by.
"""

import math
import re
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mrl.core.errors import ConfigError
from mrl.core.fused import autocast_apply, tied_nested_linear
from mrl.core.nesting import validate_nesting
from mrl.core.validate import positive_int

# The methods of the paper, by the head each trains.
METHODS = ("mrl", "mrl_e", "ff")


def head_method(tied: bool, entries: int) -> str:
    """The method a head of `entries` nesting dims trains: `mrl_e` (tied), `ff` (one entry: the
    fixed-feature baseline FF-m, whatever its dim) or `mrl`."""
    if tied:
        return "mrl_e"
    return "ff" if entries == 1 else "mrl"


def method_head(method: str, nesting: Sequence[int]) -> tuple[list[int], bool]:
    """`(head nesting, tied)` of a method: `mrl` (a head per dim of `nesting`), `mrl_e` (the
    same, tied), `ff` (one head at the largest dim: the plain model) or `ffM` (one head at dim
    M, e.g. `ff16`); `ConfigError` for any other name."""
    name = str(method)
    if match := re.fullmatch(r"ff(\d+)", name):
        return [positive_int(int(match.group(1)), "method's dim")], False
    if name not in METHODS:
        raise ConfigError(
            f"method={name} is not a method: use mrl, mrl_e, ff or ffM (FF at dim M, e.g. ff16)"
        )
    dims = list(nesting)
    return (dims[-1:] if name == "ff" else dims), name == "mrl_e"


class MRLHead(nn.Module):
    """Linear heads on the nested prefixes `z[:, :m]` of a representation `z`.

    `tied=False` is MRL: one `Linear(m, C)` per nesting dim m. `tied=True` is MRL-E: one
    `Linear(in_features, C)` whose first m columns serve dim m, so
    `logits_m = z[:, :m] @ W[:, :m].T + b`. A single-entry nesting `[m]` is the fixed-feature
    baseline FF-m. `forward` returns a stacked `(K, B, C)` tensor, one slice per nesting dim in
    ascending order.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        nesting: list[int] | tuple[int, ...],
        tied: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__()
        num_classes = positive_int(num_classes, "num_classes")
        self.nesting = validate_nesting(nesting, in_features)
        self.in_features = in_features
        self.num_classes = num_classes
        self.tied = tied
        if tied:
            self.linear = nn.Linear(in_features, num_classes, bias=bias)
        else:
            self.linears = nn.ModuleList(nn.Linear(m, num_classes, bias=bias) for m in self.nesting)

    @property
    def method(self) -> str:
        """`mrl`, `mrl_e` (tied) or `ff` (one untied head: the fixed-feature baseline), by
        `head_method`."""
        return head_method(self.tied, len(self.nesting))

    def forward(self, z: Tensor) -> Tensor:
        """Logits `(K, B, C)` for the K nesting dims of `z` `(B, in_features)`: the tied head by
        the fused kernel of `mrl.core.fused` (one pass over the weight's column chunks), the
        untied heads by their own `Linear` on each prefix."""
        if self.tied:
            return autocast_apply(tied_nested_linear, z, self.linear.weight, self.linear.bias,
                                  nesting=self.nesting)  # fmt: skip
        # Plain per-dim products: a fused untied kernel measured no faster on CPU.
        return torch.stack([linear(z[:, :m]) for m, linear in zip(self.nesting, self.linears)])

    def at(self, dim: int) -> tuple[Tensor, Tensor | None]:
        """The weight `(C, dim)` and bias `(C,)` (None without one) of the linear map this head
        applies to the prefix `z[:, :dim]`, for a `dim` of its nesting: MRL-E's first `dim`
        columns of the shared weight, MRL's own `Linear` of that dim."""
        if int(dim) not in self.nesting:
            raise ValueError(f"dim {dim} is not in the head's nesting {list(self.nesting)}")
        linear = self.linear if self.tied else self.linears[list(self.nesting).index(int(dim))]
        return linear.weight[:, : int(dim)], linear.bias

    def extra_repr(self) -> str:
        kind = "MRL-E (tied)" if self.tied else "MRL"
        return (
            f"{kind}, in_features={self.in_features}, num_classes={self.num_classes}, "
            f"nesting={list(self.nesting)}"
        )

    def reset_parameters(self) -> None:
        """Re-initialise every head like `nn.Linear` does."""
        for lin in [self.linear] if self.tied else self.linears:
            nn.init.kaiming_uniform_(lin.weight, a=math.sqrt(5))
            if lin.bias is not None:
                bound = 1 / math.sqrt(lin.in_features)
                nn.init.uniform_(lin.bias, -bound, bound)
