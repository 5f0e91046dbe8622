"""A study's table: test top-1 per setting and dim, mean ± std over seeds, and each setting's
difference to a baseline setting, paired by seed, with its 95% interval.

    python experiments/studies/study_table.py <study dir> [<more dirs>] --by KEY[,KEY...] \
        [--where KEY=VALUE[|VALUE...] ...] [--baseline VALUE[,VALUE...]] [--dims 2,4,8,256] \
        --out experiments/results/<folder> --name <table name>

A setting is the value of each `--by` key in a run's recorded config (`results.json`): a dotted
key (`loss.label_smoothing`, `optimizer.lr`, `trainer.max_epochs`), `method` (mrl, mrl_e, or ff:
FF-m at its own dim m) or a config group such as `optimizer` (its class name). A key the run's
config lacks reads `default`: a run of the default job stands for the default of an ablated
setting, so the ablations' baseline runs can come from another study (e.g. the MRL runs of
`fmnist_table1`, selected with `--where method=mrl`). Top-1 is the run's trained head on the
clean test queries (its evaluation's, else the one `mrl-train` recorded), or `--metric` from the
runs' evaluations. Writes `<name>.csv` (tidy: the keys, dim, seed, the metric in percent) and
`<name>.md`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from mrl.report.claims import paired_interval
from mrl.runs.files import atomic_write_text, write_csv
from mrl.runs.format import CLEAN_SPLIT
from mrl.runs.reader import find_runs, load_run, run_values

PROG = "study_table"
DEFAULT = "default"


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


def _sort_key(value: str) -> tuple:
    """`default` first, then numbers by value, then names."""
    if value == DEFAULT:
        return (0, 0.0, "")
    try:
        return (1, float(value.split(",")[0]), value)
    except ValueError:
        return (2, 0.0, value)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("roots", type=Path, nargs="+")
    p.add_argument("--by", required=True, help="comma-separated setting keys")
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE[|VALUE...]",
        help="keep only runs with one of these values (repeat for several keys)",
    )
    p.add_argument("--baseline", help="the baseline setting's values, comma-separated in --by "
                   "order (a list value: quote it and separate keys with ';')")  # fmt: skip
    p.add_argument("--dims", default="2,4,8,256")
    p.add_argument("--metric", default="top1", help="top1 (trained heads; default), probe_top1 "
                   "(linear probes: any dim, nested or not), 1nn, map@10, ...")  # fmt: skip
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--name", required=True)
    args = p.parse_args(argv)

    def fail(message: str) -> None:
        print(f"{PROG}: error: {message}", file=sys.stderr)
        sys.exit(2)

    keys = args.by.split(",")
    where = {}
    for item in args.where:
        if "=" not in item:
            fail(f"--where {item!r} is not KEY=VALUE")
        k, v = item.split("=", 1)
        where[k] = v
    try:
        dims = [int(d) for d in args.dims.split(",")]
    except ValueError:
        fail(f"--dims {args.dims!r} is not a comma-separated list of integers")
    missing = [str(r) for r in args.roots if not r.is_dir()]
    if missing:
        fail(f"no such study folder: {', '.join(missing)}")
    baseline = None
    if args.baseline is not None:
        baseline = (
            args.baseline.split(";")
            if ";" in args.baseline or len(keys) == 1
            else (args.baseline.split(","))
        )
        if len(baseline) != len(keys):
            fail(f"--baseline {args.baseline!r} gives {len(baseline)} values for {len(keys)} keys")
    rows = read_rows(args.roots, keys, where, args.metric)
    if not rows:
        fail(f"no finished run under {', '.join(map(str, args.roots))} matches {where or 'any'}")
    if baseline is not None and not any([r[k] for k in keys] == baseline for r in rows):
        fail(f"no run has the baseline setting {baseline}; the settings are "
             f"{sorted({tuple(r[k] for k in keys) for r in rows})}")  # fmt: skip
    text = markdown(rows, keys, dims, baseline, args.metric)
    write_csv(args.out / f"{args.name}.csv", [
        {**{k: v for k, v in r.items() if k != "value"}, args.metric: r["value"]} for r in rows
    ])  # fmt: skip
    atomic_write_text(args.out / f"{args.name}.md", text)
    print(text)


if __name__ == "__main__":
    main()
