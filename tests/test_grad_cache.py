"""Gradient caching gives the uncached loss's gradients, with dropout replayed exactly."""

import lightning.pytorch as pl
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


# -- under DDP: two CPU processes, gathered negatives, gradients averaged once -----------------


class BagOfWordsEncoder(nn.Module):
    """A tiny stand-in for `HFTextEncoder`: embedded tokens, masked mean, a linear map."""

    num_features, num_layers = 16, 1

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(50, 12)
        self.out = nn.Linear(12, self.num_features)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).float()
        return self.out((self.embed(input_ids) * mask).sum(1) / mask.sum(1))


ROWS, TOKENS = 8, 5


def _pair_rows() -> list[dict]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 50, (2, ROWS, TOKENS), generator=g)
    ones = torch.ones(TOKENS, dtype=torch.long)
    return [{"a": ids[0, i], "p": ids[1, i], "m": ones} for i in range(ROWS)]


def _collate(rows: list[dict]) -> dict:
    mask = torch.stack([r["m"] for r in rows])
    return {
        "anchors": {"input_ids": torch.stack([r["a"] for r in rows]), "attention_mask": mask},
        "positives": {"input_ids": torch.stack([r["p"] for r in rows]), "attention_mask": mask},
    }


def _module(chunk: int | None):
    from functools import partial

    from mrl.text.module import TextContrastiveModule

    return TextContrastiveModule(BagOfWordsEncoder(), MatryoshkaContrastiveLoss(DIMS),
                                 partial(torch.optim.SGD, lr=1.0), grad_cache_chunk=chunk,
                                 no_weight_decay_on_norm_and_bias=False)  # fmt: skip


class SaveWeights(pl.Callback):
    """Stores rank 0's weights when training ends."""

    def __init__(self, path) -> None:
        self.path = path

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_rank == 0:
            torch.save(pl_module.state_dict(), self.path)


@pytest.mark.slow
def test_ddp_with_gradient_caching_steps_like_one_process_on_the_whole_batch(tmp_path):
    """Two processes, 4 rows each, encoded 2 at a time: one SGD step gives the weights of one
    process stepping on all 8 rows (the loss of each rank's anchors against every rank's
    positives, averaged), so negatives come from every process and DDP's averaging holds."""
    import warnings

    from torch.utils.data import DataLoader

    rows = _pair_rows()
    path = tmp_path / "ddp.pt"
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_steps=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[SaveWeights(path)])  # fmt: skip
    loader = DataLoader(rows, batch_size=ROWS // 2, collate_fn=_collate, shuffle=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(_module(chunk=2), train_dataloaders=loader)
    ddp_weights = torch.load(path)

    # The reference: one process, the batch in the order the two ranks' rows are gathered (the
    # distributed sampler gives rank r the rows r, r + 2, ...).
    reference = _module(chunk=None)
    order = [i for rank in (0, 1) for i in range(rank, ROWS, 2)]
    optimizer = torch.optim.SGD(reference.parameters(), lr=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a Trainer
        reference.training_step(_collate([rows[i] for i in order]), 0).backward()
    optimizer.step()
    before = _module(chunk=None).state_dict()
    for name, want in reference.state_dict().items():
        torch.testing.assert_close(ddp_weights[name], want, rtol=1e-5, atol=1e-6)
        assert not torch.equal(want, before[name])  # the step moved every weight
