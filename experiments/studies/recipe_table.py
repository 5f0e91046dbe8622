"""The recipe sweep's table: test top-1 per optimizer, method and dim, mean ± std over seeds.

    python experiments/studies/recipe_table.py <sweep dir> [--out experiments/results/fmnist_recipe]

Reads each run's `results.json` (the test accuracy of its final weights) and its config's
optimizer; writes `recipe.csv` (tidy: optimizer, lr, method, dim, seed, top1) and `recipe.md`
(one row per optimizer and method, a column per dim of interest).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from mrl.results import atomic_write_text, write_csv


def read_runs(sweep: Path) -> list[dict]:
    """One row per (run, dim) of every finished run under `sweep`."""
    rows = []
    for path in sorted(sweep.glob("**/results.json")):
        results = json.loads(path.read_text())
        optimizer = results["config"]["optimizer"]["_target_"].rsplit(".", 1)[-1]
        lr = results["config"]["optimizer"]["lr"]
        method = results["method"]
        if method == "ff":
            method = f"ff{results['nesting'][0]}"
        for row in results["per_dim"]:
            rows.append({"optimizer": optimizer, "lr": lr, "method": method, "dim": row["dim"],
                         "seed": results["seed"], "top1": row["top1"]})  # fmt: skip
    return rows


def markdown(rows: list[dict], dims: list[int]) -> str:
    """Mean ± std (percent) over seeds per optimizer and method at `dims`."""
    cells: dict[tuple, list[float]] = {}
    for r in rows:
        cells.setdefault((r["optimizer"], r["lr"], r["method"], r["dim"]), []).append(r["top1"])
    keys = sorted({k[:3] for k in cells})
    lines = ["| optimizer | lr | method | " + " | ".join(f"dim {d}" for d in dims) + " | seeds |",
             "|---|---:|---|" + "---:|" * len(dims) + "---:|"]  # fmt: skip
    for opt, lr, method in keys:
        shown, n = [], 0
        for d in dims:
            values = cells.get((opt, lr, method, d))
            if not values:
                shown.append("")
                continue
            n = max(n, len(values))
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            shown.append(f"{100 * statistics.fmean(values):.2f} ± {100 * sd:.2f}")
        lines.append(f"| {opt} | {lr:g} | {method} | " + " | ".join(shown) + f" | {n} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep", type=Path)
    p.add_argument("--out", type=Path, default=Path("experiments/results/fmnist_recipe"))
    p.add_argument("--dims", default="2,4,8,256")
    args = p.parse_args(argv)
    rows = read_runs(args.sweep)
    if not rows:
        print(f"recipe_table: error: no results.json under {args.sweep}", file=sys.stderr)
        sys.exit(2)
    dims = [int(d) for d in args.dims.split(",")]
    write_csv(args.out / "recipe.csv", rows)
    atomic_write_text(args.out / "recipe.md", markdown(rows, dims))
    print(markdown(rows, dims))


if __name__ == "__main__":
    main()
