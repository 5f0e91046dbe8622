"""The 2D Matryoshka loss against a naive per-cell loop, its weighting, draws and bad input; the
projection-head (MRL-E) form of the contrastive loss against slicing by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from mrl import MatryoshkaContrastiveLoss
from mrl.core.errors import ConfigError
from mrl.core.heads import MRLHead
from mrl.core.matryoshka_2d import Matryoshka2DLoss, alignment_kl

L, B, D = 4, 6, 16
NESTING = (4, 8, 16)


def _stacks(seed: int = 0, batch: int = B) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(L, batch, D, generator=g), torch.randn(L, batch, D, generator=g)


def _naive_cell(a, p, a_teacher, p_teacher, scale, kl_weight, temperature, is_teacher):
    """InfoNCE and alignment KL of one cell, row by row with explicit sums."""

    def cos(u, v):
        return float(u @ v / (u.norm() * v.norm()))

    rows = a.shape[0]
    ce = kl = 0.0
    for i in range(rows):
        logits = [scale * cos(a[i], p[j]) for j in range(rows)]
        teach = [scale * cos(a_teacher[i], p_teacher[j]) for j in range(rows)]
        log_z = math.log(sum(math.exp(x) for x in logits))
        ce += log_z - logits[i]
        s = [x / temperature for x in logits]
        t = [x / temperature for x in teach]
        log_zs = math.log(sum(math.exp(x) for x in s))
        log_zt = math.log(sum(math.exp(x) for x in t))
        kl += sum(math.exp(tj - log_zt) * ((tj - log_zt) - (sj - log_zs)) for sj, tj in zip(s, t))
    ce, kl = ce / rows, temperature**2 * kl / rows
    return ce + (0.0 if is_teacher else kl_weight * kl)


@pytest.mark.parametrize("batch", [4, 9])
def test_pairs_mode_against_a_naive_loop(batch):
    a, p = _stacks(1, batch)
    pairs = [(1, 4), (2, 8), (4, 16), (4, 8)]
    loss = Matryoshka2DLoss(NESTING, L, mode="pairs", pairs=pairs, kl_weight=0.5,
                            kl_temperature=0.7, scale=5.0, gather=False)  # fmt: skip
    per_dim = loss.per_dim(a, p)
    want = {m: 0.0 for m in NESTING}
    for layer, m in pairs:
        want[m] += _naive_cell(a[layer - 1, :, :m], p[layer - 1, :, :m], a[-1], p[-1], 5.0, 0.5,
                               0.7, (layer, m) == (L, D)) / len(pairs)  # fmt: skip
    torch.testing.assert_close(per_dim, torch.tensor([want[m] for m in NESTING]), rtol=1e-5,
                               atol=1e-5)  # fmt: skip


def test_random_mode_against_a_naive_loop_and_its_layer_weights():
    a, p = _stacks(2)
    settings = dict(layers_per_step=2, prior_layers_weight=0.8, kl_temperature=0.5, scale=10.0)
    loss = Matryoshka2DLoss(NESTING, L, mode="random", gather=False, **settings)
    cells = Matryoshka2DLoss(NESTING, L, mode="random", layers_per_step=2).cells()
    layers = sorted({layer for layer, _, _ in cells})
    assert len(layers) == 3 and layers[-1] == L  # the last layer and two drawn below it
    per_dim = loss.per_dim(a, p)  # the same draw: same seed, step 0
    for k, m in enumerate(NESTING):
        want = 0.0
        for layer in layers:
            weight = 1.0 if layer == L else 0.8 / (1 + L - layer)
            want += weight * _naive_cell(a[layer - 1, :, :m], p[layer - 1, :, :m], a[-1], p[-1],
                                         10.0, 1.0, 0.5, (layer, m) == (L, D))  # fmt: skip
        assert abs(float(per_dim[k]) - want) < 1e-4


def test_the_draws_follow_the_seed_and_the_saved_step_counter():
    def draws(loss, n):
        return [sorted({layer for layer, _, _ in loss.cells()}) for _ in range(n)]

    first = Matryoshka2DLoss(NESTING, 6, seed=3)
    seen = draws(first, 40)
    assert len({tuple(d) for d in seen}) > 1 and all(d[-1] == 6 and len(d) == 2 for d in seen)
    assert draws(Matryoshka2DLoss(NESTING, 6, seed=3), 40) == seen  # every process agrees
    assert draws(Matryoshka2DLoss(NESTING, 6, seed=4), 40) != seen
    # A resumed loss (its state dict) continues the uninterrupted draws.
    interrupted = Matryoshka2DLoss(NESTING, 6, seed=3)
    draws(interrupted, 25)
    resumed = Matryoshka2DLoss(NESTING, 6, seed=3)
    resumed.load_state_dict(interrupted.state_dict())
    assert draws(resumed, 15) == seen[25:]


def test_the_alignment_term_is_a_mean_over_anchors_and_detached_from_the_teacher():
    g = torch.Generator().manual_seed(5)
    student, teacher = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    once = alignment_kl(student, teacher, 0.5)
    twice = alignment_kl(student.repeat(2, 1), teacher.repeat(2, 1), 0.5)
    torch.testing.assert_close(twice, once)  # the batch size does not scale it
    ref = 0.25 * F.kl_div(F.log_softmax(student / 0.5, -1), F.log_softmax(teacher / 0.5, -1),
                          reduction="batchmean", log_target=True)  # fmt: skip
    torch.testing.assert_close(once, ref)
    # Only a student cell: no gradient reaches the teacher (the last layer).
    a, p = _stacks(3)
    a.requires_grad_()
    loss = Matryoshka2DLoss(NESTING, L, mode="pairs", pairs=[(1, 8)], gather=False)
    loss(a, p).backward()
    assert a.grad[-1].abs().sum() == 0 and a.grad[0].abs().sum() > 0


def test_one_cell_at_the_last_layer_without_alignment_is_the_one_layer_loss():
    a, p = _stacks(4)
    two_d = Matryoshka2DLoss(NESTING, L, mode="pairs", pairs=[(L, m) for m in NESTING],
                             kl_weight=0.0, gather=False)  # fmt: skip
    one_layer = MatryoshkaContrastiveLoss(NESTING, gather=False)
    torch.testing.assert_close(two_d.per_dim(a, p) * len(NESTING), one_layer.per_dim(a[-1], p[-1]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mode="pairs"), "needs loss.pairs"),
        (dict(mode="pairs", pairs=[[5, 8]]), r"layer in 1\.\.4"),
        (dict(mode="pairs", pairs=[[2, 12]]), "a dim of the nesting"),
        (dict(mode="pairs", pairs=[[2, 8], [2, 8]]), "twice"),
        (dict(mode="random", pairs=[[2, 8]]), "for mode=pairs"),
        (dict(mode="random", layers_per_step=4), "at most 3"),
        (dict(mode="diagonal"), "not one of"),
        (dict(kl_weight=-1.0), "non-negative"),
    ],
)
def test_bad_settings_name_the_fix(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Matryoshka2DLoss(NESTING, L, **kwargs)


def test_a_loss_bound_to_other_layers_is_refused():
    loss = Matryoshka2DLoss(NESTING, None)
    loss.bind_layers(4)
    with pytest.raises(ConfigError, match="loss.num_layers=4 but the encoder has 6"):
        loss.bind_layers(6)


@pytest.mark.parametrize("tied", [True, False])
def test_projected_embeddings_are_scored_per_dim_at_their_full_width(tied):
    torch.manual_seed(0)
    head = MRLHead(D, 10, NESTING, tied=tied)
    z_a, z_p = torch.randn(B, D), torch.randn(B, D)
    loss = MatryoshkaContrastiveLoss(NESTING, gather=False, symmetric=True)
    got = loss.per_dim(head(z_a), head(z_p))
    weights = [head.linear.weight[:, :m] for m in NESTING] if tied else [
        lin.weight for lin in head.linears]  # fmt: skip
    biases = [head.linear.bias] * len(NESTING) if tied else [lin.bias for lin in head.linears]
    for k, m in enumerate(NESTING):
        pa = z_a[:, :m] @ weights[k].T + biases[k]
        pp = z_p[:, :m] @ weights[k].T + biases[k]
        want = MatryoshkaContrastiveLoss([10], gather=False, symmetric=True).per_dim(pa, pp)[0]
        torch.testing.assert_close(got[k], want)
