"""What `mrl-aggregate` writes: every run under a folder gathered into one tidy CSV and
per-study tables.

A run is any folder holding `.hydra/config.yaml` or `results.json` (a Hydra multirun sweep, a
folder of single runs, or one run). Outputs, under `out` (default `<dir>/aggregate/`):

- `results.csv`, one row per (run, method, dim, metric), columns `COLUMNS`: `source` is `train`
  (`results.json`: `top1`, `top5`) or `eval` (`eval/metrics.csv` of the chosen splits; a split
  other than the clean `query` one is kept in the metric name as `<split>/<metric>`). A failed
  run (no readable `results.json`) is one row with status `failed`, its method (and an FF run's
  dim) when its config tells, and no metric;
- `<study>__<metric>.md`: methods x dims, in percent, mean ± sample std over runs (seeds), a
  single value where a cell has one run;
  `top1` is eval `head_top1` where the run was evaluated, else the train-time test `top1` (the
  same quantity), else `probe_top1` (the only top-1 of the baselines such as `svd`);
- `<study>__relative_top1.md` and `.csv`: each method's top-1 as a fraction of its own top-1 at
  its largest dim, with the paper's fractions as rows `paper:<method>` (`reference`, default
  `mrl.reference.default_reference_dir()`: `$MRL_REFERENCE_DIR`, else the numbers the package
  ships).

Run configs name the package's OmegaConf resolvers: the command registers them
(`mrl.training.resolvers`) before reading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mrl.reference import ReferenceFileError, load_reference
from mrl.report.aggregate_tables import build_table, format_table, relative_top1, tidy_rows
from mrl.report.errors import InputError
from mrl.runs.files import atomic_write_text
from mrl.runs.format import AGGREGATE_COLUMNS, CLEAN_SPLIT
from mrl.runs.reader import Run, find_runs, load_run

COLUMNS = AGGREGATE_COLUMNS
RELATIVE_COLUMNS = ["study", "method", "dim", "top1", "fraction", "ref_dim"]
DEFAULT_METRICS = ("top1", "1nn", "map@10")


@dataclass
class Aggregate:
    """What `aggregate` gathered and wrote: the runs, the files, and each table's text in the
    order written."""

    runs: list[Run]
    written: list[Path] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)


def _csv_text(rows: list[dict[str, Any]], columns: list[str]) -> str:
    # Object columns keep each value as given: no 4 -> 4.0 where a column also holds blanks.
    return pd.DataFrame(rows, columns=columns, dtype=object).to_csv(
        index=False, lineterminator="\n"
    )


def file_part(text: str) -> str:
    """`text` as part of a file name: runs of other characters than word characters and
    `.@+-` become `_`."""
    return re.sub(r"[^\w.@+-]+", "_", text).strip("_") or "unnamed"


def aggregate(
    root: Path,
    out: Path | None = None,
    metrics: list[str] | tuple[str, ...] = DEFAULT_METRICS,
    splits: list[str] | tuple[str, ...] = (CLEAN_SPLIT,),
    reference: Path | None = None,
) -> Aggregate:
    """Gather the runs under `root` and write `results.csv` and the tables into `out`.

    Raises `InputError` on unusable input.
    """
    if not root.is_dir():
        raise InputError(f"{root} is not a directory")
    out = out if out is not None else root / "aggregate"
    try:
        paper = load_reference(reference, strict=True)
    except ReferenceFileError as err:
        raise InputError(str(err)) from None
    ref = paper.by_dim("top1") if paper is not None else None
    paths = find_runs(root, exclude=out)
    if not paths:
        raise InputError(f"no runs under {root} (no .hydra/config.yaml or results.json)")
    root = root.resolve()
    done = Aggregate([load_run(p, root, list(splits)) for p in paths])

    def write(path: Path, text: str, shown: bool = True) -> None:
        atomic_write_text(path, text)
        done.written.append(path)
        if shown:
            done.texts.append(text)

    write(out / "results.csv", _csv_text(tidy_rows(done.runs), COLUMNS), shown=False)
    for study in sorted({r.study for r in done.runs}):
        for split in splits:
            for metric in metrics:
                table = build_table(done.runs, study, metric, split)
                name = metric if split == CLEAN_SPLIT else f"{split}__{metric}"
                write(out / f"{file_part(study)}__{file_part(name)}.md", format_table(table))
        top1 = build_table(done.runs, study, "top1", CLEAN_SPLIT)
        text, rows = relative_top1(top1, ref)
        stem = out / f"{file_part(study)}__relative_top1"
        write(stem.with_suffix(".md"), text)
        write(stem.with_suffix(".csv"), _csv_text(rows, RELATIVE_COLUMNS), shown=False)
    return done
