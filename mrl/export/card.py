"""The model card of an export: the input contract of each tier and the quality the run measured
at its dim, read from the run's own results files.

Quality is taken only where the figures describe the exported weights: `results.json` holds
the test metrics of the final weights (`checkpoints/last.ckpt`), and `eval/metrics.csv` those
of the checkpoint named in `eval/summary.json` (rows of its clean query split and its method).
Each tier also says how many inputs have an all-zero prefix at its dim (their embeddings are zero
vectors): of the export's parity inputs, and of the test split where mrl-eval measured it.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from mrl.export.graphs import embedding_output, prefix_output
from mrl.runs.checkpoints import CHECKPOINT_DIR, LAST
from mrl.runs.files import read_json
from mrl.runs.format import CLEAN_SPLIT
from mrl.saved import ImageInput
from mrl.text.st_card import MatryoshkaCard

# 2: one model.onnx (and model.int8.onnx, st/) for every tier, an output per tier; 1 had a
# model per tier folder.
FORMAT = "mrl-export/2"
SHARED_NOTE = (
    "model.onnx, model.int8.onnx and st/ hold the encoder once for every tier of the export: "
    "this tier is the model's output named `output` (sentence-transformers: st/ with "
    "truncate_dim set to its dim and normalize_embeddings=True)"
)
# mrl-eval's timings of its own search steps sit in the same table; they are not quality.
TIMING_SUFFIX = "_seconds"


def _same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError):
        return False


def results_quality(run_dir: Path, checkpoint: Path) -> dict[int, dict[str, Any]] | None:
    """`dim -> {metric: value}` of `results.json` when `checkpoint` is the run's final weights;
    None when there is no such file or it describes other weights."""
    results = read_json(run_dir / "results.json")
    if not results or not _same_file(checkpoint, run_dir / CHECKPOINT_DIR / LAST):
        return None
    out = {}
    for row in results.get("per_dim") or []:
        if isinstance(row, dict) and "dim" in row:
            out[int(row["dim"])] = {k: v for k, v in row.items() if k != "dim"}
    return out or None


def eval_quality(run_dir: Path, checkpoint: Path) -> dict[int, dict[str, float]] | None:
    """`dim -> {metric: value}` of `eval/metrics.csv` (the clean query split, the run's own
    method, timings left out) when `eval/summary.json` says it evaluated `checkpoint`; else None."""
    summary = read_json(run_dir / "eval" / "summary.json")
    table = run_dir / "eval" / "metrics.csv"
    if (
        not summary
        or not table.is_file()
        or not _same_file(summary.get("checkpoint", ""), checkpoint)
    ):
        return None
    out: dict[int, dict[str, float]] = {}
    try:
        with table.open(newline="") as f:
            for row in csv.DictReader(f):
                if row.get("split") != CLEAN_SPLIT or row.get("method") != summary.get("method"):
                    continue
                if row.get("metric", "").endswith(TIMING_SUFFIX):
                    continue
                try:
                    out.setdefault(int(row["dim"]), {})[row["metric"]] = float(row["value"])
                except (KeyError, TypeError, ValueError):
                    continue
    except (OSError, csv.Error):
        return None
    return out or None


def quality_at(
    dim: int, test: dict[int, dict] | None, evaluation: dict[int, dict] | None
) -> dict[str, Any]:
    """The card's `quality` entry of one dim: `test` (results.json) and `eval` (mrl-eval),
    each null when the run has no figures for these weights."""
    return {
        "test": None if test is None else test.get(dim),
        "test_source": "results.json" if test is not None else None,
        "eval": None if evaluation is None else evaluation.get(dim),
        "eval_source": f"eval/metrics.csv (split {CLEAN_SPLIT})"
        if evaluation is not None
        else None,
    }


def zero_prefix(
    count: int, rows: int, inputs: str, evaluation: dict[str, float] | None
) -> dict[str, Any]:
    """The card's `zero_prefix` entry of one tier: `count` of the `rows` parity inputs
    (described by `inputs`) have an all-zero prefix at its dim, and `test_split` is mrl-eval's
    fraction on the test split (`evaluation`: the tier's `quality.eval`; null without it)."""
    return {
        "note": "inputs whose prefix is all zero: their embeddings are zero vectors",
        "parity_inputs": {
            "inputs": inputs,
            "rows": rows,
            "count": count,
            "fraction": count / rows if rows else None,
        },
        "test_split": (evaluation or {}).get("zero_prefix"),
    }


def image_contract(image: ImageInput) -> dict[str, Any]:
    """The inputs and preprocessing of an image tier."""
    if image.mean is None:
        inside = "none: images are fed as the training data holds them"
        value_range: Any = "as the training data"
    else:
        inside = (
            f"(images - mean) / std per channel, mean={list(image.mean)}, std={list(image.std)}"
        )
        value_range = [0.0, 1.0]
    return {
        "inputs": [
            {
                "name": "images",
                "dtype": "float32",
                "shape": ["batch", image.channels, image.side, image.side],
                "layout": "NCHW",
                "range": value_range,
            }
        ],
        "preprocessing_outside": image.resize,
        "preprocessing_inside": inside,
    }


def text_contract(max_length: int, pooling: str, tokenizer_dir: str) -> dict[str, Any]:
    """The inputs and preprocessing of a text tier; `tokenizer_dir` is the folder (relative to
    the tier's) that `AutoTokenizer.from_pretrained` loads the tokenizer from."""
    ids = {"dtype": "int64", "shape": ["batch", "sequence"]}
    return {
        "inputs": [
            {"name": "input_ids", **ids, "range": "token ids of the tokenizer"},
            {"name": "attention_mask", **ids, "range": [0, 1], "note": "0 marks padding"},
        ],
        "tokenizer": tokenizer_dir,
        "preprocessing_outside": (
            f"tokenize with the tokenizer (truncation at {max_length} tokens, padding to the "
            f"longest); token_type_ids are not an input"
        ),
        "preprocessing_inside": f"transformer, {pooling} pooling over the attention mask",
        "max_length": max_length,
    }


def outputs(dim: int, with_prefix: bool) -> list[dict[str, Any]]:
    """The outputs of `model.onnx` that belong to the tier of `dim`."""
    out = [
        {
            "name": embedding_output(dim),
            "dtype": "float32",
            "shape": ["batch", dim],
            "note": "z[:, :dim] / ||z[:, :dim]||: unit L2 norm (an all-zero prefix stays 0)",
        }
    ]
    if with_prefix:
        out.append(
            {
                "name": prefix_output(dim),
                "dtype": "float32",
                "shape": ["batch", dim],
                "note": "z[:, :dim] before normalisation: the input `prefix` of head.onnx",
            }
        )
    return out


def st_card(source: Any, test: dict[int, dict] | None) -> MatryoshkaCard:
    """The sentence-transformers model card facts of a text `source` (an `mrl.export` source):
    its base model from the training config, its dims, and `test` (`results_quality`) as rows."""
    rows = [{"dim": dim, **metrics} for dim, metrics in sorted((test or {}).items())]
    return MatryoshkaCard.of_run(source.config, list(source.nesting), rows)


def recorded_retrieval(
    quality: dict[str, Any] | None, k: int
) -> tuple[dict[str, float] | None, str]:
    """recall@k and mAP@k (`{"recall", "map"}`) that a tier card's `quality` entry records,
    mrl-eval's table first, then results.json, with the file they come from; `(None, "")` when
    it records neither."""
    quality = quality or {}
    evaluation, test = quality.get("eval") or {}, quality.get("test") or {}
    names = [(evaluation, f"recall@{k}", f"map@{k}", quality.get("eval_source")),
             (test, f"recall{k}", f"map{k}", quality.get("test_source"))]  # fmt: skip
    for values, recall, ap, source in names:
        if values.get(recall) is not None and values.get(ap) is not None:
            return {"recall": float(values[recall]), "map": float(values[ap])}, source
    return None, ""
