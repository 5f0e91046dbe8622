"""Figures 1 and 2 of the paper: top-1 and retrieval quality against representation size per
method, each beside the same relative to the method's largest size with the paper's curves."""

from __future__ import annotations

from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from mrl.report.figure import Drawn
from mrl.report.load import Reference
from mrl.report.plots.paper import NO_REFERENCE, PAPER, paper_largest_dim, paper_series
from mrl.report.plots.style import (
    SIZE_AXIS,
    color,
    figure_footer,
    figure_title,
    finish,
    fraction_axis,
    log2_axis,
    method_line,
    metric_text,
    new_figure,
    series,
    style_axes,
)
from mrl.report.plots.tables import (
    group_stats,
    methods_of,
    missing_dims,
    missing_methods,
    pivot_by_dim,
)

CLASSIFICATION_METHODS = ("mrl", "mrl_e", "ff", "svd", "random")
RETRIEVAL_METHODS = ("mrl", "ff")
RETRIEVAL_METRICS = ("map@10", "1nn")


def _size_panel(
    ax: Axes, stats: pd.DataFrame, methods: list[str], ylabel: str, panel_title: str
) -> None:
    """Each method's mean (%) against size, with error bars over seeds, on a log2 size axis."""
    for method in methods:
        s = stats[stats["method"] == method].sort_values("dim")
        series(ax, s["dim"], 100 * s["mean"], 100 * s["std"], **method_line(method))
    log2_axis(ax, stats["dim"])
    ax.set_xlabel(SIZE_AXIS)
    ax.set_ylabel(ylabel)
    ax.set_title(panel_title)
    style_axes(ax)
    ax.legend(loc="lower right", fontsize=8)


def _relative_panel(
    ax: Axes,
    stats: pd.DataFrame,
    reference: Reference | None,
    metric: str,
    methods: list[str],
    ylabel: str,
) -> bool:
    """Each method's curve over its own largest-dim value, with the paper's the same way.

    Returns whether a paper curve was drawn.
    """
    largest = int(stats["dim"].max())
    fractions: list[float] = []
    drew_paper = False
    for method in methods:
        s = stats[stats["method"] == method].sort_values("dim")
        top = s.iloc[-1]["mean"]
        if not top:
            continue
        x = s["dim"] / largest
        fractions += list(x)
        series(ax, x, s["mean"] / top, s["std"] / top, **method_line(method))
        paper = paper_series(reference, metric, method)
        if not paper.empty:
            paper_largest = paper_largest_dim(reference) or int(paper["dim"].max())
            px = paper["dim"] / paper_largest
            fractions += list(px)
            ax.plot(
                px, paper["value"] / paper["value"].iloc[-1], color=color(method), linestyle="--",
                marker="o", markerfacecolor="white", markersize=4, linewidth=1.2, alpha=0.9,
            )  # fmt: skip
            drew_paper = True
    fraction_axis(ax, fractions)
    paper_largest = paper_largest_dim(reference)
    sizes = f"ours: {largest}" + (f", paper: {paper_largest}" if drew_paper else "")
    ax.set_xlabel(f"representation size / largest size ({sizes}; log scale)")
    ax.set_ylabel(ylabel)
    style_axes(ax)
    handles = [Line2D([], [], color="0.2", marker="o", markersize=4, label="ours")]
    if drew_paper:
        handles.append(
            Line2D([], [], color="0.2", linestyle="--", marker="o", markerfacecolor="white",
                   markersize=4, label=PAPER)
        )  # fmt: skip
    ax.legend(handles=handles, loc="lower right", fontsize=8, title="colour = method",
              title_fontsize=8)  # fmt: skip
    return drew_paper


def plot_classification(
    classification: pd.DataFrame,
    reference: Reference | None = None,
    *,
    runs: dict[str, dict[str, Any]] | None = None,
    source: str = "",
    name: str = "classification",
) -> Drawn:
    """Top-1 accuracy against representation size per method, and relative to the paper.

    Left: top-1 (%) of MRL, MRL-E, FF, SVD, random features (and slimmable, if present) per dim,
    mean ± std over seeds. Right: each method's top-1 as a fraction of its own largest-dim
    top-1 against the size relative to the largest, with the paper's ResNet-50/ImageNet-1K
    curves dashed.
    """
    what = "top-1 accuracy against representation size"
    frame = classification.dropna(subset=["top1"]) if not classification.empty else classification
    if frame.empty:
        return Drawn(name, what, None, missing=["no top-1 rows (classification)"])
    stats = group_stats(frame, ["method", "dim"], "top1")
    methods = methods_of(stats)
    missing = missing_methods(methods, CLASSIFICATION_METHODS, frame, runs)
    missing += missing_dims(stats)
    title = figure_title(frame, what, source)
    fig = new_figure(2)
    ax, rel = fig.subplots(1, 2)
    spread = " (mean ± std over seeds)" if stats["n"].max() > 1 else ""
    _size_panel(ax, stats, methods, "top-1 accuracy (%)", "top-1 per size" + spread)
    drew = _relative_panel(
        rel, stats, reference, "top1", methods, "top-1 / top-1 at the method's largest size"
    )
    rel.set_title("relative to each method's largest size")
    if not drew:
        missing.append(NO_REFERENCE if reference is None else "no paper top-1 for these methods")
    footer = figure_footer(frame, runs)
    finish(fig, title, footer)
    table = pivot_by_dim(stats, ["method"])
    return Drawn(name, title, fig, table, missing, footer)


def plot_retrieval(
    retrieval: pd.DataFrame,
    reference: Reference | None = None,
    *,
    runs: dict[str, dict[str, Any]] | None = None,
    source: str = "",
    name: str = "retrieval",
    metrics: tuple[str, ...] = RETRIEVAL_METRICS,
) -> Drawn:
    """Retrieval mAP@10 and 1-NN accuracy against representation size, with the paper's.

    Top row: each metric (%) per dim and method (mean ± std over seeds). Bottom row: relative
    to each method's largest size, with the paper's MRL and FF curves dashed.
    """
    what = "retrieval (" + ", ".join(metric_text(m) for m in metrics) + ") against size"
    frame = retrieval[retrieval["metric"].isin(metrics)] if not retrieval.empty else retrieval
    missing = [f"no {m} rows" for m in metrics if frame.empty or m not in set(frame["metric"])]
    if frame.empty:
        return Drawn(name, what, None, missing=missing or ["no retrieval rows"])
    drawn_metrics = [m for m in metrics if m in set(frame["metric"])]
    stats = group_stats(frame, ["metric", "method", "dim"], "value")
    missing += missing_methods(methods_of(stats), RETRIEVAL_METHODS, frame, runs)
    title = figure_title(frame, what, source)
    fig = new_figure(len(drawn_metrics), 2, height=3.9)
    axes = fig.subplots(2, len(drawn_metrics), squeeze=False)
    drew_paper = False
    for col, metric in enumerate(drawn_metrics):
        ms = stats[stats["metric"] == metric]
        methods = methods_of(ms)
        missing += missing_dims(ms, f" ({metric})")
        text = metric_text(metric)
        _size_panel(axes[0][col], ms, methods, f"{text} (%)", text)
        rel = axes[1][col]
        drew_paper |= _relative_panel(
            rel, ms, reference, metric, methods, f"{text} / value at the largest size"
        )
        rel.set_title(f"{text}, relative to the largest size")
    if not drew_paper:
        missing.append(NO_REFERENCE if reference is None else "no paper curves for these methods")
    footer = figure_footer(frame, runs)
    finish(fig, title, footer)
    table = pivot_by_dim(stats, ["metric", "method"])
    return Drawn(name, title, fig, table, missing, footer)
