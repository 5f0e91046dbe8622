"""One figure of several study tables (`mrl-report --studies`): accuracy against dim, one panel
per table and one line per setting, mean ± std over seeds, the dims on a log scale."""

from __future__ import annotations

import io
import math
import statistics

from matplotlib.figure import Figure

from mrl.report.plots.style import new_figure
from mrl.report.study_table import StudyPanel

DPI = 110


def plot_studies(panels: list[StudyPanel], sources: list[str]) -> Figure:
    """Up to three panels a row; `sources` (the tables' file names) are named in the title."""
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = new_figure(cols, rows, width=5.2, height=3.8, layout=None)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (name, keys, metric, lines) in zip(axes.flat, panels):
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
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle("Ablations: mean ± std over seeds (from " + ", ".join(sources) + ")", fontsize=9)
    fig.tight_layout()
    return fig


def studies_png(panels: list[StudyPanel], sources: list[str]) -> bytes:
    """`plot_studies` as PNG bytes at `DPI`."""
    buffer = io.BytesIO()
    plot_studies(panels, sources).savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()
