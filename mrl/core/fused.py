"""The tied Matryoshka head (MRL-E) with its own forward and backward: the nested prefixes share
their leading columns, so the arithmetic is shared too.

For nesting dims m_1 < ... < m_K, chunk j holds the columns [m_{j-1}, m_j) (m_0 = 0). With one
weight `W (C, D)`, the logits of prefix k are the running sum of the chunks' partial products,
`logits_k = sum_{j<=k} z_j @ W_j.T + b`, so the forward costs one full matmul. In the backward,
chunk j's partial product feeds every prefix k >= j, so its gradient is the reverse cumulative
sum `R_j = sum_{k>=j} dlogits_k`, and `dz_j = R_j @ W_j`, `dW_j = R_j.T @ z_j` are written
straight into the chunk's columns of `dz` and `dW`.

It is exact (the same sums as the naive computation, up to float rounding) and leaves the
module's parameters, and so its state-dict keys, as they are.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable


def _starts(nesting: tuple[int, ...]) -> tuple[int, ...]:
    return (0, *nesting[:-1])


def _grad_buffer(like: Tensor, written: int) -> Tensor:
    """An uninitialised gradient of `like`'s shape whose columns from `written` on are zero."""
    out = like.new_empty(like.shape)
    if written < like.shape[1]:
        out[:, written:] = 0
    return out


class _TiedNestedLinear(Function):
    @staticmethod
    def forward(
        ctx: Any, z: Tensor, weight: Tensor, bias: Tensor | None, nesting: tuple[int, ...]
    ) -> Tensor:
        out = z.new_empty(len(nesting), z.shape[0], weight.shape[0])
        for k, (a, b) in enumerate(zip(_starts(nesting), nesting)):
            if k > 0:  # each prefix: the one before plus this chunk's product
                torch.addmm(out[k - 1], z[:, a:b], weight[:, a:b].t(), out=out[k])
            elif bias is not None:
                torch.addmm(bias, z[:, a:b], weight[:, a:b].t(), out=out[0])
            else:
                torch.mm(z[:, a:b], weight[:, a:b].t(), out=out[0])
        ctx.save_for_backward(z, weight)
        ctx.nesting, ctx.has_bias = nesting, bias is not None
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        z, weight = ctx.saved_tensors
        nesting = ctx.nesting
        want_z, want_w, want_b = ctx.needs_input_grad[:3]
        buffer = grad.new_empty(grad.shape[1:]) if len(nesting) > 1 else None
        # Every column up to the largest dim is written below; only those beyond need zeros.
        dz = _grad_buffer(z, nesting[-1]) if want_z else None
        dw = _grad_buffer(weight, nesting[-1]) if want_w else None
        # From the last chunk down, `running` is R_j = sum_{k >= j} grad_k: the last grad
        # itself, then one buffer that each step adds its grad into.
        last = len(nesting) - 1
        running = grad[last]
        for k in range(last, -1, -1):
            if k == last - 1:
                running = torch.add(grad[last], grad[k], out=buffer)
            elif k < last - 1:
                running.add_(grad[k])
            a, b = _starts(nesting)[k], nesting[k]
            if dz is not None:
                torch.mm(running, weight[:, a:b], out=dz[:, a:b])
            if dw is not None:
                torch.mm(running.t(), z[:, a:b], out=dw[:, a:b])
        db = running.sum(0) if want_b and ctx.has_bias else None
        return dz, dw, db, None


def tied_nested_linear(
    z: Tensor, weight: Tensor, bias: Tensor | None, nesting: tuple[int, ...]
) -> Tensor:
    """`(K, B, C)` logits of `z[:, :m] @ weight[:, :m].T + bias` for every m of `nesting`."""
    return _TiedNestedLinear.apply(z, weight, bias, tuple(nesting))


def _cast(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, Tensor) and value.is_floating_point():
        return value.to(dtype)
    return value


def autocast_apply(kernel: Any, z: Tensor, *params: Any, nesting: tuple[int, ...]) -> Tensor:
    """Run a kernel under the caller's autocast as autocast would run a matmul: inputs cast to
    the autocast dtype, the kernel itself with autocast off (its `out=` products need one
    dtype)."""
    device = z.device.type
    if not torch.is_autocast_enabled(device):
        return kernel(z, *params, nesting)
    dtype = torch.get_autocast_dtype(device)
    with torch.autocast(device, enabled=False):
        return kernel(_cast(z, dtype), *(_cast(p, dtype) for p in params), nesting)
