"""The set-up every figure shares: the method palette and display names, new figures on their own
Agg canvas, the axes helpers (log2 size axis, size-fraction axis, time axis, a line with error
bars, the common look), and the title, footer and finish of a figure.

Figures are plain `matplotlib.figure.Figure` objects (no pyplot, so no global backend state and
nothing to close); every method has one colour in every figure (`PALETTE`).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter, NullLocator

from mrl.report.figure import FOOTER_GID, TITLE_GID
from mrl.runs.provenance import summarize

# One colour per method (and per search strategy) in every figure.
PALETTE: dict[str, str] = {
    "mrl": "#1f77b4",
    "mrl_e": "#ff7f0e",
    "ff": "#2ca02c",
    "svd": "#d62728",
    "random": "#9467bd",
    "slimmable": "#8c564b",
    "svd_classifier": "#e377c2",
    "exact": "#222222",
    "adaptive": "#17becf",
    "funnel": "#bcbd22",
}
_FALLBACK_COLOURS = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd")
LABELS: dict[str, str] = {
    "mrl": "MRL",
    "mrl_e": "MRL-E",
    "ff": "FF",
    "svd": "SVD",
    "random": "random features",
    "slimmable": "slimmable",
    "svd_classifier": "SVD classifier",
    "exact": "exact search",
    "adaptive": "adaptive (shortlist, re-rank)",
    "funnel": "funnel",
    "zero_shot": "zero-shot (truncated)",
    "single_dim": "single-dim fine-tuned",
}
METRIC_LABELS = {"top1": "top-1 accuracy", "map@10": "mAP@10", "1nn": "1-NN accuracy"}
SIZE_AXIS = "representation size (dimensions, log scale)"


def color(method: str) -> str:
    """The fixed colour of `method`; unknown names get a stable colour from their name."""
    if method in PALETTE:
        return PALETTE[method]
    return _FALLBACK_COLOURS[zlib.crc32(str(method).encode()) % len(_FALLBACK_COLOURS)]


def label(method: str) -> str:
    """Display name of a method."""
    return LABELS.get(method, str(method))


def metric_text(metric: str) -> str:
    """Display name of a metric in axis labels and titles (`map@10` -> "mAP@10")."""
    return METRIC_LABELS.get(metric, metric)


def method_line(method: str) -> dict[str, Any]:
    """The style of a method's curve against size: its colour, round markers, its name."""
    return {"color": color(method), "marker": "o", "markersize": 4, "linewidth": 1.8,
            "label": label(method)}  # fmt: skip


def new_figure(
    ncols: int,
    nrows: int = 1,
    width: float = 5.6,
    height: float = 4.2,
    layout: str | None = "constrained",
) -> Figure:
    """A figure of `nrows` x `ncols` panels of `width` x `height` inches, on its own Agg canvas."""
    fig = Figure(figsize=(width * ncols, height * nrows), layout=layout)
    # The Agg canvas set per figure, not through pyplot: no global backend switch in notebooks.
    FigureCanvasAgg(fig)
    return fig


def style_axes(ax: Axes) -> None:
    """The common look of a panel: a light grid, no top and right spines."""
    ax.grid(True, alpha=0.3, linewidth=0.6)
    ax.spines[["top", "right"]].set_visible(False)


def log2_axis(ax: Axes, dims: Iterable[float], max_labels: int | None = None) -> None:
    """Log2 x axis with the given dims as the only ticks; with more than `max_labels` dims
    (a narrow panel) every other tick keeps its label, counted from the largest."""
    ticks = sorted({int(d) for d in dims})
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    step = 2 if max_labels is not None and len(ticks) > max_labels else 1
    last = len(ticks) - 1
    ax.set_xticklabels([str(t) if (last - i) % step == 0 else "" for i, t in enumerate(ticks)])
    ax.xaxis.set_minor_locator(NullLocator())
    if ticks:
        ax.set_xlim(ticks[0] / 1.35, ticks[-1] * 1.35)
    if len(ticks) > 9:
        ax.tick_params(axis="x", labelrotation=45)


def _fraction_label(value: float) -> str:
    if value >= 1:
        return f"{value:g}"
    return f"1/{round(1 / value)}"


def fraction_axis(ax: Axes, fractions: Iterable[float]) -> None:
    """Log2 x axis of sizes relative to the largest, ticks at powers of two ("1/8")."""
    values = [f for f in fractions if f > 0]
    if not values:
        return
    low = 2 ** math.floor(math.log2(min(values)) + 1e-9)
    ticks = []
    t = 1.0
    while t >= low:
        ticks.append(t)
        t /= 2
    ticks = sorted(ticks)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.set_xticklabels([_fraction_label(t) for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(ticks[0] / 1.35, max(values) * 1.35)
    if len(ticks) > 9:
        ax.tick_params(axis="x", labelrotation=45)


def time_axis(ax: Axes, times: pd.Series) -> None:
    """The measured-time x axis: log scale with plain numbers where the times span more than a
    factor of three, else linear (a log axis over less shows only crowded minor labels)."""
    known = [float(t) for t in times if t == t and t > 0]
    if known and max(known) / min(known) > 3:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("measured ms per query (log scale)")
    else:
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.set_xlabel("measured ms per query")


def series(
    ax: Axes,
    x: Iterable[float],
    y: Iterable[float],
    err: Iterable[float] | None = None,
    **style: Any,
) -> None:
    """A line with error bars where any std is known (several seeds), else a plain line."""
    x, y = list(x), list(y)
    errs = [e if e == e else 0.0 for e in err] if err is not None else []
    if errs and any(e > 0 for e in errs):
        ax.errorbar(x, y, yerr=errs, capsize=3, elinewidth=1, **style)
    else:
        ax.plot(x, y, **style)


def _describe_source(frame: pd.DataFrame, source: str) -> str:
    runs = frame["run"].dropna().unique()
    seeds = sorted({str(s) for s in frame["seed"].dropna().unique()}) if "seed" in frame else []
    aggregate = any("#" in str(r) for r in runs)
    parts = [source] if source else []
    parts.append(f"{len(runs)} run{'s' if len(runs) != 1 else ''}")
    if aggregate:
        parts.append("aggregate results.csv")
    if seeds:
        parts.append(("seed " if len(seeds) == 1 else "seeds ") + ", ".join(seeds[:8]))
    return "source: " + ", ".join(parts)


def figure_title(frame: pd.DataFrame, what: str, source: str) -> str:
    """A figure's title: the data sets and studies of `frame`, `what` it shows, and a second
    line on its source (the folder, the runs, the seeds)."""
    datasets = sorted({str(d) for d in frame.get("dataset", pd.Series()).dropna() if str(d)})
    studies = sorted({str(s) for s in frame.get("study", pd.Series()).dropna() if str(s)})
    where = " / ".join(datasets)
    if studies:
        study = f"study {', '.join(studies)}"
        where = f"{where} ({study})" if where else study
    where = where or "unknown data set"
    return f"{where}: {what}\n{_describe_source(frame, source)}"


def figure_footer(frame: pd.DataFrame, runs: dict[str, dict[str, Any]] | None) -> str:
    """A figure's footer: the provenance summary of the runs behind `frame`."""
    keys = list(frame["run"].dropna().unique()) if "run" in frame else []
    runs = runs or {}
    return summarize(runs.get(k, {"git_revision": None}) for k in keys)


def finish(fig: Figure, title: str, footer: str) -> None:
    """Draw the title above the figure and the footer (where any) below it."""
    # Tagged so that the HTML page can draw the figure without them: the page has the title as
    # the section's heading and one footer of its own.
    fig.suptitle(title, fontsize=11, gid=TITLE_GID)
    if footer:
        fig.text(0.5, -0.01, footer, ha="center", va="top", fontsize=8, color="0.35",
                 gid=FOOTER_GID)  # fmt: skip
