"""The Matryoshka adaptor: identity at the start, losses against a naive loop, and an
unsupervised fit that improves the prefixes while keeping the full dim's similarities."""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from mrl.core.adaptor import MatryoshkaAdaptor, adaptor_loss, similarity_losses


def test_the_adaptor_starts_as_the_identity():
    e = torch.randn(5, 12)
    torch.testing.assert_close(MatryoshkaAdaptor(12, hidden=7)(e), e)


def test_similarity_losses_against_a_naive_loop():
    torch.manual_seed(0)
    original, adapted = torch.randn(6, 8), torch.randn(6, 8)
    nesting, k = [2, 8], 2
    pairwise, top = similarity_losses(original, adapted, nesting, top_k=k)

    def cos(a, b):
        return float(F.cosine_similarity(a, b, dim=0))

    want_pairwise = want_top = 0.0
    for m in nesting:
        diffs, tops = [], []
        for i in range(6):
            others = [j for j in range(6) if j != i]
            for j in others:
                diffs.append(
                    abs(cos(adapted[i, :m], adapted[j, :m]) - cos(original[i], original[j]))
                )
            nearest = sorted(others, key=lambda j: -cos(original[i], original[j]))[:k]
            tops += [abs(cos(adapted[i, :m], adapted[j, :m]) - cos(original[i], original[j]))
                     for j in nearest]  # fmt: skip
        want_pairwise += sum(diffs) / len(diffs)
        want_top += sum(tops) / len(tops)
    assert abs(float(pairwise) - want_pairwise) < 1e-5 and abs(float(top) - want_top) < 1e-5
    # The original itself at the full dim: nothing to lose.
    assert float(sum(similarity_losses(original, original, [8]))) < 1e-6


def test_an_unsupervised_fit_improves_prefixes_and_keeps_the_full_dim():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments" / "text"))
    from adaptor import fit

    torch.manual_seed(1)
    # Structure spread over all dims (a random rotation of clustered points): prefixes of the
    # raw vectors lose it, an adaptor can move it forward.
    centres = torch.randn(8, 32)
    points = centres[torch.randint(0, 8, (512,))] + 0.3 * torch.randn(512, 32)
    corpus = points @ torch.linalg.qr(torch.randn(32, 32))[0]
    nesting = [4, 8, 32]
    before = similarity_losses(corpus, corpus, [4])[0]
    adaptor, seconds = fit(corpus, None, nesting, epochs=30, batch_size=128, lr=3e-3, seed=0)
    with torch.no_grad():
        adapted = adaptor(corpus)
        after = similarity_losses(corpus, adapted, [4])[0]
        full = similarity_losses(corpus, adapted, [32])[0]
    assert after < 0.8 * before  # the 4-dim prefix keeps more of the geometry
    assert full < 0.05  # and the full dim keeps its similarities
    assert float(adaptor_loss(corpus, corpus, [32])) < 1e-6 and seconds >= 0
