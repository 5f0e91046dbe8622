"""Gradient caching gives the uncached loss's gradients, with dropout replayed exactly."""

import pytest
import torch
from torch import nn

from mrl import MatryoshkaContrastiveLoss
from mrl.training.grad_cache import cached_embeddings, row_chunks

DIMS = (4, 8, 16)


def _encoder(dropout: float) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 32), nn.Dropout(dropout), nn.Tanh(), nn.Linear(32, 16))


def _grads(encoder: nn.Module, embeddings: torch.Tensor) -> list[torch.Tensor]:
    anchor, positive = embeddings.chunk(2)
    MatryoshkaContrastiveLoss(DIMS, symmetric=True).forward(anchor, positive).backward()
    grads = [p.grad.clone() for p in encoder.parameters()]
    encoder.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("chunk", [1, 3, 5, 24])
def test_cached_equals_uncached_without_dropout(chunk):
    encoder = _encoder(0.0)
    x = torch.randn(24, 10)
    plain = _grads(encoder, encoder(x))
    chunks = list(x.split(chunk))
    cached = _grads(encoder, cached_embeddings(encoder, chunks, x.device))
    for got, want in zip(cached, plain):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_dropout_is_replayed_so_the_gradients_are_exact():
    encoder = _encoder(0.5)
    x = torch.randn(24, 10)
    chunks = list(x.split(5))
    # The reference: the same chunks encoded once, with gradients, from the same random state.
    torch.manual_seed(7)
    plain = _grads(encoder, torch.cat([encoder(c) for c in chunks]))
    torch.manual_seed(7)
    cached = _grads(encoder, cached_embeddings(encoder, chunks, x.device))
    for got, want in zip(cached, plain):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # The replays leave the training's random stream where one pass over the chunks leaves it.
    torch.manual_seed(7)
    with torch.no_grad():
        [encoder(c) for c in chunks]
    expected_next = torch.rand(1)
    torch.manual_seed(7)
    _grads(encoder, cached_embeddings(encoder, chunks, x.device))
    assert torch.rand(1) == expected_next


def test_row_chunks_split_every_field():
    features = {"input_ids": torch.arange(10).view(5, 2), "attention_mask": torch.ones(5, 2)}
    chunks = row_chunks(features, 2)
    assert [c["input_ids"].shape[0] for c in chunks] == [2, 2, 1]
    assert torch.equal(torch.cat([c["input_ids"] for c in chunks]), features["input_ids"])
