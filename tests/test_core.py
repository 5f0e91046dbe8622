"""The core maths: nesting validation, MRL and MRL-E heads, the Matryoshka loss, schedules."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mrl import MatryoshkaLoss, MRLHead, halving_nesting, validate_nesting
from mrl.training.schedules import warmup_cosine, warmup_linear

NESTING = (2, 4, 8, 16)


def numpy_log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


@pytest.mark.parametrize(
    "nesting, match",
    [
        ([], "empty"),
        ([8, 4], "strictly increasing"),
        ([4, 4], "strictly increasing"),
        ([0, 8], "entry 0"),
        ([-2, 8], "entry -2"),
        ([2.5, 8], "entry 2.5"),
        ([8, 64], "exceeds the representation size 32"),
        ("8,16", "list of integers"),
    ],
)
def test_bad_nesting_is_named(nesting, match):
    with pytest.raises(ValueError, match=match):
        validate_nesting(nesting, in_features=32)
    with pytest.raises(ValueError, match=match):
        MRLHead(32, 10, nesting)


def test_nesting_is_an_ascending_tuple():
    head = MRLHead(16, 3, [2, 4, 16])
    assert head.nesting == (2, 4, 16)
    assert head.method == "mrl"
    assert MRLHead(16, 3, [2, 16], tied=True).method == "mrl_e"
    assert MRLHead(16, 3, [8]).method == "ff"
    assert halving_nesting(2048, 8) == [8, 16, 32, 64, 128, 256, 512, 1024, 2048]
    assert halving_nesting(256, 2) == [2, 4, 8, 16, 32, 64, 128, 256]


def test_untied_head_matches_numpy_per_prefix():
    torch.manual_seed(0)
    head = MRLHead(16, 5, NESTING)
    z = torch.randn(7, 16)
    logits = head(z)
    assert logits.shape == (len(NESTING), 7, 5)
    for k, m in enumerate(NESTING):
        w = head.linears[k].weight.detach().numpy()
        b = head.linears[k].bias.detach().numpy()
        assert w.shape == (5, m)
        expected = z[:, :m].numpy() @ w.T + b
        np.testing.assert_allclose(logits[k].detach().numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("nesting", [NESTING, (3, 5, 16), (16,), (1, 2, 3, 4, 12)])
@pytest.mark.parametrize("bias", [True, False])
def test_tied_head_equals_naive_prefix_matmuls(nesting, bias):
    torch.manual_seed(1)
    head = MRLHead(16, 6, nesting, tied=True, bias=bias)
    z = torch.randn(9, 16, dtype=torch.float64)
    head = head.double()
    w, b = head.linear.weight.detach(), head.linear.bias
    naive = [z[:, :m] @ w[:, :m].T + (b.detach() if b is not None else 0.0) for m in nesting]
    fused = head(z)
    assert fused.shape == (len(nesting), 9, 6)
    for got, want in zip(fused, naive, strict=True):
        torch.testing.assert_close(got.detach(), want, rtol=1e-12, atol=1e-12)


def test_tied_head_has_one_weight_matrix():
    head = MRLHead(16, 10, NESTING, tied=True)
    assert sum(p.numel() for p in head.parameters()) == 16 * 10 + 10
    untied = MRLHead(16, 10, NESTING)
    assert sum(p.numel() for p in untied.parameters()) == sum(m * 10 + 10 for m in NESTING)


@pytest.mark.parametrize("tied", [False, True])
def test_prefix_property_logits_ignore_later_coordinates(tied):
    torch.manual_seed(2)
    head = MRLHead(16, 4, NESTING, tied=tied)
    z = torch.randn(5, 16)
    before = head(z).detach()
    for k, m in enumerate(NESTING):
        changed = z.clone()
        changed[:, m:] += torch.randn_like(changed[:, m:]) * 10
        after = head(changed).detach()
        torch.testing.assert_close(after[: k + 1], before[: k + 1])
        if m < 16:
            assert not torch.allclose(after[k + 1 :], before[k + 1 :])


@pytest.mark.parametrize("tied", [False, True])
def test_gradients_reach_only_the_coordinates_a_head_uses(tied):
    torch.manual_seed(3)
    head = MRLHead(16, 4, NESTING, tied=tied)
    for k, m in enumerate(NESTING):
        z = torch.randn(5, 16, requires_grad=True)
        head(z)[k].sum().backward()
        assert torch.all(z.grad[:, m:] == 0)
        assert z.grad[:, :m].abs().max() > 0


def naive_matryoshka_loss(logits, target, weights, smoothing):
    """A loop over dims and examples in NumPy, with label smoothing written out."""
    total = 0.0
    for w, lg in zip(weights, logits, strict=True):
        logp = numpy_log_softmax(lg.astype(np.float64))
        c = lg.shape[1]
        per_example = []
        for i, y in enumerate(target):
            q = np.full(c, smoothing / c)
            q[y] += 1.0 - smoothing
            per_example.append(-(q * logp[i]).sum())
        total += w * float(np.mean(per_example))
    return total


@pytest.mark.parametrize("weights", [None, [1.0, 0.5, 2.0, 0.0]])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_matches_naive_reference(weights, smoothing):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 6, 5)).astype(np.float32)
    target = rng.integers(0, 5, size=6)
    loss = MatryoshkaLoss(weights=weights, label_smoothing=smoothing)
    got = loss(torch.from_numpy(logits), torch.from_numpy(target))
    want = naive_matryoshka_loss(logits, target, weights or [1.0] * 4, smoothing)
    assert math.isclose(got.item(), want, rel_tol=1e-5)
    as_list = loss([torch.from_numpy(x) for x in logits], torch.from_numpy(target))
    assert math.isclose(as_list.item(), want, rel_tol=1e-5)


def test_loss_per_dim_equals_single_cross_entropies():
    torch.manual_seed(4)
    logits, target = torch.randn(3, 8, 4), torch.randint(0, 4, (8,))
    per_dim = MatryoshkaLoss().per_dim(logits, target)
    for k in range(3):
        torch.testing.assert_close(per_dim[k], F.cross_entropy(logits[k], target))


@pytest.mark.parametrize(
    "weights, match",
    [([1.0, -1.0], "non-negative"), ([], "non-empty"), ([1.0, float("nan")], "finite")],
)
def test_bad_loss_weights_are_named(weights, match):
    with pytest.raises(ValueError, match=match):
        MatryoshkaLoss(weights=weights)


def test_weight_count_must_match_dims():
    loss = MatryoshkaLoss(weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="has 2 entries but the head has 3"):
        loss(torch.randn(3, 4, 5), torch.zeros(4, dtype=torch.long))


def test_loss_follows_dtype_and_device_of_its_inputs():
    loss = MatryoshkaLoss(weights=[1.0, 2.0])
    logits = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    out = loss(logits, torch.tensor([0, 1, 2, 0]))
    assert out.dtype == torch.float64
    out.backward()
    assert logits.grad is not None
    # The weights are a buffer: moving the loss (as a submodule) moves them too.
    assert "weights" in dict(loss.named_buffers())
    assert loss.to(torch.float64).weights.dtype == torch.float64
    if torch.cuda.is_available():
        out = loss.cuda()(logits.detach().cuda(), torch.tensor([0, 1, 2, 0]).cuda())
        assert out.device.type == "cuda"


def test_bf16_logits_work():
    loss = MatryoshkaLoss(weights=[1.0, 3.0])
    logits = torch.randn(2, 4, 3).to(torch.bfloat16)
    out = loss(logits, torch.tensor([0, 1, 2, 0]))
    ref = loss(logits.float(), torch.tensor([0, 1, 2, 0]))
    assert torch.isfinite(out) and math.isclose(out.float().item(), ref.item(), rel_tol=2e-2)


def lrs(factory, total=20, **kw):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = factory(opt, total_steps=total, steps_per_epoch=5, **kw)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_linear_peaks_at_warmup_and_decays_to_zero():
    values = lrs(warmup_linear, warmup_epochs=2)  # 2 epochs of 5 steps
    assert values[0] == 0.0 and values[10] == 1.0
    assert all(a < b for a, b in zip(values[:10], values[1:11], strict=True))
    assert all(a > b for a, b in zip(values[10:], values[11:], strict=False))
    assert math.isclose(values[-1], 1 / 10)


def test_warmup_cosine_ends_at_final_factor():
    values = lrs(warmup_cosine, total=101, warmup_epochs=0, final_factor=0.1)
    assert values[0] == 1.0
    assert math.isclose(values[50], 0.55, rel_tol=1e-6)
    assert min(values) >= 0.1


def test_atomic_writes_leave_normally_readable_files(tmp_path):
    import os
    import stat

    from mrl.runs.files import atomic_write_json

    umask = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(umask)
    mode = stat.S_IMODE((tmp_path / "r.json").stat().st_mode)
    assert mode == 0o644  # not mkstemp's private 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


@pytest.mark.parametrize("tied", [False, True])
def test_the_head_at_a_dim_is_the_linear_map_its_forward_applies(tied: bool):
    torch.manual_seed(0)
    head = MRLHead(16, 5, [4, 8, 16], tied=tied)
    z = torch.randn(3, 16)
    logits = head(z)
    for k, m in enumerate(head.nesting):
        weight, bias = head.at(m)
        assert weight.shape == (5, m)
        torch.testing.assert_close(z[:, :m] @ weight.T + bias, logits[k])
    with pytest.raises(ValueError, match="not in the head's nesting"):
        head.at(5)
