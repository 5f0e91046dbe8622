"""The modules that become the exported ONNX graphs, and their export.

`ImageEmbedding` and `TextEmbedding` hold everything between the model's input and the
embeddings of every exported tier: the normalisation the data module applies (images), the
encoder with its pooling, run once, then for each dim m the truncation to m and the L2
re-normalisation of the prefix, output `embedding_<m>` (and, for the nested heads, the
un-normalised prefix `prefix_<m>`). `PrefixHead` is a nested classification head alone, on the
un-normalised prefix. Each is exported by the TorchScript-based exporter (`dynamo=False`), with a
dynamic batch axis (and sequence axis for text).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrl.core.heads import MRLHead
from mrl.text.encoders import HFTextEncoder

# Opset 17 is the first with LayerNormalization, which the transformer encoders use.
OPSET = 17
EMBEDDING, PREFIX, LOGITS = "embedding", "prefix", "logits"
IMAGES = "images"
INPUT_IDS, ATTENTION_MASK = "input_ids", "attention_mask"


def truncate_and_normalise(z: Tensor, dim: int) -> Tensor:
    """The tier's embedding: `z[:, :dim]` scaled to unit L2 norm (an all-zero prefix stays 0)."""
    return F.normalize(z[:, :dim], dim=-1)


def embedding_output(dim: int) -> str:
    """The name of the output that holds the unit embeddings of the tier of `dim`."""
    return f"{EMBEDDING}_{int(dim)}"


def prefix_output(dim: int) -> str:
    """The name of the output that holds the un-normalised prefix of the tier of `dim`."""
    return f"{PREFIX}_{int(dim)}"


def output_names(dims: Sequence[int], with_prefix: bool) -> list[str]:
    """The outputs of an embedding graph, in the order its module returns them."""
    names = []
    for dim in dims:
        names.append(embedding_output(dim))
        if with_prefix:
            names.append(prefix_output(dim))
    return names


def tier_outputs(z: Tensor, dims: Sequence[int], with_prefix: bool) -> tuple[Tensor, ...]:
    """The tiers of the representation `z`, in the order of `output_names`."""
    out: list[Tensor] = []
    for dim in dims:
        out.append(truncate_and_normalise(z, dim))
        if with_prefix:
            out.append(z[:, :dim])
    return tuple(out)


class ImageEmbedding(nn.Module):
    """Images in the data's value range `(B, C, H, W)` -> unit embeddings `(B, m)` for each m of
    `dims`; with `with_prefix`, also each un-normalised prefix `(B, m)` that the nested heads
    take."""

    def __init__(
        self,
        encoder: nn.Module,
        dims: Sequence[int],
        mean: tuple[float, ...] | None,
        std: tuple[float, ...] | None,
        with_prefix: bool = False,
    ) -> None:
        super().__init__()
        self.encoder, self.with_prefix = encoder, bool(with_prefix)
        self.dims = [int(d) for d in dims]
        self.normalised = mean is not None
        if self.normalised:
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """Every tier's embedding (and prefix) of a batch of images."""
        x = (images - self.mean) / self.std if self.normalised else images
        return tier_outputs(self.encoder(x), self.dims, self.with_prefix)


class TextEmbedding(nn.Module):
    """Token ids and attention mask `(B, L)` -> unit embeddings `(B, m)` for each m of `dims`
    (the transformer and its pooling once, then each truncation and re-normalisation); with
    `with_prefix`, also the prefixes."""

    def __init__(
        self, encoder: HFTextEncoder, dims: Sequence[int], with_prefix: bool = False
    ) -> None:
        super().__init__()
        self.encoder, self.with_prefix = encoder, bool(with_prefix)
        self.dims = [int(d) for d in dims]

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, ...]:
        """Every tier's embedding (and prefix) of a tokenized batch."""
        z = self.encoder(input_ids, attention_mask)
        return tier_outputs(z, self.dims, self.with_prefix)


class PrefixHead(nn.Module):
    """The nested head of one dim as a plain linear map: prefix `(B, dim)` -> logits `(B, C)`
    (MRL: that dim's own `Linear`; MRL-E: the first `dim` columns of the shared weight)."""

    def __init__(self, head: MRLHead, dim: int) -> None:
        super().__init__()
        weight, bias = head.at(dim)
        self.dim = int(dim)
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    def forward(self, prefix: Tensor) -> Tensor:
        """Logits of the prefix."""
        return F.linear(prefix, self.weight, self.bias)


def _export(
    module: nn.Module,
    args: tuple[Tensor, ...],
    path: Path,
    inputs: list[str],
    outputs: list[str],
    axes: dict[str, dict[int, str]],
) -> Path:
    module.eval()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # In eval mode nn.MultiheadAttention (torchvision's ViT) runs a fused kernel that has no
    # ONNX form; the plain path computes the same.
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The TorchScript exporter warns that it is deprecated and about traced Python
            # values (shapes); parity against PyTorch on other shapes checks what was traced.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                args,
                str(path),
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=axes,
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return path


def export_image_embedding(module: ImageEmbedding, channels: int, side: int, path: Path) -> Path:
    """Write `module` as ONNX: input `images` `(batch, C, side, side)` float32, outputs
    `output_names(module.dims, module.with_prefix)`."""
    example = torch.rand(2, channels, side, side)
    outputs = output_names(module.dims, module.with_prefix)
    axes = {name: {0: "batch"} for name in [IMAGES, *outputs]}
    return _export(module, (example,), path, [IMAGES], outputs, axes)


def export_text_embedding(module: TextEmbedding, tokens: dict[str, Tensor], path: Path) -> Path:
    """Write `module` as ONNX: inputs `input_ids`, `attention_mask` `(batch, sequence)` int64,
    outputs `output_names(module.dims, module.with_prefix)`.

    `tokens` is the example batch traced; it should hold padding, so that nothing is traced
    for the case of a mask of ones only."""
    outputs = output_names(module.dims, module.with_prefix)
    axes = {name: {0: "batch", 1: "sequence"} for name in (INPUT_IDS, ATTENTION_MASK)}
    axes.update({name: {0: "batch"} for name in outputs})
    args = (tokens[INPUT_IDS], tokens[ATTENTION_MASK])
    return _export(module, args, path, [INPUT_IDS, ATTENTION_MASK], outputs, axes)


def export_head(module: PrefixHead, path: Path) -> Path:
    """Write a nested head as ONNX: input `prefix` `(batch, dim)` -> `logits` `(batch, C)`."""
    example = torch.randn(2, module.dim)
    axes = {PREFIX: {0: "batch"}, LOGITS: {0: "batch"}}
    return _export(module, (example,), path, [PREFIX], [LOGITS], axes)
