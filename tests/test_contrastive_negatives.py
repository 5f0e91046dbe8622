"""Hard negatives in the Matryoshka contrastive loss (against a naive loop, sentence-transformers,
the projection form, two DDP processes and gradient caching), and the self-distillation loss."""

import math
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from st_reference import matryoshka_mnrl
from torch import Tensor, nn

from mrl.core.adaptor import similarity_losses
from mrl.core.contrastive import MatryoshkaContrastiveLoss
from mrl.core.distill import SimilarityDistillationLoss
from mrl.training.grad_cache import cached_embeddings, row_chunks

DIMS = [4, 8, 16]
WEIGHTS = [0.5, 1.0, 2.0]


def _triplets(batch: int, negatives: int, width: int = 16, seed: int = 0):
    """Anchors `(B, D)`, positives near them, and `(B, N, D)` hard negatives near them too."""
    g = torch.Generator().manual_seed(seed)
    anchor = 3 * torch.randn(batch, width, generator=g)
    positive = anchor + torch.randn(batch, width, generator=g)
    hard = anchor[:, None] + 1.5 * torch.randn(batch, negatives, width, generator=g)
    return anchor, positive, hard


# -- against a naive loop ------------------------------------------------------------------


def _cos(a: Tensor, b: Tensor) -> float:
    return float(F.cosine_similarity(a, b, dim=0))


def _neg_log_softmax(logits: list[float], target: int) -> float:
    top = max(logits)
    return top + math.log(sum(math.exp(x - top) for x in logits)) - logits[target]


def naive_loss(anchor, positive, hard, nesting, weights, scale, symmetric) -> float:
    """Row by row and prefix by prefix: each anchor against every positive, then every row's
    hard negatives; the reverse direction ranks the anchors only."""
    batch, count = hard.shape[:2]
    total = 0.0
    for w, m in zip(weights or [1.0] * len(nesting), nesting):
        candidates = [positive[j, :m] for j in range(batch)]
        candidates += [hard[j, n, :m] for j in range(batch) for n in range(count)]
        forward = [
            _neg_log_softmax([scale * _cos(anchor[i, :m], c) for c in candidates], i)
            for i in range(batch)
        ]
        loss = sum(forward) / batch
        if symmetric:
            backward = [
                _neg_log_softmax([scale * _cos(positive[i, :m], a[:m]) for a in anchor], i)
                for i in range(batch)
            ]
            loss = 0.5 * (loss + sum(backward) / batch)
        total += w * loss
    return total


@pytest.mark.parametrize("count", [1, 2])
@pytest.mark.parametrize("weights", [None, WEIGHTS])
@pytest.mark.parametrize("symmetric", [False, True])
def test_hard_negatives_against_a_naive_loop(count, weights, symmetric):
    anchor, positive, hard = _triplets(5, count, seed=count)
    loss = MatryoshkaContrastiveLoss(DIMS, weights=weights, scale=5.0, symmetric=symmetric)
    want = naive_loss(anchor, positive, hard, DIMS, weights, 5.0, symmetric)
    assert abs(float(loss(anchor, positive, hard)) - want) < 1e-4
    # The hard negatives are candidates: leaving them out changes the loss.
    assert abs(float(loss(anchor, positive)) - want) > 1e-3


def test_negatives_of_the_wrong_shape_are_rejected():
    anchor, positive, hard = _triplets(4, 2)
    loss = MatryoshkaContrastiveLoss(DIMS)
    for bad in (hard[:3], hard[..., :8], hard[:, 0], hard[:, :0]):
        with pytest.raises(ValueError, match=r"shape \(4, N, 16\).*\(4, 16\), got \("):
            loss(anchor, positive, bad)
    stacks = torch.randn(3, 4, 8)
    with pytest.raises(ValueError, match=r"shape \(3, 4, N, 8\).*\(3, 4, 8\), got \(3, 4, 8\)"):
        MatryoshkaContrastiveLoss(DIMS)(stacks, stacks, stacks)


# -- equal to sentence-transformers ---------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2])
@pytest.mark.parametrize("symmetric, weights", [(False, None), (True, None), (False, WEIGHTS)])
def test_hard_negatives_equal_sentence_transformers(count, symmetric, weights):
    anchor, positive, hard = _triplets(8, count, seed=10 + count)
    reference = matryoshka_mnrl(anchor.shape[1], DIMS, weights, symmetric)
    ours = MatryoshkaContrastiveLoss(DIMS, weights=weights, scale=20.0, symmetric=symmetric)
    # Their columns: anchor, positive, negative_1, ..., negative_N.
    theirs_in = [anchor, positive, *hard.unbind(1)]
    theirs_in = [x.clone().requires_grad_() for x in theirs_in]
    ours_in = [x.clone().requires_grad_() for x in (anchor, positive, hard)]
    expected = reference([{"embedding": x} for x in theirs_in], torch.zeros(len(anchor)))
    value = ours(*ours_in)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-5)
    got = torch.autograd.grad(value, ours_in)
    want = torch.autograd.grad(expected, theirs_in)
    torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got[2], torch.stack(want[2:], dim=1), rtol=1e-4, atol=1e-6)


# -- the projection form -------------------------------------------------------------------


@pytest.mark.parametrize("symmetric", [False, True])
def test_projection_stacks_equal_the_two_dimensional_form_per_slice(symmetric):
    torch.manual_seed(3)
    num_dims, batch, count, width = 3, 6, 2, 10
    anchor, positive = torch.randn(num_dims, batch, width), torch.randn(num_dims, batch, width)
    hard = torch.randn(num_dims, batch, count, width)
    loss = MatryoshkaContrastiveLoss(DIMS, weights=WEIGHTS, symmetric=symmetric)
    per_slice = MatryoshkaContrastiveLoss([width], symmetric=symmetric)
    want = torch.stack([per_slice.per_dim(a, p, n)[0] for a, p, n in zip(anchor, positive, hard)])
    torch.testing.assert_close(loss.per_dim(anchor, positive, hard), want)
    torch.testing.assert_close(loss(anchor, positive, hard), (torch.tensor(WEIGHTS) * want).sum())


# -- two processes under DDP ---------------------------------------------------------------


def _encoder() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(6, 16)


def _ddp_loss(encoder: nn.Module, inputs: tuple[Tensor, Tensor, Tensor], symmetric: bool) -> Tensor:
    anchor, positive, hard = (encoder(x) for x in inputs)
    loss = MatryoshkaContrastiveLoss(DIMS, weights=WEIGHTS, symmetric=symmetric)
    return loss(anchor, positive, hard)


def _ddp_inputs() -> tuple[Tensor, Tensor, Tensor]:
    """Both ranks' rows: 2 x 4 anchors and positives, 2 hard negatives each."""
    g = torch.Generator().manual_seed(5)
    shapes = ((8, 6), (8, 6), (8, 2, 6))
    return tuple(torch.randn(*shape, generator=g) for shape in shapes)


def _ddp_rank(rank: int, world: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world
    )
    try:
        rows = slice(4 * rank, 4 * rank + 4)
        local = tuple(x[rows] for x in _ddp_inputs())
        results = {}
        for symmetric in (False, True):
            encoder = _encoder()
            value = _ddp_loss(encoder, local, symmetric)
            value.backward()
            results[symmetric] = (value.detach(), [p.grad for p in encoder.parameters()])
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_two_processes_equal_one_over_their_rows(tmp_path: Path):
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    mp.spawn(_ddp_rank, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for symmetric in (False, True):
        encoder = _encoder()
        whole = _ddp_loss(encoder, _ddp_inputs(), symmetric)
        whole.backward()
        # Each rank's loss is the mean over its own anchors, so the whole batch's is their mean.
        torch.testing.assert_close((ranks[0][symmetric][0] + ranks[1][symmetric][0]) / 2, whole)
        # A rank's gradient already holds every rank's loss (the gather sends the gradients of
        # its rows back), so DDP's mean over the ranks is the single process's gradient.
        for i, p in enumerate(encoder.parameters()):
            mean = (ranks[0][symmetric][1][i] + ranks[1][symmetric][1][i]) / 2
            torch.testing.assert_close(mean, p.grad, rtol=1e-4, atol=1e-6)


# -- gradient caching ----------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [3, 7])
def test_gradient_caching_with_hard_negatives(chunk):
    torch.manual_seed(4)
    encoder = nn.Sequential(nn.Linear(6, 24), nn.Tanh(), nn.Linear(24, 16))
    batch, count = 5, 2
    xa, xp, xn = torch.randn(batch, 6), torch.randn(batch, 6), torch.randn(batch, count, 6)
    loss = MatryoshkaContrastiveLoss(DIMS, weights=WEIGHTS, symmetric=True)

    direct = loss(encoder(xa), encoder(xp), encoder(xn))
    direct.backward()
    want = [p.grad.clone() for p in encoder.parameters()]
    encoder.zero_grad(set_to_none=True)

    # Every row of the step (anchors, positives, negatives) in chunks that cross their borders.
    rows = torch.cat([xa, xp, xn.flatten(0, 1)])
    chunks = row_chunks({"x": rows}, chunk)
    embeddings = cached_embeddings(lambda f: encoder(f["x"]), chunks, rows.device)
    anchor, positive, hard = embeddings.split([batch, batch, batch * count])
    cached = loss(anchor, positive, hard.view(batch, count, -1))
    cached.backward()
    torch.testing.assert_close(cached, direct)
    for p, g in zip(encoder.parameters(), want):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)


# -- self-distillation ---------------------------------------------------------------------


def test_distillation_is_zero_when_the_student_is_the_teacher_at_full_width():
    teacher = torch.randn(7, 12)
    student = teacher.clone().requires_grad_()
    value = SimilarityDistillationLoss([12])(student, teacher)
    value.backward()
    assert float(value.detach()) == 0.0
    assert torch.count_nonzero(student.grad) == 0


def test_distillation_by_hand():
    # Student rows s1 = (1, 0), s2 = (-1, 1), s3 = (2, 2); teacher rows t1 = t2 = (3, 4),
    # t3 = (0, 1). Teacher cosines: c12 = 1, c13 = 4/5 = 0.8, c23 = 0.8.
    # m = 1: prefixes 1, -1, 2 -> cosines -1, 1, -1; gaps |-1 - 1| = 2, |1 - 0.8| = 0.2,
    #   |-1 - 0.8| = 1.8; mean over the pairs (each counted twice, i < j and j < i) 4 / 3.
    # m = 2: cosines -1/sqrt2, 1/sqrt2, 0; gaps 1 + 1/sqrt2, 0.8 - 1/sqrt2, 0.8; sum 2.6,
    #   mean 2.6 / 3 = 13/15.
    # Weights (1, 2): 4/3 + 26/15 = 46/15.
    student = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [2.0, 2.0]])
    teacher = torch.tensor([[3.0, 4.0], [3.0, 4.0], [0.0, 1.0]])
    loss = SimilarityDistillationLoss([1, 2], weights=[1.0, 2.0])
    torch.testing.assert_close(loss.per_dim(student, teacher), torch.tensor([4 / 3, 13 / 15]))
    torch.testing.assert_close(loss(student, teacher), torch.tensor(46 / 15))


def test_a_short_prefix_of_a_generic_student_has_a_positive_loss():
    torch.manual_seed(6)
    teacher = torch.randn(9, 16)
    per_dim = SimilarityDistillationLoss([4, 16]).per_dim(teacher, teacher)
    assert float(per_dim[0]) > 0.01 and float(per_dim[1]) < 1e-6


def test_the_teacher_gets_no_gradient():
    torch.manual_seed(7)
    student = torch.randn(6, 8, requires_grad=True)
    teacher_model = nn.Linear(8, 10)
    teacher = teacher_model(torch.randn(6, 8))
    SimilarityDistillationLoss([2, 8])(student, teacher).backward()
    assert student.grad is not None and torch.count_nonzero(student.grad) > 0
    assert all(p.grad is None for p in teacher_model.parameters())


def test_distillation_shares_the_adaptor_pairwise_gap():
    torch.manual_seed(8)
    original, adapted = torch.randn(6, 8), torch.randn(6, 8)
    pairwise, _ = similarity_losses(original, adapted, [2, 8], top_k=2)
    torch.testing.assert_close(SimilarityDistillationLoss([2, 8])(adapted, original), pairwise)


def test_distillation_rejects_bad_shapes():
    loss = SimilarityDistillationLoss([4, 8])
    with pytest.raises(ValueError, match=r"same rows, got \(5, 8\) and \(4, 8\)"):
        loss(torch.randn(5, 8), torch.randn(4, 8))
    with pytest.raises(ValueError, match="at least 2 rows"):
        loss(torch.randn(1, 8), torch.randn(1, 8))
    with pytest.raises(ValueError, match="exceeds the embedding size 6"):
        loss(torch.randn(5, 6), torch.randn(5, 8))
