"""Retrieval quality against measured time per query: exact search and the adaptive and
funnel cascades of each first stage (exact, HNSW, IVF, binary)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from mrl.report.figure import Drawn
from mrl.report.load import Reference
from mrl.report.plots.search_tables import search_order
from mrl.report.plots.style import (
    color,
    figure_footer,
    figure_title,
    finish,
    metric_text,
    new_figure,
    style_axes,
    time_axis,
)


def plot_retrieval_time(
    adaptive_retrieval: pd.DataFrame,
    reference: Reference | None = None,
    *,
    runs: dict[str, dict[str, Any]] | None = None,
    source: str = "",
    name: str = "retrieval_time",
    metric: str = "map@10",
) -> Drawn:
    """Retrieval quality against measured time per query (log x): exact search, and the
    adaptive and funnel cascades of each first stage (exact, HNSW, IVF, binary).

    Left: `metric`; right: recall@10 against exact search at the full dim (where recorded).
    Time is wall clock per query over all queries in batches, as the rows recorded it.
    """
    del reference
    what = f"retrieval, {metric_text(metric)} against measured time per query"
    frame = adaptive_retrieval
    needed = {metric, "ms_per_query", "method"}
    if frame.empty or not needed <= set(frame.columns):
        return Drawn(name, what, None, missing=[f"no retrieval rows with {metric} and times"])
    frame = frame.dropna(subset=[metric, "ms_per_query"]).copy()
    if "first_stage" not in frame.columns:
        frame["first_stage"] = "exact"
    frame["first_stage"] = frame["first_stage"].fillna("exact")
    by = ["method", "first_stage", "dims", "shortlists"]
    recalls = [c for c in frame.columns if str(c).startswith("recall_vs_exact@")]
    recall = next((c for c in recalls if frame[c].notna().any()), None)
    values = [metric, "ms_per_query"] + ([recall] if recall else [])
    stats = frame.groupby(by, dropna=False)[values].mean().reset_index()
    title = figure_title(frame, what, source)
    fig = new_figure(2 if recall else 1, height=4.6)
    axes = fig.subplots(1, 2) if recall else [fig.subplots(1, 1)]
    markers = {"exact": "o", "hnsw": "^", "ivf": "s", "binary": "v", "numpy": "o"}
    for ax, column, label_text in zip(
        axes, values[:1] + values[2:], [metric_text(metric), "recall@10 vs exact"]
    ):
        for (method, stage), group in stats.groupby(["method", "first_stage"], sort=False):
            # Along a line the shortlist dim grows, so its shape shows what a longer prefix buys.
            first = [int(str(d).split(">")[0]) for d in group["dims"]]
            group = group.assign(_first=first).sort_values("_first")
            if method == "exact":
                ax.plot(group["ms_per_query"], 100 * group[column], "*", markersize=14,
                        color=color("exact"),
                        label=f"exact search at {group['dims'].iloc[0]}")  # fmt: skip
                ax.axhline(100 * group[column].iloc[0], color=color("exact"), linewidth=0.8,
                           linestyle=":")  # fmt: skip
                continue
            strategy = "funnel" if str(method).startswith("funnel") else "adaptive"
            ax.plot(group["ms_per_query"], 100 * group[column], marker=markers.get(stage, "o"),
                    linestyle="-" if strategy == "adaptive" else "none", markersize=7,
                    color=color(strategy) if stage == "exact" else None,
                    label=f"{method}, first stage {stage}")  # fmt: skip
            for _, row in group.iterrows():
                ax.annotate(str(row["dims"]), (row["ms_per_query"], 100 * row[column]),
                            textcoords="offset points", xytext=(4, 3), fontsize=6,
                            color="0.3")  # fmt: skip
        time_axis(ax, stats["ms_per_query"])
        ax.set_ylabel(f"{label_text} (%)")
        style_axes(ax)
    axes[0].legend(loc="lower right", fontsize=7)
    footer = figure_footer(frame, runs)
    finish(fig, title, footer)
    table = search_order(stats)
    for column in values:
        if column != "ms_per_query":
            table[column] = (100 * table[column]).round(2)
    exact = stats[stats["method"] == "exact"]
    if len(exact):
        speedup = exact["ms_per_query"].iloc[0] / table["ms_per_query"]
        table["speed-up vs exact"] = speedup.round(1)
    # Key rows: each search's best setting (highest quality, then the fastest).
    best = table.sort_values([metric, "ms_per_query"], ascending=[False, True], kind="stable")
    summary = search_order(best.drop_duplicates(["method", "first_stage"], keep="first"))
    return Drawn(name, title, fig, table, [], footer, summary=summary)
