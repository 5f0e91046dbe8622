"""Gradient caching: a contrastive loss over a batch larger than the encoder's memory allows.

The technique behind sentence-transformers' `CachedMultipleNegativesRankingLoss` (Gao et al.
2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup"): embed the
batch chunk by chunk without gradients, compute the loss on all the embeddings at once, then
encode each chunk again with gradients and back-propagate it with its slice of the
embeddings' gradient. The loss sees every row of the batch as a negative; the encoder holds one
chunk's activations at a time. Each chunk is encoded the second time from the random state of
the first, so dropout draws the same masks and the gradients are exactly the uncached ones.

Under DDP the loss gathers every process's embeddings (with gradients), so negatives still come
from every process; DDP's own gradient hooks would fire once per chunk, so they are switched off
(`require_backward_grad_sync`) and `average_gradients` all-reduces the accumulated gradients
once after the backward, as DDP would have.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


@contextmanager
def _replayed(state: tuple[Tensor, Tensor | None], device: torch.device) -> Iterator[None]:
    """Run with the random state `state`, leaving the caller's state as it was."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], device)
        yield


def cached_embeddings(
    encode: Callable[[Any], Tensor], chunks: Sequence[Any], device: torch.device, rows_dim: int = 0
) -> Tensor:
    """The embeddings of every chunk, `(sum of chunk rows, D)`, as one tensor whose backward
    encodes each chunk again with gradients and back-propagates it (see the module docstring).
    `rows_dim` is the axis of `encode`'s output that holds the rows (1 for `(L, rows, D)` stacks
    of every layer's embeddings).

    Use it where the encoder's output would go: the loss's gradient reaches the encoder's
    parameters as if the whole batch had been encoded at once.
    """
    states, parts = [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(_rng_state(device))
            parts.append(encode(chunk))
    embeddings = torch.cat(parts, dim=rows_dim).requires_grad_()
    sizes = [p.shape[rows_dim] for p in parts]

    def backpropagate_chunks(grad: Tensor) -> Tensor:
        for chunk, part_grad, state in zip(chunks, grad.split(sizes, dim=rows_dim), states):
            with torch.enable_grad(), _replayed(state, device):
                torch.autograd.backward(encode(chunk), part_grad)
        return grad

    embeddings.register_hook(backpropagate_chunks)
    return embeddings


def average_gradients(
    parameters: Iterable[nn.Parameter], world_size: int, bucket_numel: int = 1 << 24
) -> None:
    """Replace every trainable parameter's gradient by its mean over the `world_size` processes
    of the default group (a missing gradient counts as zeros, so every process sends the same
    tensors), in flat buckets of at most `bucket_numel` elements."""
    params = [p for p in parameters if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    bucket: list[Tensor] = []
    size = 0
    for i, p in enumerate(params):
        bucket.append(p.grad)
        size += p.grad.numel()
        if size >= bucket_numel or i == len(params) - 1:
            flat = _flatten_dense_tensors(bucket)
            dist.all_reduce(flat)
            flat /= world_size
            for grad, mean in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
                grad.copy_(mean)
            bucket, size = [], 0


def row_chunks(features: dict[str, Tensor], size: int) -> list[dict[str, Tensor]]:
    """A tokenized batch split into consecutive chunks of at most `size` rows."""
    rows = next(iter(features.values())).shape[0]
    return [{k: v[i : i + size] for k, v in features.items()} for i in range(0, rows, size)]
