"""`mrl-eval` of a text run: its encoder on evaluation sets (BEIR folders, STS files) per dim,
with the prompts and lengths it was trained with; no retraining."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mrl.core.errors import ConfigError
from mrl.eval.inputs import resolve_device
from mrl.saved.model import SavedModel, check_dims
from mrl.text.evaluation import TEXT_SETS_FILE


def text_eval_options(config: DictConfig) -> tuple[dict[str, str], dict[str, Any]]:
    """`(prompts, max_lengths)` by role from a text run's data config (none for data without
    them: the WordNet tasks)."""
    data = OmegaConf.to_container(config.get("data") or {}, resolve=True)
    prompts = dict(data.get("prompts") or {})
    lengths = data.get("max_length")
    max_lengths = (
        dict(lengths) if isinstance(lengths, dict) else {"query": lengths, "document": lengths}
    )
    return prompts, max_lengths


def evaluate_text_run(cfg: DictConfig, saved: SavedModel) -> dict[str, Any]:
    """Evaluate `saved` (a text run) on `cfg.text_sets` (default: its data's `test` sets);
    writes `eval/text_sets.csv` under `cfg.out_dir` (default: the run) and prints the tables."""
    from mrl.eval.text_metrics import evaluate_text_sets
    from mrl.text.evaluation import (
        check_eval_specs,
        format_set_tables,
        load_eval_sets,
        prompted_encoder,
        stderr_log,
        write_set_rows,
    )

    started = time.time()
    given = cfg.get("text_sets")
    specs = OmegaConf.to_container(given, resolve=True) if given else None
    where = "text_sets"
    if not specs:
        specs = OmegaConf.to_container(saved.config.get("data", {}).get("test") or [],
                                       resolve=True)  # fmt: skip
        where = "the run's data.test"
    specs = check_eval_specs(specs, where)
    if not specs:
        raise ConfigError(
            f"ckpt_path={saved.checkpoint} is a text run with no evaluation sets: pass "
            f"text_sets='[{{path: <BEIR folder>, kind: beir}}]'"
        )
    dims = check_dims(saved, list(cfg.dims)) if cfg.get("dims") else list(saved.nesting)
    sets = load_eval_sets(specs)  # every file checked before the encoder runs
    prompts, max_lengths = text_eval_options(saved.config)
    encode = prompted_encoder(saved.encoder, saved.tokenizer, prompts, max_lengths,
                              device=resolve_device(str(cfg.get("device", "auto"))),
                              log=stderr_log)  # fmt: skip
    rows = evaluate_text_sets(encode, sets, dims)
    out_dir = Path(cfg.out_dir) if cfg.get("out_dir") else saved.run_dir
    path = write_set_rows(rows, out_dir / TEXT_SETS_FILE)
    print(format_set_tables(rows, f"{saved.checkpoint}: evaluation sets per dim ({path})"))
    return {"rows": rows, "path": str(path), "seconds": round(time.time() - started, 1)}
