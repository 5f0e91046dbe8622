"""The heads against the naive autograd computation (`mrl.core.naive`): the tied head's fused
kernel, forward and every gradient, float32 and bfloat16, and `torch.autograd.gradcheck` in
float64; both heads' state dicts, values and dtypes under autocast."""

import pytest
import torch

from mrl import MRLHead
from mrl.core import naive
from mrl.core.fused import tied_nested_linear

NESTING = (2, 4, 8, 16)


def _inputs(dtype: torch.dtype, features: int = 20, batch: int = 6, classes: int = 5, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, features, generator=g, dtype=torch.float64).to(dtype)
    return z.requires_grad_(), g, classes


def _grads(out: torch.Tensor, tensors: list[torch.Tensor], seed: int = 1) -> list[torch.Tensor]:
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad(out, tensors, upstream.to(out.dtype))


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("bias", [True, False])
def test_tied_head_equals_the_naive_computation(dtype, tol, bias):
    z, g, classes = _inputs(dtype)
    w = torch.randn(classes, z.shape[1], generator=g).to(dtype).requires_grad_()
    b = torch.randn(classes, generator=g).to(dtype).requires_grad_() if bias else None
    params = [z, w] + ([b] if bias else [])
    fused = tied_nested_linear(z, w, b, NESTING)
    ref = naive.tied_nested_logits(z, w, b, NESTING)
    scale = ref.abs().max().item()
    assert fused.dtype == dtype and fused.shape == (len(NESTING), z.shape[0], classes)
    torch.testing.assert_close(fused, ref, atol=tol * scale, rtol=tol)
    for got, want in zip(_grads(fused, params), _grads(ref, params)):
        torch.testing.assert_close(got, want, atol=tol * want.abs().max().item(), rtol=tol)
    # Columns beyond the largest dim get no gradient, as in the naive computation.
    assert (_grads(tied_nested_linear(z, w, b, NESTING), [w])[0][:, NESTING[-1] :] == 0).all()


def test_gradcheck_in_float64():
    z, g, classes = _inputs(torch.float64, features=9, batch=3, classes=4)
    nesting = (1, 3, 7)
    w = torch.randn(classes, 9, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(classes, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z, w, b: tied_nested_linear(z, w, b, nesting),
                                    (z, w, b))  # fmt: skip


@pytest.mark.parametrize("tied", [False, True])
def test_the_head_uses_the_kernels_and_keeps_its_state_dict(tied):
    head = MRLHead(20, 5, NESTING, tied=tied)
    keys = ["linear.weight", "linear.bias"] if tied else [
        f"linears.{i}.{p}" for i in range(len(NESTING)) for p in ("weight", "bias")
    ]  # fmt: skip
    assert list(head.state_dict()) == keys
    z = torch.randn(6, 20, requires_grad=True)
    out = head(z)
    if tied:
        assert out.grad_fn.name().endswith("NestedLinearBackward")
    if tied:
        ref = naive.tied_nested_logits(z, head.linear.weight, head.linear.bias, NESTING)
    else:
        ref = naive.nested_logits(z, [lin.weight for lin in head.linears],
                                  [lin.bias for lin in head.linears], NESTING)  # fmt: skip
    torch.testing.assert_close(out, ref)
    # A frozen head still passes gradients to the representation, and none to itself.
    head.requires_grad_(False)
    (grad,) = torch.autograd.grad(head(z).sum(), [z])
    (want,) = torch.autograd.grad(ref.sum(), [z])
    torch.testing.assert_close(grad, want)


@pytest.mark.parametrize("tied", [False, True])
def test_under_autocast_the_head_runs_in_its_dtype(tied):
    head = MRLHead(20, 5, NESTING, tied=tied)
    z = torch.randn(6, 20, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(z)
        ref = naive.tied_nested_logits(z, head.linear.weight, head.linear.bias, NESTING) if tied \
            else naive.nested_logits(z, [lin.weight for lin in head.linears],
                                     [lin.bias for lin in head.linears], NESTING)  # fmt: skip
    assert out.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref, atol=3e-2 * ref.abs().max().item(), rtol=3e-2)
    out.float().sum().backward()
    params = list(head.parameters())
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in params)
    assert z.grad.dtype == torch.float32


def test_the_kernels_benchmark_runs_at_tiny_sizes():
    """`experiments/bench/fused_kernels.py`'s steps run: the benchmark cannot rot between runs."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / "bench" / "fused_kernels.py"
    spec = importlib.util.spec_from_file_location("kernels_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    heads = bench.head_steps(7, 4, (2, 4, 8), "cpu", torch.float32)
    assert set(heads) == {"plain", "authors MRL", "mrl", "authors MRL-E", "mrl_e"}
    medians = bench.interleaved(heads, repeats=1, device="cpu")
    assert all(ms > 0 for ms in medians.values())
    rows = bench.table("t", medians, bench.HEAD_RATIOS)
    assert {r["ratio_to"] for r in rows} >= {"plain", "authors MRL", "authors MRL-E"}
