"""The sentence-transformers folder of a text export: one folder for every tier.

sentence-transformers 6 refuses module paths that leave a model's folder (`..`), so tier folders
cannot point at one shared transformer; what it does load is a dim per call: `truncate_dim=m`
(in the constructor or in `encode`) cuts the sentence embedding to its first m values and then
`normalize_embeddings=True` scales that prefix to unit length, in that order. The folder therefore
holds the transformer, its pooling and `Normalize` once (the full width, unit length, when no dim
is asked for), and every tier of the export is

    SentenceTransformer(folder, truncate_dim=m).encode(texts, normalize_embeddings=True)

which its model card names, with the exported dims. The transformer and pooling are those of
`mrl.text.export.export_sentence_transformer`; normalising the full vector first changes no
prefix's direction, so the tier is the prefix re-normalised, as the ONNX graph computes it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mrl.text.encoders import HFTextEncoder
from mrl.text.export import ST_POOLING
from mrl.text.st_card import MatryoshkaCard

TIERS_TITLE = "## Exported tiers"


def tiers_section(dims: Sequence[int]) -> str:
    """The model card's section that names the export's tiers and how each is loaded."""
    listed = ", ".join(str(int(m)) for m in dims)
    return "\n".join([
        TIERS_TITLE,
        "",
        f"This folder serves every tier of the export, dims {listed}: the tier of dim m is",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        "model = SentenceTransformer(path, truncate_dim=m)",
        "vectors = model.encode(texts, normalize_embeddings=True)  # (n, m), unit L2 norm",
        "```",
        "",
        "`normalize_embeddings=True` re-normalises after the truncation; without it the vectors",
        "are the prefix of the unit full-width vector (same cosines, norm below 1).",
        "",
    ])  # fmt: skip


def write_sentence_transformer(
    encoder: HFTextEncoder,
    tokenizer,
    path: Path,
    dims: Sequence[int],
    card: MatryoshkaCard | None = None,
) -> Path:
    """Save `encoder` and `tokenizer` at `path` as Transformer, Pooling, Normalize, with the
    model card (`card`, and the tiers `dims`); returns `path`."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    work = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        encoder.model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        modules = [
            Transformer(str(work), max_seq_length=encoder.max_length),
            Pooling(encoder.num_features, pooling_mode=ST_POOLING[encoder.pooling]),
            Normalize(),
        ]
        model = SentenceTransformer(modules=modules, device="cpu")
        if card is not None:
            card.apply(model)
        model.save(str(path))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if card is not None:
        card.append_section(path)
    readme = path / "README.md"
    text = readme.read_text().rstrip("\n") + "\n\n" if readme.is_file() else ""
    readme.write_text(text + tiers_section(dims))
    return path


def load_tier(folder: Path, dim: int):  # -> SentenceTransformer
    """The folder loaded as the tier of `dim` (`truncate_dim=dim`), on the CPU."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu", truncate_dim=int(dim))


def encode_tier(model, texts: list[str]) -> np.ndarray:
    """`texts` encoded by a tier (`load_tier`) with `normalize_embeddings=True`: float32
    `(len(texts), dim)`, unit rows."""
    got = model.encode(
        texts,
        batch_size=len(texts),
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    return np.asarray(got, np.float32)
