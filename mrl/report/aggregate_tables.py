"""The tables of `mrl-aggregate`: one study's methods x dims cells of one metric over its runs
(mean ± sample std over seeds), their Markdown with the failed and missing runs, the tidy rows of
`results.csv`, and each method's top-1 relative to its own largest dim beside the paper's."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mrl.runs.format import CLEAN_SPLIT, method_sort_key
from mrl.runs.reader import Run, run_values

VALUE_COLUMNS = ["run", "method", "dim", "value"]
MISSING = "–"
FAILED = "FAILED"


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
