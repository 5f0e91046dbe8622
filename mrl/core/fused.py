"""Matryoshka heads with their own forward and backward: the nested prefixes share their leading
columns, so the arithmetic is shared too.

For nesting dims m_1 < ... < m_K, chunk j holds the columns [m_{j-1}, m_j) (m_0 = 0).

- Tied (MRL-E), one weight `W (C, D)`: the logits of prefix k are the running sum of the chunks'
  partial products, `logits_k = sum_{j<=k} z_j @ W_j.T + b`, so the forward costs one full
  matmul. In the backward, chunk j's partial product feeds every prefix k >= j, so its
  gradient is the reverse cumulative sum `R_j = sum_{k>=j} dlogits_k`, and `dz_j = R_j @ W_j`,
  `dW_j = R_j.T @ z_j` are written straight into the chunk's columns of `dz` and `dW`.
- Untied (MRL), one `W_k (C, m_k)` per dim: `logits_k = z[:, :m_k] @ W_k.T + b_k`, and the
  backward accumulates `dz[:, :m_k] += dlogits_k @ W_k` in place instead of materialising one
  full-size gradient of `z` per prefix (what autograd's slicing does).

Both are exact (the same sums as the naive computation, up to float rounding) and leave the
modules' parameters, and so their state-dict keys, as they are.
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


class _NestedLinear(Function):
    @staticmethod
    def forward(ctx: Any, z: Tensor, nesting: tuple[int, ...], *params: Tensor | None) -> Tensor:
        weights, biases = params[0::2], params[1::2]
        out = z.new_empty(len(nesting), z.shape[0], weights[0].shape[0])
        for k, (m, w, b) in enumerate(zip(nesting, weights, biases)):
            if b is None:
                torch.mm(z[:, :m], w.t(), out=out[k])
            else:
                torch.addmm(b, z[:, :m], w.t(), out=out[k])
        ctx.save_for_backward(z, *weights)
        ctx.nesting, ctx.has_bias = nesting, [b is not None for b in biases]
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        z, *weights = ctx.saved_tensors
        nesting = ctx.nesting
        wants = ctx.needs_input_grad
        dz = None
        if wants[0]:  # the widest head writes dz, the narrower ones add into its leading columns
            dz = _grad_buffer(z, nesting[-1])
            torch.mm(grad[-1], weights[-1], out=dz[:, : nesting[-1]])
            for k in range(len(nesting) - 2, -1, -1):
                dz[:, : nesting[k]].addmm_(grad[k], weights[k])
        grads: list[Tensor | None] = []
        for k, m in enumerate(nesting):
            g = grad[k]
            grads.append(torch.mm(g.t(), z[:, :m]) if wants[2 + 2 * k] else None)
            has_bias = ctx.has_bias[k] and wants[3 + 2 * k]
            grads.append(g.sum(0) if has_bias else None)
        return (dz, None, *grads)


def tied_nested_linear(
    z: Tensor, weight: Tensor, bias: Tensor | None, nesting: tuple[int, ...]
) -> Tensor:
    """`(K, B, C)` logits of `z[:, :m] @ weight[:, :m].T + bias` for every m of `nesting`."""
    return _TiedNestedLinear.apply(z, weight, bias, tuple(nesting))


def nested_linear(
    z: Tensor, weights: list[Tensor], biases: list[Tensor | None], nesting: tuple[int, ...]
) -> Tensor:
    """`(K, B, C)` logits of `z[:, :m_k] @ weights[k].T + biases[k]` for every m_k of `nesting`."""
    params = [p for pair in zip(weights, biases) for p in pair]
    return _NestedLinear.apply(z, tuple(nesting), *params)


def _cast(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, Tensor) and value.is_floating_point():
        return value.to(dtype)
    if isinstance(value, list):
        return [_cast(v, dtype) for v in value]
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
        return kernel(_cast(z, dtype), *_cast(list(params), dtype), nesting)
