"""Figure 4 of the paper: retrieval quality against MFLOPs per query of exact, adaptive and
funnel search, relative to exact search with the paper's points, and the measured speed-up
against the theoretical one."""

from __future__ import annotations

from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter

from mrl.report.figure import Drawn
from mrl.report.load import Reference
from mrl.report.plots.paper import NO_REFERENCE, PAPER
from mrl.report.plots.search_tables import (
    measured_speedup,
    search_stats,
    search_strategy,
    search_table,
)
from mrl.report.plots.style import (
    color,
    figure_footer,
    figure_title,
    finish,
    label,
    metric_text,
    new_figure,
    series,
    style_axes,
)


def _draw_search_costs(
    target: Axes, stats: pd.DataFrame, ex: pd.Series | None, relative: bool
) -> None:
    """Quality against MFLOPs of each search setting on `target` (log x), absolute or relative
    to exact search (`ex`)."""
    sx = 1 / ex["mflops"] if relative else 1.0
    sy = 1 / ex["mean"] if relative else 100.0
    for strategy in ("adaptive", "funnel"):
        rows = stats[stats["method"] == strategy]
        if rows.empty:
            continue
        rows = rows.assign(rerank=[str(d).split(">")[-1] for d in rows["dims"]])
        for rerank, group in rows.groupby("rerank", sort=False):
            group = group.sort_values("mflops")
            shortlist = str(group["shortlists"].iloc[0]).split(">")[0]
            text = (
                f"adaptive: shortlist {shortlist} at Ds, re-rank at {rerank}"
                if strategy == "adaptive"
                else f"funnel {group['dims'].iloc[0]}"
            )
            series(
                target, group["mflops"] * sx, group["mean"] * sy, group["std"] * sy,
                color=color(strategy), marker="o" if strategy == "adaptive" else "D",
                markersize=5 if strategy == "adaptive" else 7,
                linewidth=1.4 if strategy == "adaptive" else 0, label=text,
            )  # fmt: skip
            if relative:
                continue
            for _, row in group.iterrows():
                if strategy != "adaptive":
                    continue
                target.annotate(
                    f"Ds={str(row['dims']).split('>')[0]}", (row["mflops"], 100 * row["mean"]),
                    textcoords="offset points", xytext=(4, 4), fontsize=7, color="0.25",
                )  # fmt: skip
    if ex is not None:
        target.errorbar(
            [ex["mflops"] * sx], [ex["mean"] * sy],
            yerr=[ex["std"] * sy] if ex["n"] > 1 and ex["std"] == ex["std"] else None,
            color=color("exact"), marker="*", markersize=13, linestyle="none",
            label=f"exact search at {ex['dims']}",
        )  # fmt: skip
        target.axhline(ex["mean"] * sy, color=color("exact"), linewidth=0.8, linestyle=":")
    target.set_xscale("log")
    target.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.margins(x=0.08, y=0.08)
    style_axes(target)


def _draw_measured_speedup(
    ax: Axes, stats: pd.DataFrame, measured: pd.Series, ex: pd.Series
) -> None:
    """Measured wall-clock speed-up against the theoretical one (exact's FLOPs over the
    setting's), log-log, with the diagonal where measurement meets theory."""
    theory = ex["mflops"] / stats["mflops"]
    values = [float(v) for v in [*theory, *measured] if v == v and v > 0]
    for strategy, marker in (("adaptive", "o"), ("funnel", "D")):
        rows = stats["method"] == strategy
        if not rows.any():
            continue
        ax.plot(
            theory[rows], measured[rows], linestyle="none", marker=marker, markersize=6,
            color=color(strategy), label=label(strategy),
        )  # fmt: skip
        for (_, row), x, y in zip(stats[rows].iterrows(), theory[rows], measured[rows]):
            adaptive = strategy == "adaptive"
            text = f"Ds={str(row['dims']).split('>')[0]}" if adaptive else "funnel"
            # Funnels below their point: they often share an adaptive setting's cost.
            ax.annotate(text, (x, y), textcoords="offset points",
                        xytext=(4, 4) if adaptive else (4, -10), fontsize=7,
                        color="0.25")  # fmt: skip
    if values:
        low, high = min(values + [1.0]) / 1.5, max(values + [1.0]) * 1.5
        ax.plot([low, high], [low, high], color="0.5", linewidth=0.8, linestyle="--",
                label="measured = theoretical")  # fmt: skip
        ax.set_xlim(low, high)
    ax.axhline(1.0, color=color("exact"), linewidth=0.8, linestyle=":",
               label="as fast as exact search")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("theoretical speed-up (exact MFLOPs / MFLOPs, log scale)")
    ax.set_ylabel("measured speed-up (exact ms / ms per query)")
    ax.set_title("measured wall clock against FLOPs", fontsize=10)
    style_axes(ax)
    ax.legend(loc="upper left", fontsize=7)


def plot_adaptive_retrieval(
    adaptive_retrieval: pd.DataFrame,
    reference: Reference | None = None,
    *,
    runs: dict[str, dict[str, Any]] | None = None,
    source: str = "",
    name: str = "adaptive_retrieval",
    metric: str = "map@10",
) -> Drawn:
    """Retrieval mAP@10 against MFLOPs per query (log x) of exact, adaptive and funnel search
    with a brute-force first stage (HNSW, IVF and binary first stages are in the retrieval
    time figure: their cost is not counted in FLOPs).

    Left: absolute, exact search as the reference point (mean ± std over runs). Middle:
    relative to exact search (MFLOPs and mAP@10 as fractions of exact's), with the paper's
    points. Right, where the rows record times: the measured wall-clock speed-up over exact
    search against the theoretical one.
    """
    what = f"adaptive retrieval, {metric_text(metric)} against cost per query"
    frame = adaptive_retrieval
    if frame.empty or metric not in frame.columns:
        return Drawn(name, what, None, missing=[f"no adaptive retrieval rows with {metric}"])
    frame = frame.dropna(subset=[metric, "mflops_per_query"])
    if "first_stage" in frame.columns:
        frame = frame[frame["first_stage"].fillna("exact").astype(str) == "exact"]
    if frame.empty:
        return Drawn(name, what, None, missing=["no rows with a brute-force first stage"])
    missing: list[str] = []
    stats = search_stats(frame, metric)
    exact = stats[stats["method"] == "exact"]
    if exact.empty:
        missing.append("no exact search row: relative panel not drawn")
    title = figure_title(frame, what, source)
    ex = exact.iloc[0] if len(exact) else None
    measured = measured_speedup(stats, ex) if ex is not None else None
    ncols = 3 if measured is not None else 2
    fig = new_figure(ncols, width=5.6 if ncols == 2 else 4.9, height=4.4)
    axes = fig.subplots(1, ncols)
    ax, rel = axes[0], axes[1]

    _draw_search_costs(ax, stats, ex, relative=False)
    ax.set_xlabel("MFLOPs per query (log scale)")
    ax.set_ylabel(f"{metric_text(metric)} (%)")
    ax.set_title("cost against quality")
    ax.legend(loc="lower right", fontsize=8 if ncols == 2 else 7)
    if ex is not None:
        _draw_search_costs(rel, stats, ex, relative=True)
        paper = (
            reference.adaptive[reference.adaptive["study"].str.startswith("adaptive_retrieval")]
            if reference is not None and not reference.adaptive.empty
            else pd.DataFrame()
        )
        if len(paper):
            paper_exact = paper[[search_strategy(s) == "exact" for s in paper["setting"]]]
        else:
            paper_exact = paper
        if len(paper_exact):
            pe = paper_exact.iloc[0]
            for _, row in paper.iterrows():
                strategy = search_strategy(row["setting"])
                if strategy == "exact":
                    continue  # (1, 1) by definition, under ours
                rel.plot(
                    row["cost"] / pe["cost"], row["value"] / pe["value"], linestyle="none",
                    marker="D" if strategy == "funnel" else "o", markersize=7,
                    markerfacecolor="white",
                    markeredgecolor=color(strategy), markeredgewidth=1.5,
                    label=f"paper: {row['setting']}",
                )  # fmt: skip
        else:
            missing.append(NO_REFERENCE if reference is None else "no paper retrieval rows")
        rel.set_xlabel("MFLOPs per query / exact search's (log scale)")
        rel.set_ylabel(f"{metric_text(metric)} / exact search's")
        rel.set_title(f"relative to exact search; hollow: {PAPER}", fontsize=9)
        handles = [h for h, t in zip(*rel.get_legend_handles_labels()) if t.startswith("paper")]
        handles.append(Line2D([], [], color="0.3", marker="o", label="ours (filled, as left)"))
        rel.legend(handles=handles, loc="lower right", fontsize=7 if ncols == 3 else 8)
        if measured is not None:
            _draw_measured_speedup(axes[2], stats, measured, ex)
    else:
        rel.set_visible(False)
    footer = figure_footer(frame, runs)
    finish(fig, title, footer)
    return Drawn(name, title, fig, search_table(stats, ex, metric), missing, footer)
