"""One figure of several study tables: accuracy against dim, one line per setting, mean ± std.

    python experiments/studies/ablation_figure.py experiments/results/fmnist_ablations/*.csv \
        --out experiments/results/fmnist_ablations/ablations.png

Reads the tidy CSVs `study_table.py` writes (the setting's keys, `dim`, `seed`, then the
metric) and draws one panel per file, the dims on a log scale.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import pandas as pd

PROG = "ablation_figure"


def panels(paths: list[Path]) -> list[tuple[str, str, str, dict[str, dict[int, list[float]]]]]:
    """Per file: its name, its setting keys, its metric and {setting: {dim: values}}."""
    out = []
    for path in paths:
        table = pd.read_csv(path, dtype=str)
        if "dim" not in table.columns or "seed" not in table.columns:
            raise ValueError(f"{path} is not a study_table CSV (no dim and seed columns)")
        keys = list(table.columns[: list(table.columns).index("dim")])
        metric = table.columns[-1]
        lines: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        for _, row in table.iterrows():
            setting = ", ".join(str(row[k]) for k in keys)
            lines[setting][int(row["dim"])].append(float(row[metric]))
        out.append((path.stem, ", ".join(keys), metric, lines))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("tables", type=Path, nargs="+")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        drawn = panels(args.tables)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        print(f"{PROG}: error: {str(err).splitlines()[0]}", file=sys.stderr)
        sys.exit(2)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(drawn))
    rows = math.ceil(len(drawn) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
    for ax, (name, keys, metric, lines) in zip(axes.flat, drawn):
        for setting, by_dim in lines.items():
            dims = sorted(by_dim)
            means = [statistics.fmean(by_dim[d]) for d in dims]
            stds = [statistics.stdev(by_dim[d]) if len(by_dim[d]) > 1 else 0.0 for d in dims]
            ax.errorbar(dims, means, yerr=stds, marker="o", ms=3, capsize=2, label=setting)
        ax.set_xscale("log", base=2)
        ax.set_title(name.replace("_", " "))
        ax.set_xlabel("dim (log scale)")
        ax.set_ylabel(f"test {metric} (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title=keys, title_fontsize=7)
    for ax in list(axes.flat)[len(drawn) :]:
        ax.axis("off")
    fig.suptitle("Ablations: mean ± std over seeds (from " + ", ".join(
        p.name for p in args.tables) + ")", fontsize=9)  # fmt: skip
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(args.out)  # never a half-written figure
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
