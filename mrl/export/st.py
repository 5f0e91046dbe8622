"""Sentence-transformers folders of a text tier that normalise after truncation.

sentence-transformers applies `truncate_dim` after its `Normalize` module, so a plain export
loaded with `truncate_dim=m` returns vectors shorter than unit length. Each tier's folder
therefore ends in `Dense` (an identity map onto the first m dims, no bias, no activation: the
truncation, with built-in modules only) and then `Normalize`; `truncate_dim=m` is saved in its
config too, so the model reports its dim. The transformer and pooling are those of
`mrl.text.export.export_sentence_transformer`.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

import torch

from mrl.text.encoders import HFTextEncoder
from mrl.text.export import export_sentence_transformer
from mrl.text.st_card import MatryoshkaCard


class SentenceTransformerTiers:
    """Writes one sentence-transformers folder per dim from one base export of the encoder.

    Use as a context manager: the base export lives in a temporary folder beside `work_dir`
    until the block ends.
    """

    def __init__(
        self, encoder: HFTextEncoder, tokenizer, work_dir: Path, card: MatryoshkaCard | None = None
    ) -> None:
        self.encoder, self.tokenizer, self.work_dir = encoder, tokenizer, Path(work_dir)
        self.card = card
        self._tmp: Path | None = None
        self._base = None

    def __enter__(self) -> SentenceTransformerTiers:
        from sentence_transformers import SentenceTransformer

        self._tmp = Path(tempfile.mkdtemp(dir=self.work_dir, prefix=".st-base."))
        path = export_sentence_transformer(self.encoder, self.tokenizer, self._tmp / "model")
        self._base = SentenceTransformer(str(path), device="cpu")
        return self

    def __exit__(self, *exc) -> None:
        self._base = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def write(self, dim: int, path: Path) -> Path:
        """Save the tier of `dim` at `path`: Transformer, Pooling, Dense (first `dim` dims),
        Normalize, with the model card of that dim; returns `path`."""
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Dense, Normalize

        base = [m for m in self._base if not isinstance(m, Normalize)]
        width = self.encoder.num_features
        truncate = Dense(
            width,
            dim,
            bias=False,
            activation_function=torch.nn.Identity(),
            init_weight=torch.eye(width)[:dim].clone(),
        )
        model = SentenceTransformer(
            modules=[*base, truncate, Normalize()], device="cpu", truncate_dim=dim
        )
        card = dataclasses.replace(self.card, served_dim=dim) if self.card else None
        if card is not None:
            card.apply(model)
        model.save(str(path))
        if card is not None:
            card.append_section(path)
        return path
