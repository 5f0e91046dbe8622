"""The one reader of run folders, under `mrl-aggregate` and `mrl-report` alike.

A run folder holds `.hydra/config.yaml`, `results.json` (written when training finished) or the
lifecycle's `status.json`; an evaluation adds `eval/metrics.csv` and `eval/summary.json`.
`find_runs` lists them, `load_run` reads one into a `Run` (what it is, whether it finished, its
metric rows), and `run_values` applies the run-folder format's rules (`mrl.runs.format`: the
top-1 preference and the FF-m rule) to give one value per (method, dim).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mrl.core.heads import head_method, method_head
from mrl.runs.files import STATUS_FILE, read_json, read_status, read_yaml
from mrl.runs.format import CLEAN_SPLIT, EVAL_METRIC_COLUMNS, stands_for, top_k_sources

# The columns of `eval/metrics.csv` a reader needs (`dataset` may be absent in older files).
EVAL_REQUIRED = [c for c in EVAL_METRIC_COLUMNS if c != "dataset"]
# Folders of a run, or beside runs, that hold no run: walking them would only cost time.
_NOT_RUNS = {"embeddings", "checkpoints", "wandb", "csv", "__pycache__", "node_modules"}


@dataclass
class Run:
    """One run folder: what it is, whether it finished, and its metric rows."""

    path: Path
    name: str
    status: str
    experiment: str | None
    seed: Any = None
    method: str | None = None
    dims: list[int] = field(default_factory=list)
    # Tidy rows: {"method", "dim", "source", "split", "metric", "plain", "value"}; `plain` is the
    # metric without its split, and split is None for train rows. A failed run keeps the rows of
    # an evaluation it has, but `mrl-aggregate` counts none of them.
    rows: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""
    dataset: str = ""
    config: dict[str, Any] | None = None

    @property
    def study(self) -> str:
        """The study the run belongs to: its experiment name, else "unknown"."""
        return self.experiment or "unknown"


def natural_key(text: str) -> list[Any]:
    """Sort key that puts job `10` after job `9`."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def is_run_dir(path: Path, evaluated: bool = False) -> bool:
    """Whether `path` is a run folder: it holds `.hydra/config.yaml`, `results.json` or a
    `status.json` of the run lifecycle; with `evaluated`, one with `results.json` or
    `eval/metrics.csv` (an evaluation written outside a run counts too)."""
    names = ("results.json", "eval/metrics.csv") if evaluated else (
        ".hydra/config.yaml", "results.json", STATUS_FILE)  # fmt: skip
    return any((path / name).is_file() for name in names)


def find_runs(root: Path, exclude: Path | None = None, evaluated: bool = False) -> list[Path]:
    """Every run folder under `root` (itself included), in natural order of their paths."""
    root = root.resolve()
    exclude = exclude.resolve() if exclude is not None else None
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        if is_run_dir(here, evaluated):
            found.append(here)
            dirnames[:] = []  # runs do not nest; their subfolders are checkpoints, logs, eval
            continue
        dirnames[:] = [
            d
            for d in dirnames
            if not d.startswith(".") and d not in _NOT_RUNS and (here / d).resolve() != exclude
        ]
    return sorted(found, key=lambda p: natural_key(p.relative_to(root).as_posix()))


# The key under which `_resolve` places a value beside the config, so that its interpolations
# resolve against the config's root.
_PROBE = "_mrl_reader_value_"


def _resolve(value: Any, cfg: dict) -> Any:
    """`value` with its interpolations (`${nesting}`, `${mrl.max:${nesting}}`) resolved by
    OmegaConf against `cfg`; None where one cannot be (a resolver that is not registered here,
    a missing key, a cycle).

    The package's `${mrl.*:...}` resolvers are those of `mrl.training.resolvers`, registered on
    import; the commands that read run folders import it.
    """
    if not isinstance(value, str | list):
        return value
    try:
        node = OmegaConf.create({**cfg, _PROBE: value})[_PROBE]
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    except (OmegaConfBaseException, ValueError, TypeError, AttributeError):
        return None


def _parse_overrides(overrides: Any) -> dict[str, Any]:
    """`key -> value` of Hydra override strings such as `head=ff` or `+head.nesting=[8]`, read
    with Hydra's own grammar; deletions, sweeps and strings it rejects are left out."""
    parsed: dict[str, Any] = {}
    if not isinstance(overrides, list):
        return parsed
    parser = OverridesParser.create()
    for item in overrides:
        if not isinstance(item, str):
            continue
        try:
            (override,) = parser.parse_overrides([item])
        except HydraException:
            continue
        if override.is_delete() or override.is_sweep_override():
            continue
        parsed[override.key_or_group] = override.value()
    return parsed


def derive_method(cfg: Any, overrides: Any = None) -> tuple[str | None, list[int]]:
    """`(method, head dims)` of a run from its config, else from its overrides; None if unknown.

    The rule of `MRLHead.method` (`mrl.core.heads.head_method`): tied -> `mrl_e`, one nesting
    entry -> `ff`, else `mrl`.
    """
    cfg = cfg if isinstance(cfg, dict) else {}
    given = _parse_overrides(overrides)
    head = cfg.get("head") if isinstance(cfg.get("head"), dict) else {}
    entries = given.get("head.nesting", head.get("nesting"))
    name = given.get("method", cfg.get("method"))
    if isinstance(name, str) and not isinstance(entries, list):
        # The head follows `method` (`head/matryoshka.yaml`): `mrl`, `mrl_e`, `ff` or `ffM`.
        nesting = _resolve(given.get("nesting", cfg.get("nesting")), cfg)
        ints = [d for d in nesting if isinstance(d, int)] if isinstance(nesting, list) else []
        try:
            dims, tied = method_head(name, ints)
        except ValueError:
            return None, []
        return head_method(tied, len(dims) or int(name.startswith("ff"))), dims
    tied = head.get("tied", given.get("head.tied"))
    if entries is None and given.get("head") == "ff":
        entries = ["${mrl.max:${nesting}}"]
    elif entries is None and given.get("head") in ("mrl", "mrl_e"):
        entries = "${nesting}"
    if "nesting" not in cfg and "nesting" in given:
        cfg = {**cfg, "nesting": given["nesting"]}
    resolved = _resolve(entries, cfg)
    dims = [d for d in resolved if isinstance(d, int)] if isinstance(resolved, list) else []
    count = len(entries) if isinstance(entries, list) else len(dims) or None
    if tied is None and given.get("head") == "mrl_e":
        tied = True
    if tied is True or count:
        return head_method(tied is True, count or 0), dims
    return None, dims


def method_of(
    cfg: Any, overrides: Any = None, results: dict[str, Any] | None = None
) -> tuple[str | None, list[int]]:
    """`(method, head dims)` of a run: the method `results.json` records, else the one its
    config (or overrides) implies; the dims `results.json` records, else the config's."""
    method, dims = derive_method(cfg, overrides)
    results = results if isinstance(results, dict) else {}
    if isinstance(results.get("nesting"), list):
        dims = [d for d in results["nesting"] if isinstance(d, int)]
    if results.get("method"):
        method = str(results["method"])
    elif method is None and dims:
        method = head_method(False, len(dims))
    return method, dims


def dataset_name(config: dict[str, Any] | None) -> str:
    """Data set of a run config: `data._target_`'s class without "DataModule", else ""."""
    data = (config or {}).get("data")
    target = data.get("_target_") if isinstance(data, dict) else None
    if not isinstance(target, str):
        return ""
    return target.rsplit(".", 1)[-1].removesuffix("DataModule")


def _read_results(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The results object and its train rows (method filled in later); ValueError if bad."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("per_dim"), list):
        raise ValueError("not a results object with a per_dim list")
    rows = []
    for entry in data["per_dim"]:
        for metric in ("top1", "top5"):
            if entry.get(metric) is not None:
                rows.append(
                    {"dim": int(entry["dim"]), "source": "train", "split": None,
                     "metric": metric, "plain": metric, "value": float(entry[metric])}
                )  # fmt: skip
    return data, rows


def _read_eval_rows(path: Path, splits: list[str]) -> tuple[list[dict[str, Any]], str]:
    """The rows of `eval/metrics.csv` on `splits` ("*": every split), and its data set."""
    rows, dataset = [], ""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = set(EVAL_REQUIRED) - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"missing columns {sorted(missing)}")
        for r in reader:
            dataset = dataset or (r.get("dataset") or "")
            if "*" not in splits and r["split"] not in splits:
                continue
            try:
                dim, value = int(r["dim"]), float(r["value"])
            except (TypeError, ValueError):
                continue
            metric = r["metric"] if r["split"] == CLEAN_SPLIT else f"{r['split']}/{r['metric']}"
            rows.append(
                {"method": r["method"], "dim": dim, "source": "eval", "split": r["split"],
                 "metric": metric, "plain": r["metric"], "value": value}
            )  # fmt: skip
    return rows, dataset


def _unfinished_note(path: Path) -> str:
    note = "no results.json"
    status = read_status(path)
    if status.get("state") in ("failed", "interrupted", "running"):
        detail = status.get("reason") or status.get("signal") or ""
        note = f"{status['state']} at step {status.get('step')}" + (f": {detail}" if detail else "")
    return note


def load_run(path: Path, root: Path, splits: list[str] | tuple[str, ...] = ("*",)) -> Run:
    """Read one run folder; an unreadable `results.json` makes it a failed run with a note.

    `status` is `failed` (no readable `results.json`), `ok` (evaluated) or `no-eval`.
    """
    path, root = Path(path).resolve(), Path(root).resolve()
    name = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
    name = name or "."
    hydra_cfg = read_yaml(path / ".hydra" / "config.yaml")
    results, train_rows, note = None, [], ""
    if (path / "results.json").is_file():
        try:
            results, train_rows = _read_results(path / "results.json")
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
            note = f"corrupt results.json: {err}"
    else:
        note = _unfinished_note(path)

    cfg = results.get("config") if results and isinstance(results.get("config"), dict) else None
    cfg = cfg or (hydra_cfg if isinstance(hydra_cfg, dict) else {})
    experiment = (results or {}).get("experiment") or cfg.get("name")
    seed = (results or {}).get("seed", cfg.get("seed"))
    method, dims = method_of(cfg, read_yaml(path / ".hydra" / "overrides.yaml"), results)

    eval_rows, dataset, readable = [], "", False
    metrics_csv = path / "eval" / "metrics.csv"
    if metrics_csv.is_file():
        try:
            eval_rows, dataset = _read_eval_rows(metrics_csv, list(splits))
            readable = True
        except (OSError, ValueError, csv.Error) as err:
            note = f"unreadable eval/metrics.csv: {err}"
    if method is None:  # an evaluation written outside a run: what it says of itself
        summary = read_json(path / "eval" / "summary.json") or {}
        heads = [r["method"] for r in eval_rows if r["plain"] == "head_top1"]
        method = summary.get("method") or (heads[0] if heads else None)
        if not dims and isinstance(summary.get("nesting"), list):
            dims = [int(d) for d in summary["nesting"]]
    run = Run(
        path, name, "failed", str(experiment) if experiment else None, seed, method, dims,
        eval_rows, note, dataset_name(cfg) or dataset, cfg or None,
    )  # fmt: skip
    if results is None:
        if readable:
            run.note += " (training unfinished; its eval/metrics.csv is ignored)"
        return run
    run.rows = [{"method": method or "", **row} for row in train_rows] + eval_rows
    run.dims = run.dims or sorted({r["dim"] for r in train_rows})
    run.status = "ok" if readable else "no-eval"
    return run


def run_values(run: Run, metric: str, split: str) -> dict[tuple[str, int], float]:
    """`(method, dim) -> value` of one run for a table metric: `top1`/`top5` from the most
    preferred source that has it (`mrl.runs.format.top_k_sources`), any other metric from eval
    (else train); rows an FF-m run does not stand for (`stands_for`) and non-finite ones left out.
    """
    by_name: dict[tuple[str, str], dict[tuple[str, int], float]] = defaultdict(dict)
    for row in run.rows:
        if row["source"] == "eval" and row["split"] != split:
            continue
        if row["source"] == "train" and split != CLEAN_SPLIT:
            continue  # train-time accuracies are on the clean test set only
        if not stands_for(run.method, run.dims, row["method"], row["dim"]):
            continue
        if not math.isfinite(row["value"]):
            continue
        by_name[(row["source"], row["plain"])].setdefault((row["method"], row["dim"]), row["value"])
    if metric in ("top1", "top5"):
        order = top_k_sources(int(metric[-1]))
    else:
        order = [("eval", metric), ("train", metric)]
    values: dict[tuple[str, int], float] = {}
    for key in order:
        for cell, value in by_name.get(key, {}).items():
            values.setdefault(cell, value)
    return values
