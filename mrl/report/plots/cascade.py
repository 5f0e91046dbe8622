"""Figure 3 of the paper: accuracy of the confidence cascade against expected representation
size, beside the same relative to the largest head with the paper's cascade."""

from __future__ import annotations

from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from mrl.report.figure import Drawn
from mrl.report.load import Reference
from mrl.report.plots.cascade_tables import (
    cascade_fronts,
    cascade_summary,
    cascade_table,
    marked_points,
    nesting_dims,
)
from mrl.report.plots.paper import NO_REFERENCE, PAPER, paper_largest_dim, paper_series
from mrl.report.plots.style import (
    color,
    figure_footer,
    figure_title,
    finish,
    fraction_axis,
    label,
    log2_axis,
    new_figure,
    series,
    style_axes,
)
from mrl.report.plots.tables import group_stats, methods_of


def _paper_cascade(reference: Reference | None) -> tuple[pd.DataFrame, float | None, int]:
    """The paper's cascade rows, the accuracy they are normalised by, and the full size."""
    if reference is None or reference.adaptive.empty:
        return pd.DataFrame(), None, 2048
    rows = reference.adaptive[reference.adaptive["study"] == "adaptive_classification"]
    full = paper_largest_dim(reference) or 2048
    mrl = paper_series(reference, "top1", "mrl")
    if not mrl.empty:
        return rows, float(mrl["value"].iloc[-1]), full
    return rows, float(rows["value"].max()) if len(rows) else None, full


def _draw_paper_cascade(
    rel: Axes, paper: pd.DataFrame, paper_norm: float, paper_full: float
) -> list[float]:
    """The paper's cascade and fixed-dim points on the relative panel; their size fractions."""
    cascade = paper[paper["setting"].str.contains("cascade", case=False)].sort_values("cost")
    others = paper[~paper["setting"].str.contains("cascade", case=False)]
    px = cascade["cost"] / paper_full
    rel.plot(
        px, cascade["value"] / paper_norm, color=color("mrl"), linestyle="--", marker="o",
        markerfacecolor="white", markersize=5, linewidth=1.2, label="paper: MRL cascade",
    )  # fmt: skip
    fractions = list(px)
    for _, row in others.iterrows():
        fractions.append(row["cost"] / paper_full)
        rel.plot(
            row["cost"] / paper_full, row["value"] / paper_norm, linestyle="none",
            marker="D", markersize=6, markerfacecolor="white",
            markeredgecolor=color(str(row["setting"]).lower().split("-")[0]),
            label=f"paper: {row['setting']} at {row['cost']:g} dims",
        )  # fmt: skip
    return fractions


def _mark_points(ax: Axes, points: pd.DataFrame, kind: str, largest: float) -> None:
    """The oracle (star) or the match with the largest head (ring) of each method: one marker
    per method (mean over runs, error bars where several), each with its own label beside it,
    drawn with an arrow so that no label can be read as another marker's."""
    marked = marked_points(points)
    for rank, row in marked.iterrows():
        method = str(row["method"])
        several = row["n"] > 1
        style = (
            {"marker": "*", "markersize": 13, "color": color(method), "markeredgecolor": "black"}
            if kind == "oracle"
            else {"marker": "o", "markersize": 12, "markerfacecolor": "none",
                  "markeredgecolor": color(method), "markeredgewidth": 2, "color": color(method)}
        )  # fmt: skip
        ax.errorbar(
            [row["dim"]], [100 * row["acc"]], linestyle="none", zorder=5,
            xerr=[row["dim_std"]] if several else None,
            yerr=[100 * row["acc_std"]] if several else None, elinewidth=1, capsize=2, **style,
        )  # fmt: skip
        mean = "mean " if several else ""
        # Labels stacked in the axes' free upper part (accuracy saturates towards the right,
        # the oracle sits above everything): beside the oracle, and above the curves' plateau
        # at the right for the matches; the arrow ties each to its own marker.
        if kind == "oracle":
            text = f"{label(method)} oracle: {mean}{row['dim']:.1f} dims, {100 * row['acc']:.1f}%"
            x_data = ax.transData.transform((row["dim"], 0))[0]
            x_axes = ax.transAxes.inverted().transform((x_data, 0))[0]
            where, align = (min(x_axes + 0.06, 0.6), 0.95 - 0.07 * rank), "left"
        else:
            smaller = f", {largest / row['dim']:.1f}x smaller" if row["dim"] else ""
            text = f"{label(method)} matches its largest head at {mean}{row['dim']:.1f} dims"
            text += smaller
            where, align = (0.98, 0.80 - 0.07 * rank), "right"
        ax.annotate(
            text, (row["dim"], 100 * row["acc"]), textcoords="axes fraction", xytext=where,
            ha=align, va="center", fontsize=7.5, color=color(method),
            arrowprops={"arrowstyle": "-", "color": color(method), "linewidth": 0.7,
                        "shrinkB": 7},
        )  # fmt: skip


def plot_adaptive_classification(
    adaptive_classification: pd.DataFrame,
    reference: Reference | None = None,
    *,
    runs: dict[str, dict[str, Any]] | None = None,
    source: str = "",
    name: str = "adaptive_classification",
) -> Drawn:
    """Accuracy against expected representation size of the confidence cascade.

    Left: the threshold sweep (one curve per run), the fixed-dim heads as points (mean ± std
    over runs), the oracle (each example at its smallest correct head) and the smallest
    expected size that matches the largest head. Right: the same relative to the largest head
    (accuracy and size), with the paper's cascade on ImageNet-1K.
    """
    what = "adaptive classification, accuracy against expected representation size"
    frame = adaptive_classification
    sweep = frame[frame["kind"] == "sweep"] if not frame.empty else frame
    if sweep.empty:
        return Drawn(name, what, None, missing=["no adaptive classification sweep rows"])
    missing: list[str] = []
    heads = frame[frame["kind"] == "head"]
    oracle = frame[frame["kind"] == "oracle"]
    match = frame[frame["kind"] == "match"]
    if heads.empty:
        missing.append("no fixed-dim head accuracies (eval/summary.json): head points not drawn")
    if oracle.empty:
        missing.append("no oracle (eval/summary.json): oracle point not drawn")
    title = figure_title(frame, what, source)
    dims = nesting_dims(frame)
    largest = max(dims) if dims else float(sweep["expected_dim"].max())
    fig = new_figure(2, height=4.4)
    ax, rel = fig.subplots(1, 2)
    labelled: set[str] = set()
    head_stats = group_stats(heads, ["method", "expected_dim"], "accuracy")
    top_acc: dict[str, float] = {}
    for method in methods_of(head_stats):
        hs = head_stats[head_stats["method"] == method].sort_values("expected_dim")
        top_acc[method] = float(hs["mean"].iloc[-1])
    fractions: list[float] = []
    for run, method, rs, front_frame in cascade_fronts(sweep):
        first = f"sweep:{method}" not in labelled
        labelled.add(f"sweep:{method}")
        ax.plot(
            rs["expected_dim"], 100 * rs["accuracy"], color=color(method), linestyle="none",
            marker=".", markersize=3, alpha=0.35,
            label=f"{label(method)} cascade, every threshold setting" if first else None,
        )  # fmt: skip
        ax.plot(
            front_frame["expected_dim"], 100 * front_frame["accuracy"], color=color(method),
            linewidth=1.8, label=f"{label(method)} cascade, best at each size" if first else None,
        )  # fmt: skip
        run_top = heads[(heads["run"] == run)].sort_values("expected_dim")
        norm = float(run_top["accuracy"].iloc[-1]) if len(run_top) else top_acc.get(method)
        if norm:
            x = front_frame["expected_dim"] / largest
            fractions += list(x)
            rel.plot(x, front_frame["accuracy"] / norm, color=color(method), linewidth=1.8)
    for method in methods_of(head_stats):
        hs = head_stats[head_stats["method"] == method].sort_values("expected_dim")
        series(
            ax, hs["expected_dim"], 100 * hs["mean"], 100 * hs["std"], color=color(method),
            marker="s", markersize=6, linestyle=":", linewidth=1, markerfacecolor="white",
            markeredgewidth=1.5, label=f"{label(method)} fixed-dim heads",
        )  # fmt: skip
        top = top_acc[method]
        rel.plot(
            hs["expected_dim"] / largest, hs["mean"] / top, color=color(method), marker="s",
            markersize=6, linestyle=":", linewidth=1, markerfacecolor="white", markeredgewidth=1.5,
        )  # fmt: skip
        fractions += list(hs["expected_dim"] / largest)
    log2_axis(ax, dims or sweep["expected_dim"])
    # After the axis: the oracle's label is placed by the marker's position on it.
    _mark_points(ax, oracle, "oracle", largest)
    _mark_points(ax, match, "match", largest)
    ax.set_xlabel("expected representation size (dimensions per example, log scale)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("cascade over the nested heads")
    style_axes(ax)
    handles, texts = ax.get_legend_handles_labels()
    # Marker shapes in grey: their colour is the method's, as for the curves.
    if len(oracle):
        handles.append(Line2D([], [], linestyle="none", marker="*", markersize=11, color="0.6",
                              markeredgecolor="black"))  # fmt: skip
        texts.append("oracle (each example at its smallest correct head)")
    if len(match):
        handles.append(Line2D([], [], linestyle="none", marker="o", markersize=10,
                              markerfacecolor="none", markeredgecolor="0.3",
                              markeredgewidth=1.5))  # fmt: skip
        texts.append("smallest size matching the largest head")
    ax.legend(handles, texts, loc="lower right", fontsize=7)

    paper, paper_norm, paper_full = _paper_cascade(reference)
    if not paper.empty and paper_norm:
        fractions += _draw_paper_cascade(rel, paper, paper_norm, paper_full)
    else:
        missing.append(NO_REFERENCE if reference is None else "no paper cascade rows")
    rel.plot([], [], color="0.2", label="ours: cascade (solid), heads (squares)")
    fraction_axis(rel, fractions or [1.0])
    paper_text = f", paper: {paper_full}" if not paper.empty else ""
    rel.set_xlabel(f"expected size / largest size (ours: {int(largest)}{paper_text}; log scale)")
    rel.set_ylabel("accuracy / largest head's accuracy")
    rel.set_title(
        "relative to the largest head" + (f"; dashed: {PAPER}" if not paper.empty else ""),
        fontsize=10 if not paper.empty else None,
    )
    style_axes(rel)
    rel.legend(loc="lower right", fontsize=8)
    footer = figure_footer(frame, runs)
    finish(fig, title, footer)
    table = cascade_table(sweep, head_stats, oracle, match)
    summary = cascade_summary(head_stats, oracle, match)
    return Drawn(name, title, fig, table, missing, footer, summary=summary)
