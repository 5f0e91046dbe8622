"""A study's table (`mrl-aggregate DIR... --by KEY`): test top-1 per setting and dim, mean ± std
over seeds, and each setting's difference to a baseline setting, paired by seed, with its 95%
interval; and the reader of the tidy CSV it writes, for the figure of several studies.

A setting is the value of each `--by` key in a run's recorded config (`results.json`): a dotted
key (`loss.label_smoothing`, `optimizer.lr`, `trainer.max_epochs`), `method` (mrl, mrl_e, or ff:
FF-m at its own dim m) or a config group such as `optimizer` (its class name). A key the run's
config lacks reads `default`: a run of the default job stands for the default of an ablated
setting, so the ablations' baseline runs can come from another study (e.g. the MRL runs of
`fmnist_table1`, selected with `--where method=mrl`). Top-1 is the run's trained head on the
clean test queries (its evaluation's, else the one `mrl-train` recorded), or another metric of
the runs' evaluations. The table is written as `<name>.csv` (tidy: the keys, dim, seed, the
metric in percent) and `<name>.md`.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from mrl.report.claims import paired_interval
from mrl.report.errors import InputError
from mrl.runs.files import atomic_write_text, write_csv
from mrl.runs.format import CLEAN_SPLIT
from mrl.runs.reader import find_runs, load_run, run_values

DEFAULT = "default"
DEFAULT_DIMS = "2,4,8,256"


def setting_value(results: dict[str, Any], key: str) -> str:
    """The display value of `key` in one run's results (see the module docstring)."""
    if key in ("method", "seed"):  # FF-m runs are one method, each at its own dim m
        return str(results.get(key))
    node: Any = results.get("config", {})
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return DEFAULT
        node = node[part]
    if node is None:
        return DEFAULT
    if isinstance(node, dict) and "_target_" in node:
        return str(node["_target_"]).rsplit(".", 1)[-1]
    if isinstance(node, list):
        return ",".join(map(str, node))
    return f"{node:g}" if isinstance(node, float) else str(node)


def read_rows(
    roots: list[Path], keys: list[str], where: dict[str, str], metric: str = "top1"
) -> list[dict[str, Any]]:
    """One row per (finished run, dim of its own method) under `roots` that matches `where`;
    the value (`value`) is `metric` in percent."""
    rows = []
    for root in map(Path.resolve, roots):
        for path in find_runs(root):
            results_path = path / "results.json"
            if not results_path.is_file():
                continue
            results = json.loads(results_path.read_text())
            if any(setting_value(results, k) not in v.split("|") for k, v in where.items()):
                continue
            run = load_run(path, root, [CLEAN_SPLIT])
            setting = {k: setting_value(results, k) for k in keys}
            for (method, dim), value in sorted(run_values(run, metric, CLEAN_SPLIT).items()):
                if method != run.method:  # SVD, random features: other methods' rows
                    continue
                rows.append({**setting, "dim": dim, "seed": run.seed, "value": 100.0 * value})
    return rows


def _cells(rows: list[dict], keys: list[str]) -> dict[tuple, dict[Any, float]]:
    """(setting..., dim) -> {seed: value}; the first run of a seed wins (duplicate folders)."""
    cells: dict[tuple, dict[Any, float]] = {}
    for r in rows:
        cells.setdefault((*[r[k] for k in keys], r["dim"]), {}).setdefault(r["seed"], r["value"])
    return cells


def _sort_key(value: str) -> tuple:
    """`default` first, then numbers by value, then names."""
    if value == DEFAULT:
        return (0, 0.0, "")
    try:
        return (1, float(value.split(",")[0]), value)
    except ValueError:
        return (2, 0.0, value)


def markdown(
    rows: list[dict],
    keys: list[str],
    dims: list[int],
    baseline: list[str] | None,
    metric: str = "top1",
) -> str:
    """The mean ± std table, then (with a baseline) the paired differences to it."""
    cells = _cells(rows, keys)
    settings = sorted({k[:-1] for k in cells}, key=lambda s: [_sort_key(v) for v in s])
    head = "| " + " | ".join(keys) + " | " + " | ".join(f"dim {d}" for d in dims) + " | seeds |"
    rule = "|" + "---|" * len(keys) + "---:|" * len(dims) + "---:|"
    lines = [f"Test {metric} (%), mean ± std over seeds:", "", head, rule]
    for s in settings:
        shown, n = [], 0
        for d in dims:
            values = list(cells.get((*s, d), {}).values())
            n = max(n, len(values))
            if len(values) > 1:
                shown.append(f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}")
            else:  # one seed: no spread to show
                shown.append(f"{values[0]:.2f}" if values else "")
        lines.append("| " + " | ".join(s) + " | " + " | ".join(shown) + f" | {n} |")
    if baseline is None:
        return "\n".join(lines) + "\n"
    base = tuple(baseline)
    lines += ["", f"Difference to {', '.join(f'{k}={v}' for k, v in zip(keys, base))} "
              "(points, mean over paired seeds [95% t interval]):", "",
              head.replace(" seeds |", " pairs |"), rule]  # fmt: skip
    for s in settings:
        if s == base:
            continue
        shown, n = [], 0
        for d in dims:
            mine, theirs = cells.get((*s, d), {}), cells.get((*base, d), {})
            seeds = sorted(mine.keys() & theirs.keys(), key=str)
            interval = paired_interval([mine[x] - theirs[x] for x in seeds])
            n = max(n, len(seeds))
            shown.append(interval.text().rsplit(" (", 1)[0] if interval else "")
        lines.append("| " + " | ".join(s) + " | " + " | ".join(shown) + f" | {n} |")
    return "\n".join(lines) + "\n"


@dataclass
class StudyTable:
    """One study's rows (`read_rows`) and how they are tabled."""

    keys: list[str]
    dims: list[int]
    baseline: list[str] | None
    metric: str
    rows: list[dict[str, Any]]

    def markdown(self) -> str:
        """The Markdown table (`markdown`)."""
        return markdown(self.rows, self.keys, self.dims, self.baseline, self.metric)

    def write(self, out: Path, name: str) -> list[Path]:
        """Write `out/<name>.csv` (the metric's column named after it) and `out/<name>.md`."""
        paths = [out / f"{name}.csv", out / f"{name}.md"]
        write_csv(paths[0], [
            {**{k: v for k, v in r.items() if k != "value"}, self.metric: r["value"]}
            for r in self.rows
        ])  # fmt: skip
        atomic_write_text(paths[1], self.markdown())
        return paths


def read_study(
    roots: list[Path],
    by: str,
    where: list[str] | tuple[str, ...] = (),
    baseline: str | None = None,
    dims: str = DEFAULT_DIMS,
    metric: str = "top1",
) -> StudyTable:
    """The study table of the runs under `roots`, from the command's option texts: `by`
    (comma-separated keys), `where` (`KEY=VALUE[|VALUE...]` each), `baseline` (the baseline
    setting's values in `by` order: comma-separated, or `;`-separated where a value is a list),
    `dims` (comma-separated).

    Raises `InputError` for a malformed option, a missing folder, no matching run, or a baseline
    no run has.
    """
    keys = by.split(",")
    chosen = {}
    for item in where:
        if "=" not in item:
            raise InputError(f"--where {item!r} is not KEY=VALUE")
        k, v = item.split("=", 1)
        chosen[k] = v
    try:
        dim_list = [int(d) for d in dims.split(",")]
    except ValueError:
        raise InputError(f"--dims {dims!r} is not a comma-separated list of integers") from None
    missing = [str(r) for r in roots if not r.is_dir()]
    if missing:
        raise InputError(f"no such study folder: {', '.join(missing)}")
    base = None
    if baseline is not None:
        base = baseline.split(";") if ";" in baseline or len(keys) == 1 else baseline.split(",")
        if len(base) != len(keys):
            raise InputError(
                f"--baseline {baseline!r} gives {len(base)} values for {len(keys)} keys"
            )
    rows = read_rows(roots, keys, chosen, metric)
    if not rows:
        raise InputError(
            f"no finished run under {', '.join(map(str, roots))} matches {chosen or 'any'}"
        )
    if base is not None and not any([r[k] for k in keys] == base for r in rows):
        raise InputError(f"no run has the baseline setting {base}; the settings are "
                         f"{sorted({tuple(r[k] for k in keys) for r in rows})}")  # fmt: skip
    return StudyTable(keys, dim_list, base, metric, rows)


class StudyPanel(NamedTuple):
    """One study table as a figure draws it."""

    name: str
    keys: str
    metric: str
    # setting -> {dim: the metric's values over seeds}
    lines: dict[str, dict[int, list[float]]]


def _panel(path: Path) -> StudyPanel:
    table = pd.read_csv(path, dtype=str)
    if "dim" not in table.columns or "seed" not in table.columns:
        raise ValueError(f"{path} is not a study_table CSV (no dim and seed columns)")
    keys = list(table.columns[: list(table.columns).index("dim")])
    metric = table.columns[-1]
    lines: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for _, row in table.iterrows():
        setting = ", ".join(str(row[k]) for k in keys)
        lines[setting][int(row["dim"])].append(float(row[metric]))
    return StudyPanel(path.stem, ", ".join(keys), metric, lines)


def read_study_csvs(paths: list[Path]) -> list[StudyPanel]:
    """The tidy CSVs `StudyTable.write` writes (the setting's keys, `dim`, `seed`, then the
    metric): per file its name, its keys, its metric and {setting: {dim: values}}.

    Raises `InputError` for a file that cannot be read or is not such a table.
    """
    try:
        return [_panel(path) for path in paths]
    except (OSError, ValueError) as err:  # pandas' ParserError is a ValueError
        raise InputError(str(err).splitlines()[0]) from None
