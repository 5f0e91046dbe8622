"""`mrl-aggregate`: gather every run under a folder into one tidy CSV and per-study tables.

A run is any folder holding `.hydra/config.yaml` or `results.json` (a Hydra multirun sweep, a
folder of single runs, or one run). Outputs, under `--out` (default `<dir>/aggregate/`):

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
  its largest dim, with the paper's fractions as rows `paper:<method>` (`--reference`, default
  `mrl.reference.default_reference_dir()`: `$MRL_REFERENCE_DIR`, else the numbers the package
  ships).
"""

import argparse
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

import mrl.training.resolvers  # noqa: F401  (registers the resolvers the run configs name)
from mrl.reference import ReferenceFileError, load_reference
from mrl.runs.files import atomic_write_text
from mrl.runs.format import AGGREGATE_COLUMNS, CLEAN_SPLIT, method_sort_key
from mrl.runs.reader import Run, find_runs, load_run, run_values

COLUMNS = AGGREGATE_COLUMNS
VALUE_COLUMNS = ["run", "method", "dim", "value"]
RELATIVE_COLUMNS = ["study", "method", "dim", "top1", "fraction", "ref_dim"]
DEFAULT_METRICS = ("top1", "1nn", "map@10")
MISSING = "–"
FAILED = "FAILED"
PROG = "mrl-aggregate"


class AggregateError(Exception):
    """A problem with the command's input: reported as one line and exit status 2."""


@dataclass
class Table:
    """One study's methods x dims cells of one metric, before formatting."""

    study: str
    metric: str
    split: str
    # One row per (run, method, dim) with a value: columns `VALUE_COLUMNS`.
    values: pd.DataFrame
    failed: dict[tuple[str, int], list[str]]
    failed_runs: list[Run]
    without: list[tuple[Run, str]]

    @property
    def stats(self) -> pd.DataFrame:
        """`mean`, sample `std` (NaN for one run) and `n` over runs, indexed by (method, dim)."""
        grouped = self.values.groupby(["method", "dim"])["value"]
        return grouped.agg(mean="mean", std="std", n="count")

    @property
    def methods(self) -> list[str]:
        """Methods with a value or a failed run, in `method_sort_key` order."""
        names = set(self.values["method"]) | {m for m, _ in self.failed}
        return sorted(names, key=method_sort_key)

    @property
    def dims(self) -> list[int]:
        """Every dim with a value or a failed run, ascending."""
        return sorted({int(d) for d in self.values["dim"]} | {d for _, d in self.failed})

    def mean(self, method: str, dim: int) -> float | None:
        """Mean over runs of the cell, or None where no run provides it."""
        stats = self.stats
        return float(stats.loc[(method, dim), "mean"]) if (method, dim) in stats.index else None


def tidy_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """The rows of `results.csv`: every metric of every run, and one row per failed run."""
    out = []
    for run in runs:
        base = {"study": run.study, "run": run.name, "status": run.status, "seed": run.seed}
        if run.status == "failed":
            dim = run.dims[0] if run.method == "ff" and len(run.dims) == 1 else None
            out.append({**base, "method": run.method, "dim": dim})
            continue
        out.extend({**base, **row} for row in run.rows)
    return out


def build_table(runs: list[Run], study: str, metric: str, split: str = CLEAN_SPLIT) -> Table:
    """Cells of one study's table of `metric` on `split`, with its failed and empty runs."""
    values: list[dict[str, Any]] = []
    failed: dict[tuple[str, int], list[str]] = defaultdict(list)
    failed_runs, without = [], []
    for run in runs:
        if run.study != study:
            continue
        if run.status == "failed":
            failed_runs.append(run)
            if run.method:
                for dim in run.dims:
                    failed[(run.method, dim)].append(run.name)
            continue
        cells = run_values(run, metric, split)
        values += [
            {"run": run.name, "method": m, "dim": d, "value": v} for (m, d), v in cells.items()
        ]
        if not cells:
            reason = "not evaluated" if run.status == "no-eval" else f"no {metric} on {split}"
            without.append((run, run.note or reason))
    frame = pd.DataFrame(values, columns=VALUE_COLUMNS)
    return Table(study, metric, split, frame, dict(failed), failed_runs, without)


def format_value(mean: float, std: float, n: int, metric: str) -> str:
    """`92.31` (one run) or `92.31 ± 0.12 (n=3)`: percent, or seconds for timing metrics."""
    scale, digits = (1.0, 4) if metric.endswith("seconds") else (100.0, 2)
    if n == 1:
        return f"{scale * mean:.{digits}f}"
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f} (n={n})"


def _spread(counts: pd.Series) -> str:
    """What the cells hold, for the title: ± std only where a cell has more than one seed."""
    if counts.empty:
        return "no values"
    if counts.max() == 1:
        return "1 seed"
    if counts.min() > 1:
        return "mean ± std over seeds"
    return "mean ± std over seeds; one value where a cell has 1 seed"


def _run_label(run: Run) -> str:
    what = ", ".join(
        p for p in (run.method, f"dim {run.dims[0]}" if len(run.dims) == 1 else "") if p
    )
    return f"`{run.name}`" + (f" ({what})" if what else "")


def format_table(table: Table) -> str:
    """The Markdown table of `table`, with a title and a line on failed and missing runs."""
    unit = "seconds" if table.metric.endswith("seconds") else "%"
    split = "" if table.split == CLEAN_SPLIT else f", split {table.split}"
    stats = table.stats
    lines = [f"### {table.study}: {table.metric} ({unit}{split}; {_spread(stats['n'])})", ""]
    if table.metric in ("top1", "top5"):
        k = table.metric[-1]
        train = f", else the train-time test `top{k}` (the same quantity)"
        lines += [
            f"top{k}: eval `head_top{k}`{train if table.split == CLEAN_SPLIT else ''};"
            f" baselines: linear-probe `probe_top{k}`.",
            "",
        ]
    dims = table.dims
    lines.append("| method | " + " | ".join(str(d) for d in dims) + " |")
    lines.append("|---|" + "---:|" * len(dims))
    for method in table.methods:
        cells = []
        for dim in dims:
            n_failed = len(table.failed.get((method, dim), []))
            if (method, dim) in stats.index:
                mean, std, n = stats.loc[(method, dim), ["mean", "std", "n"]]
                cell = format_value(mean, std, int(n), table.metric)
                cells.append(cell + (f" ({n_failed} {FAILED})" if n_failed else ""))
            else:
                cells.append(FAILED if n_failed else MISSING)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if not table.methods:
        lines.append("| (no data) |")
    failed = ", ".join(f"{_run_label(r)}: {r.note}" for r in table.failed_runs) or "none"
    without = ", ".join(f"{_run_label(r)}: {why}" for r, why in table.without) or "none"
    lines += ["", f"Failed runs: {failed}. Runs without {table.metric}: {without}."]
    return "\n".join(lines) + "\n"


def _fractions(values: dict[int, float | None]) -> tuple[dict[int, float], int | None]:
    """`{dim: value / value at the largest dim}` and that dim; None where nothing is known."""
    known = {d: v for d, v in values.items() if v is not None}
    if not known:
        return {}, None
    ref_dim = max(known)
    if known[ref_dim] == 0:
        return {}, ref_dim
    return {d: v / known[ref_dim] for d, v in known.items()}, ref_dim


def relative_top1(
    table: Table, reference: dict[str, dict[int, float]] | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """Markdown and CSV rows of each method's top-1 as a fraction of its largest-dim top-1.

    Fractions are of mean top-1 over seeds; a method's reference dim is its largest dim with a
    value (for FF: the FF run at the largest dim). Reference rows (`Reference.by_dim`: paper
    method -> {dim: percent}) use their largest filled dim, which is 2048 wherever the paper
    reports it.
    """
    series: list[tuple[str, dict[int, float | None], float]] = [
        (m, {d: table.mean(m, d) for d in table.dims}, 1.0) for m in table.methods
    ]
    # The paper's numbers are percentages; ours are fractions.
    series += [(f"paper:{m}", v, 100.0) for m, v in (reference or {}).items()]
    dims = sorted({d for _, values, _ in series for d in values})
    lines = [
        f"### {table.study}: top-1 relative to the method's own largest-dim top-1", "",
        "Ratios of mean top-1 over seeds; `paper:` rows are the reference's top-1 rows.", "",
        "| method | " + " | ".join(str(d) for d in dims) + " | relative to dim |",
        "|---|" + "---:|" * (len(dims) + 1),
    ]  # fmt: skip
    rows = []
    for method, values, scale in series:
        fractions, ref_dim = _fractions(values)
        cells = [f"{fractions[d]:.4f}" if d in fractions else MISSING for d in dims]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {ref_dim or MISSING} |")
        for dim in sorted(fractions):
            rows.append(
                {"study": table.study, "method": method, "dim": dim,
                 "top1": values[dim] / scale, "fraction": fractions[dim], "ref_dim": ref_dim}
            )  # fmt: skip
    return "\n".join(lines) + "\n", rows


def _csv_text(rows: list[dict[str, Any]], columns: list[str]) -> str:
    # Object columns keep each value as given: no 4 -> 4.0 where a column also holds blanks.
    return pd.DataFrame(rows, columns=columns, dtype=object).to_csv(
        index=False, lineterminator="\n"
    )


def _file_part(text: str) -> str:
    return re.sub(r"[^\w.@+-]+", "_", text).strip("_") or "unnamed"


def aggregate(
    root: Path,
    out: Path | None = None,
    metrics: list[str] | tuple[str, ...] = DEFAULT_METRICS,
    splits: list[str] | tuple[str, ...] = (CLEAN_SPLIT,),
    reference: Path | None = None,
    echo: bool = True,
) -> tuple[list[Run], list[Path]]:
    """Gather the runs under `root` and write `results.csv` and the tables into `out`.

    Returns the runs and the files written; raises `AggregateError` on unusable input.
    """
    if not root.is_dir():
        raise AggregateError(f"{root} is not a directory")
    out = out if out is not None else root / "aggregate"
    try:
        paper = load_reference(reference, strict=True)
    except ReferenceFileError as err:
        raise AggregateError(str(err)) from None
    ref = paper.by_dim("top1") if paper is not None else None
    paths = find_runs(root, exclude=out)
    if not paths:
        raise AggregateError(f"no runs under {root} (no .hydra/config.yaml or results.json)")
    root = root.resolve()
    runs = [load_run(p, root, list(splits)) for p in paths]

    written = [out / "results.csv"]
    atomic_write_text(written[0], _csv_text(tidy_rows(runs), COLUMNS))
    for study in sorted({r.study for r in runs}):
        for split in splits:
            for metric in metrics:
                table = build_table(runs, study, metric, split)
                text = format_table(table)
                name = metric if split == CLEAN_SPLIT else f"{split}__{metric}"
                path = out / f"{_file_part(study)}__{_file_part(name)}.md"
                atomic_write_text(path, text)
                written.append(path)
                if echo:
                    print(text)
        top1 = build_table(runs, study, "top1", CLEAN_SPLIT)
        text, rows = relative_top1(top1, ref)
        stem = out / f"{_file_part(study)}__relative_top1"
        atomic_write_text(stem.with_suffix(".md"), text)
        atomic_write_text(
            stem.with_suffix(".csv"),
            _csv_text(rows, RELATIVE_COLUMNS),
        )
        written += [stem.with_suffix(".md"), stem.with_suffix(".csv")]
        if echo:
            print(text)
    return runs, written


def _comma_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of `mrl-aggregate`."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        allow_abbrev=False,
        description="Gather every mrl-train / mrl-eval run under DIR (a Hydra multirun sweep or "
        "any folder of runs) into one tidy CSV and per-study Markdown tables of methods x dims. "
        "Failed runs (no results.json) are listed and marked FAILED, never dropped.",
        epilog="Writes OUT/results.csv (study,run,status,seed,method,dim,source,metric,value), "
        "OUT/<study>__<metric>.md and OUT/<study>__relative_top1.{md,csv}. The top1 table uses "
        "eval head_top1, else the train-time top1 (the same quantity), and probe_top1 for "
        "baselines. Example: mrl-aggregate outputs/multirun/fmnist_table1/2026-01-01_00-00-00",
    )
    parser.add_argument("dir", type=Path, help="folder to search for runs, recursively")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: DIR/aggregate)"
    )
    parser.add_argument(
        "--metrics",
        type=_comma_list,
        default=",".join(DEFAULT_METRICS),
        help="comma-separated metrics to tabulate: top1, top5, or any metric of "
        "eval/metrics.csv such as 1nn, knn@5, map@10 (default: %(default)s)",
    )
    parser.add_argument(
        "--split",
        type=_comma_list,
        default=CLEAN_SPLIT,
        help="comma-separated eval splits to gather: query (the clean test set) or "
        "query-<corruption> (default: query)",
    )
    parser.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="the paper's numbers, as for mrl-report: their folder (with "
        "paper_resnet50_imagenet1k.csv) or that CSV (columns metric,method,8,...,2048); its "
        "top1 rows are added to the relative table as paper:<method> (default: "
        "$MRL_REFERENCE_DIR, else the numbers shipped with the package)",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """Console entry point; unusable input ends with one line on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        runs, written = aggregate(args.dir, args.out, args.metrics, args.split, args.reference)
    except AggregateError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    failed = [r for r in runs if r.status == "failed"]
    no_eval = sum(r.status == "no-eval" for r in runs)
    for run in failed:
        print(f"failed: {run.name} ({run.note})")
    ok = len(runs) - len(failed)
    print(
        f"{len(runs)} runs: {ok} ok ({no_eval} not evaluated), {len(failed)} failed; "
        f"wrote {len(written)} files to {written[0].parent}"
    )


if __name__ == "__main__":
    main()
