"""A text encoder evaluated per dim on the researcher's sets: BEIR-format retrieval folders and
STS-format files, each set encoded once and every dim a slice (`mrl.eval.text_metrics`).

One path serves `mrl-train-text` (after training, on its data's `test` sets), `mrl-eval` of a
text run, and any other encoder (a loaded run, an exported tier): the same prompts, lengths and
metrics give the same numbers. A set is named in config as `{path, kind: beir|sts, split, name,
columns}`.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrl.core.errors import ConfigError
from mrl.eval.text_metrics import evaluate_text_sets
from mrl.eval.text_sets import RetrievalSet, STSSet, load_beir, load_sts
from mrl.text.encoders import HFTextEncoder, encode_texts

EVAL_KINDS = ("beir", "sts")
# Where a run's rows land, beside results.json (`mrl-train-text`) or under `out_dir` (`mrl-eval`).
TEXT_SETS_FILE = "eval/text_sets.csv"
ROLES = ("query", "document")
# The metric whose retention the printed table shows, by kind of set.
HEADLINE = {"retrieval": "ndcg@10", "sts": "spearman"}


def check_eval_specs(specs: Any, where: str) -> list[dict[str, Any]]:
    """Evaluation set entries (`where`, e.g. `data.test`) as plain dicts, each with a `path` and
    a `kind` in `EVAL_KINDS` (default `beir`); a path alone is a BEIR folder. One-line
    `ConfigError` otherwise."""
    if specs is None:
        return []
    if isinstance(specs, (str, Mapping)) or not isinstance(specs, Sequence):
        raise ConfigError(f"{where} must be a list of {{path, kind, split, name}}")
    checked = []
    for i, spec in enumerate(specs):
        at = f"{where}[{i}]"
        spec = {"path": spec} if isinstance(spec, str) else spec
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{at} must be a mapping {{path, kind, split, name}}")
        if not spec.get("path"):
            raise ConfigError(f"{at} needs a path: {{path: <BEIR folder or STS file>, kind: beir}}")
        kind = spec.get("kind") or "beir"
        if kind not in EVAL_KINDS:
            raise ConfigError(f"{at}.kind={kind!r} is not one of {list(EVAL_KINDS)}")
        checked.append({**spec, "kind": kind})
    return checked


def load_eval_sets(specs: Sequence[Mapping[str, Any]]) -> list[RetrievalSet | STSSet]:
    """The sets of checked entries (`check_eval_specs`), read and checked in full."""
    sets: list[RetrievalSet | STSSet] = []
    for spec in specs:
        name = spec.get("name")
        if spec["kind"] == "beir":
            sets.append(load_beir(spec["path"], split=spec.get("split") or "test", name=name))
        else:
            columns = spec.get("columns") or ("sentence1", "sentence2", "score")
            sets.append(load_sts(spec["path"], name=name, columns=tuple(columns)))
    return sets


def prompted_encoder(
    encoder: HFTextEncoder,
    tokenizer: Any,
    prompts: Mapping[str, str] | None = None,
    max_lengths: Mapping[str, int | None] | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
) -> Callable[[list[str], str], np.ndarray]:
    """`encode(texts, role)`: the full embeddings of `texts` with the role's prompt prepended
    and its maximum length ("query" or "document"), as the training batches were made."""
    prompts, max_lengths = dict(prompts or {}), dict(max_lengths or {})

    def encode(texts: list[str], role: str) -> np.ndarray:
        started = time.time()
        prompt = prompts.get(role) or ""
        out = encode_texts(encoder, tokenizer, [prompt + t for t in texts], batch_size=batch_size,
                           max_length=max_lengths.get(role), device=device)  # fmt: skip
        if log is not None:
            log(f"encoded {len(texts)} {role} texts in {time.time() - started:.1f} s")
        return out

    return encode


def stderr_log(message: str) -> None:
    """One flushed line on stderr: readable in a log file as it happens."""
    print(message, file=sys.stderr, flush=True)


def evaluate_data_sets(
    datamodule: Any, encoder: Any, nesting: list[int], device: Any, stage: str = "test"
) -> list[dict[str, Any]]:
    """The data module's `stage` sets evaluated per dim with its prompts and lengths."""
    sets = load_eval_sets(datamodule.eval_specs.get(stage) or [])
    if not sets:
        return []
    encode = prompted_encoder(encoder, datamodule.tokenizer, datamodule.prompts,
                              datamodule.max_lengths, datamodule.eval_batch_size, device,
                              log=stderr_log)  # fmt: skip
    return evaluate_text_sets(encode, sets, nesting)


def set_metric_values(rows: list[dict[str, Any]], stage: str) -> dict[str, float]:
    """`{"<stage>/<set>-<metric>@<dim>": value}` and `"..._kept@<dim>"` (retention) for the
    loggers, `ndcg@10` written `ndcg10`: the per-dim key form that the wandb logger sorts into
    one section per set and metric, smallest dim first."""
    values = {}
    for r in rows:
        name = f"{stage}/{re.sub(r'[/@]', '_', r['set'])}-{r['metric'].replace('@', '')}"
        if r["value"] is not None:
            values[f"{name}@{r['dim']}"] = r["value"]
        if r["retention"] is not None:
            values[f"{name}_kept@{r['dim']}"] = r["retention"]
    return values


def per_dim_by_set(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per dim, `{"dim", "<set>/<metric>": value}`: the layout of `per_dim` in
    `results.json` and of the model card's quality table."""
    dims = sorted({r["dim"] for r in rows})
    out = [{"dim": m} for m in dims]
    at = {m: i for i, m in enumerate(dims)}
    for r in rows:
        out[at[r["dim"]]][f"{r['set']}/{r['metric']}"] = r["value"]
    return out


def format_set_tables(rows: list[dict[str, Any]], title: str) -> str:
    """A table per set: each metric per dim (percent), then the headline metric's retention."""
    lines = [title]
    for name in dict.fromkeys(r["set"] for r in rows):
        mine = [r for r in rows if r["set"] == name]
        metrics = list(dict.fromkeys(r["metric"] for r in mine))
        headline = HEADLINE.get(mine[0]["kind"], metrics[0])
        value = {(r["dim"], r["metric"]): r for r in mine}
        width = max(10, *(len(m) for m in metrics))
        lines += ["", f"{name} ({mine[0]['kind']})",
                  "  ".join([f"{'dim':>6}", *(f"{m:>{width}}" for m in metrics),
                             f"{headline + ' kept %':>18}"])]  # fmt: skip
        for m in sorted({r["dim"] for r in mine}):
            cells = [_percent(value[(m, k)]["value"], width) for k in metrics]
            kept = value[(m, headline)]["retention"]
            cells.append(f"{kept:18.1f}" if kept is not None else f"{'-':>18}")
            lines.append("  ".join([f"{m:>6}", *cells]))
    return "\n".join(lines)


def _percent(value: float | None, width: int) -> str:
    return f"{100 * value:{width}.2f}" if value is not None else f"{'-':>{width}}"


def write_set_rows(rows: list[dict[str, Any]], path: Path) -> Path:
    """The tidy rows as a CSV that pandas reads (written whole, then renamed into place)."""
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pd.DataFrame(rows).to_csv(tmp, index=False)
    tmp.replace(path)
    return path
