"""Export a trained `HFTextEncoder` as a sentence-transformers model folder.

`SentenceTransformer(path, truncate_dim=m)` then loads it offline and returns the framework's
embeddings (same pooling, and a final `Normalize` module exactly when the encoder normalises);
`truncate_dim=m` keeps the prefix `[:, :m]`, the Matryoshka embedding of size m.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from mrl.text.encoders import HFTextEncoder
from mrl.text.st_card import MatryoshkaCard

# Our pooling names -> sentence-transformers' `Pooling(pooling_mode=...)`.
ST_POOLING = {"mean": "mean", "cls": "cls", "last": "lasttoken"}


def export_sentence_transformer(
    encoder: HFTextEncoder, tokenizer, path: str | Path, card: MatryoshkaCard | None = None
) -> Path:
    """Save `encoder` and `tokenizer` as a sentence-transformers model at `path`.

    The modules are `Transformer` (max_seq_length = `encoder.max_length`), `Pooling` with the
    encoder's pooling, and `Normalize` when `encoder.normalize`; `card` fills in its model card
    (base model, dims, per-dim quality). The folder is written next to `path` and renamed into
    place, replacing an earlier export; returns `path`.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        weights = work / "hf"
        encoder.model.save_pretrained(weights)
        tokenizer.save_pretrained(weights)
        modules = [
            Transformer(str(weights), max_seq_length=encoder.max_length),
            Pooling(encoder.num_features, pooling_mode=ST_POOLING[encoder.pooling]),
        ]
        if encoder.normalize:
            modules.append(Normalize())
        model = SentenceTransformer(modules=modules, device="cpu")
        staged = work / "model"
        if card is not None:
            card.apply(model)
        model.save(str(staged))
        if card is not None:
            card.append_section(staged)
        if path.exists():
            shutil.rmtree(path)
        staged.rename(path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path
