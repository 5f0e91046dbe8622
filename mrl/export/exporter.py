"""`export_run`: every requested dim of a trained model as a servable tier, the encoder stored
once for all of them.

`out_dir/` receives
- `model.onnx`: the input -> for every exported dim m, the output `embedding_<m>` (unit
  embeddings `(batch, m)`): the data's normalisation (images) or the transformer and pooling
  (text) and the encoder run once, then each truncation to m and L2 re-normalisation, all inside
  the graph; with `head=True` also `prefix_<m>`, the un-normalised prefix; every output checked
  with ONNX Runtime against PyTorch on real inputs;
- `model.int8.onnx` (`int8=True`): its dynamic int8 quantisation, with its size and its cosine to
  the float model at every dim;
- `st/` (text): one sentence-transformers folder, with the tokenizer; the tier of m is that folder
  loaded with `truncate_dim=m` and encoding with `normalize_embeddings=True` (`mrl.export.st`),
  checked like the ONNX outputs;
- `dim_<m>/card.json` per dim: the tier's input contract, its output's name, the files it reads
  (relative to its folder: `../model.onnx`, ...), the run's own quality at m, the check figures
  and the share of inputs whose prefix at m is all zero (of the parity inputs, and of the test
  split where mrl-eval measured it); `dim_<m>/head.onnx` (`head=True`): the nested classifier of
  dim m, on `prefix_<m>`;
- `card.json`: the tiers' cards and the shared files with their sizes.

Why one graph with an output per tier: the tiers differ only in their last two steps, on one
`(batch, D)` vector. With every tier an output of one graph, ONNX Runtime serves any tier, or
several from one encoder pass, with one session of one self-contained file
(`session.run(["embedding_64"], feeds)`): no external-data file beside it, no second graph to
chain after the encoder, and int8 quantises that one file. Each further tier adds a slice and a
norm to the graph, about a kilobyte. sentence-transformers cannot share a transformer between
folders (it refuses module paths outside a folder), but loads any dim of one folder with
`truncate_dim` (see `mrl.export.st`).

Every check of the input (the checkpoint, the dims, the output folder) runs before anything is
exported or written; the export is written in a temporary folder beside `out_dir` and renamed
into place once every tier passed its checks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

import mrl.export.card as cards
from mrl.core.errors import ConfigError, DataNotFoundError
from mrl.core.nesting import zero_prefix_counts
from mrl.export.checks import check_head, check_out_dir
from mrl.export.graphs import (
    IMAGES,
    LOGITS,
    OPSET,
    PREFIX,
    ImageEmbedding,
    PrefixHead,
    TextEmbedding,
    embedding_output,
    export_head,
    export_image_embedding,
    export_text_embedding,
    output_names,
    prefix_output,
    truncate_and_normalise,
)
from mrl.export.verify import (
    INT8_MIN_COSINE,
    PARITY_ATOL,
    ExportError,
    int8_figures,
    parity,
    quantize_int8,
    require_parity,
    run_outputs,
    run_session,
    session,
)
from mrl.runs.files import atomic_write_json
from mrl.saved import SavedModel, check_dims, load_saved, quiet_transformers
from mrl.text.encoders import encode_texts, tokenize
from mrl.text.st_card import MatryoshkaCard

log = logging.getLogger("mrl.export")

# The files of a tier folder.
MODEL = "model.onnx"
MODEL_INT8 = "model.int8.onnx"
HEAD = "head.onnx"
ST_DIR = "st"
CARD = "card.json"
# Real sentences of several lengths (WordNet-style definitions and short queries), for the
# parity checks of text tiers when no others are given.
DEFAULT_TEXTS = (
    "a member of the genus Canis that has been domesticated by man since prehistoric times",
    "dog",
    "sloping land (especially the slope beside a body of water)",
    "a financial institution that accepts deposits and channels the money into lending",
    "the act of playing a musical instrument in public",
    "cat",
    "a large natural stream of water flowing in a channel to the sea",
    "an electronic machine that performs calculations on data at high speed",
)
PARITY_IMAGES = 16


def tier_dir_name(dim: int) -> str:
    """The folder of the tier of `dim`."""
    return f"dim_{int(dim)}"


def tree_bytes(path: Path) -> int:
    """The bytes of the file `path`, or of every file under the folder `path`."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def parity_images(source: SavedModel, n: int = PARITY_IMAGES) -> tuple[torch.Tensor, str]:
    """`n` images in the model's input range: the first ones of the test split (normalisation
    undone) when its files are here, else seeded uniform-random images; and a note saying
    which."""
    image = source.image
    datamodule = source.datamodule
    try:
        datamodule.setup("test")
        test = datamodule.test_set
        x = torch.stack([test[i][0] for i in range(min(n, len(test)))]).float()
        if image.mean is not None:
            mean = torch.tensor(image.mean).view(1, -1, 1, 1)
            x = x * torch.tensor(image.std).view(1, -1, 1, 1) + mean
        return x, f"the first {len(x)} images of the test split"
    except (DataNotFoundError, ConfigError, OSError) as err:
        log.info("parity on random images: the test split is not available (%s)", err)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(n, image.channels, image.side, image.side, generator=generator)
    return x, f"{n} seeded uniform-random images in [0, 1] (the data set's files are not here)"


def _reference_image(source: SavedModel, images: torch.Tensor) -> torch.Tensor:
    """The PyTorch representation `z` of images in the input range, normalised as the data
    module does."""
    image = source.image
    x = images
    if image.mean is not None:
        mean = torch.tensor(image.mean).view(1, -1, 1, 1)
        x = (images - mean) / torch.tensor(image.std).view(1, -1, 1, 1)
    with torch.no_grad():
        return source.encoder(x).float()


def _head_figures(
    source: SavedModel, dim: int, z: torch.Tensor, prefix: np.ndarray, path: Path, atol: float
) -> dict[str, Any]:
    """Export the head of `dim` and check ONNX Runtime's logits on the exported model's prefix
    against PyTorch's nested head on the representation."""
    export_head(PrefixHead(source.head, dim), path)
    logits = run_session(session(path), {PREFIX: prefix}, LOGITS)
    with torch.no_grad():
        want = source.head(z)[list(source.head.nesting).index(dim)].numpy()
    scale = max(1.0, float(np.abs(want).max()))
    figures = {
        "file": path.name,
        "input": PREFIX,
        "fed_by": prefix_output(dim),
        "num_classes": int(source.head.num_classes),
        "rows": int(want.shape[0]),
        "max_abs_diff": float(np.abs(logits - want).max()),
        "argmax_agreement": float((logits.argmax(1) == want.argmax(1)).mean()),
        "tolerance_abs": atol * scale,
    }
    if not figures["max_abs_diff"] <= figures["tolerance_abs"]:
        raise ExportError(
            f"{path} differs from PyTorch's head by {figures['max_abs_diff']:.3g} (tolerance "
            f"{figures['tolerance_abs']:.3g})"
        )
    return figures


def shared_path(name: str) -> str:
    """A file of the export's folder as a tier's card names it: relative to the tier's folder,
    one level down."""
    return f"../{name}"


def _export_model(source: SavedModel, dims: list[int], head: bool, path: Path) -> Path:
    """Write the one ONNX model of every tier of `dims` at `path`."""
    if source.kind == "image":
        image = source.image
        module = ImageEmbedding(source.encoder, dims, image.mean, image.std, head)
        return export_image_embedding(module, image.channels, image.side, path)
    example = tokenize(
        source.tokenizer, [DEFAULT_TEXTS[0], DEFAULT_TEXTS[1]], source.encoder.max_length
    )
    return export_text_embedding(TextEmbedding(source.encoder, dims, head), example, path)


def _onnx_figures(
    source: SavedModel,
    dims: list[int],
    stage: Path,
    feeds: dict[str, np.ndarray],
    z: torch.Tensor,
    head: bool,
    int8: bool,
    atol: float,
    int8_min_cosine: float,
) -> dict[int, dict[str, Any]]:
    """Export and check `model.onnx` (and its heads and int8 variant) in `stage`; the figures
    of each dim for its card."""
    model_path = _export_model(source, dims, head, stage / MODEL)
    got = run_outputs(session(model_path), feeds, output_names(dims, head))
    size = os.path.getsize(model_path)
    figures: dict[int, dict[str, Any]] = {}
    for dim in dims:
        want = truncate_and_normalise(z, dim).numpy()
        name = embedding_output(dim)
        check = parity(got[name], want)
        figures[dim] = {
            "parity": require_parity(check, f"{model_path} ({name})", atol),
            "size_bytes": size,
        }
        if head:
            path = stage / tier_dir_name(dim) / HEAD
            prefix = got[prefix_output(dim)]
            figures[dim]["head"] = _head_figures(source, dim, z, prefix, path, atol)
    if int8:
        int8_path = quantize_int8(model_path, stage / MODEL_INT8)
        names = [embedding_output(dim) for dim in dims]
        quantized = run_outputs(session(int8_path), feeds, names)
        for dim, name in zip(dims, names):
            figures[dim]["int8"] = int8_figures(
                got[name], quantized[name], model_path, int8_path, int8_min_cosine, name
            )
    return figures


def _st_figures(
    source: SavedModel,
    dims: list[int],
    folder: Path,
    texts: list[str],
    z: torch.Tensor,
    atol: float,
    card: MatryoshkaCard,
) -> dict[int, dict[str, Any]]:
    """Write the sentence-transformers folder (model card `card`) and check what each tier's
    `encode` returns."""
    from mrl.export.st import encode_tier, load_tier, write_sentence_transformer

    write_sentence_transformer(source.encoder, source.tokenizer, folder, dims, card)
    out = {}
    for dim in dims:
        model = load_tier(folder, dim)
        got = encode_tier(model, texts)
        want = truncate_and_normalise(z, dim).numpy()
        check = require_parity(parity(got, want), f"{folder} (truncate_dim={dim})", atol)
        out[dim] = {
            "folder": shared_path(folder.name),
            "truncate_dim": dim,
            "normalize_embeddings": True,
            "dim": int(model.get_embedding_dimension()),
            **check,
        }
    return out


def _encoder_steps(source: SavedModel) -> list[str]:
    """The steps of a tier's graph before the truncation."""
    if source.kind == "image":
        image = source.image
        steps = [] if image.mean is None else [f"(images - {list(image.mean)}) / {list(image.std)}"]
        return [*steps, f"encoder {type(source.encoder).__name__}"]
    encoder = source.encoder
    return [
        f"transformer ({encoder.model.config.model_type}, {encoder.num_layers} layers, width "
        f"{encoder.num_features}; the checkpoint's weights)",
        f"{encoder.pooling} pooling over the attention mask",
    ]


def _tier_card(
    source: SavedModel,
    dim: int,
    contract: dict[str, Any],
    inputs_note: str,
    figures: dict[str, Any],
    quality: dict[str, Any],
) -> dict[str, Any]:
    """The card of one tier: its files, output, input contract, graph, quality and check
    figures."""
    files = {"model": shared_path(MODEL)}
    if "head" in figures:
        files["head"] = HEAD
    if "int8" in figures:
        files["model_int8"] = shared_path(MODEL_INT8)
    if "sentence_transformers" in figures:
        files["sentence_transformers"] = shared_path(ST_DIR)
    return {
        "format": cards.FORMAT,
        "dim": dim,
        "files": files,
        "paths": "relative to the folder of this card",
        "output": embedding_output(dim),
        "shared": cards.SHARED_NOTE,
        **contract,
        "outputs": cards.outputs(dim, "head" in figures),
        "graph": [
            *_encoder_steps(source),
            f"truncate to the first {dim} dims",
            "L2 re-normalisation of the prefix",
        ],
        "size_bytes": figures["size_bytes"],
        "quality": quality,
        "parity": {"inputs": inputs_note, **figures["parity"]},
        **{k: v for k, v in figures.items() if k not in ("parity", "size_bytes")},
        "source": _source_entry(source),
    }


def _shared_files(stage: Path) -> dict[str, dict[str, Any]]:
    """The export's files that every tier reads, each with its size in bytes."""
    out = {}
    for key, name in (
        ("model", MODEL),
        ("model_int8", MODEL_INT8),
        ("sentence_transformers", ST_DIR),
    ):
        path = stage / name
        if path.exists():
            out[key] = {"path": name, "size_bytes": tree_bytes(path)}
    return out


def _source_entry(source: SavedModel) -> dict[str, Any]:
    return {
        "checkpoint": str(source.checkpoint.resolve()),
        "run_dir": str(source.run_dir.resolve()),
        "kind": source.kind,
        "task": source.task,
        "method": source.method,
        "nesting": list(source.nesting),
        "representation_size": source.width,
        "global_step": source.global_step,
    }


def _versions() -> dict[str, Any]:
    import onnx
    import onnxruntime

    return {
        "opset": OPSET,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def export_run(
    checkpoint_or_run_dir: str | Path,
    dims: list[int] | tuple[int, ...],
    out_dir: str | Path,
    head: bool = False,
    int8: bool = False,
    texts: list[str] | None = None,
    images: torch.Tensor | None = None,
    parity_atol: float = PARITY_ATOL,
    int8_min_cosine: float = INT8_MIN_COSINE,
) -> dict[str, Any]:
    """Export the tiers `dims` of a run (or checkpoint) into `out_dir`; returns the card.

    `texts` (text models) or `images` (image models, `(N, C, H, W)` in the input range) are
    the parity inputs; by default `DEFAULT_TEXTS` and the first images of the test split.
    Bad input raises `ConfigError` before anything is written; an export that fails its
    checks raises `ExportError` and leaves nothing behind.
    """
    out = check_out_dir(out_dir)
    source = load_saved(checkpoint_or_run_dir, formats=("mrl",), purpose="export")
    dims = check_dims(source, dims)
    check_head(source, head)

    if source.kind == "image":
        x, note = (images.float(), "given images") if images is not None else parity_images(source)
        z = _reference_image(source, x)
        feeds = {IMAGES: x.numpy()}
        contract = cards.image_contract(source.image)
    else:
        texts = list(texts) if texts else list(DEFAULT_TEXTS)
        note = f"{len(texts)} sentences, one padded batch"
        encoder = source.encoder
        z = torch.from_numpy(encode_texts(encoder, source.tokenizer, texts, batch_size=len(texts)))
        tokens = tokenize(source.tokenizer, texts, encoder.max_length)
        feeds = {name: t.numpy() for name, t in tokens.items()}
        contract = cards.text_contract(encoder.max_length, encoder.pooling, shared_path(ST_DIR))

    results = cards.results_quality(source.run_dir, source.checkpoint)
    evaluation = cards.eval_quality(source.run_dir, source.checkpoint)
    zeros = zero_prefix_counts(z.numpy(), dims)
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out.name}."))
    try:
        for dim in dims:
            (stage / tier_dir_name(dim)).mkdir()
        text = source.kind == "text"
        with quiet_transformers() if text else contextlib.nullcontext():
            log.info("exporting dims %s", dims)
            figures = _onnx_figures(
                source, dims, stage, feeds, z, head, int8, parity_atol, int8_min_cosine
            )
            if text:
                st_card = cards.st_card(source, results)
                st = _st_figures(source, dims, stage / ST_DIR, texts, z, parity_atol, st_card)
                for dim in dims:
                    figures[dim]["sentence_transformers"] = st[dim]
        tiers = {}
        for dim in dims:
            quality = cards.quality_at(dim, results, evaluation)
            figures[dim]["zero_prefix"] = cards.zero_prefix(
                zeros[dim], len(z), note, quality["eval"]
            )
            entry = _tier_card(source, dim, contract, note, figures[dim], quality)
            atomic_write_json(stage / tier_dir_name(dim) / CARD, entry)
            tiers[str(dim)] = entry
        card = {
            "format": cards.FORMAT,
            "dims": dims,
            "files": _shared_files(stage),
            "source": _source_entry(source),
            "versions": _versions(),
            "tiers": tiers,
        }
        atomic_write_json(stage / CARD, card)
        umask = os.umask(0)
        os.umask(umask)
        stage.chmod(0o777 & ~umask)  # mkdtemp's folder is private; the export is not
        if out.is_dir():
            out.rmdir()  # checked empty above
        stage.rename(out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return card
