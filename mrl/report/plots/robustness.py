"""Figure 5 of the paper: accuracy per corruption and severity against representation size,
the clean test set in bold."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from matplotlib.lines import Line2D

from mrl.report.figure import Drawn
from mrl.report.load import Reference
from mrl.report.plots.style import (
    color,
    figure_footer,
    figure_title,
    finish,
    label,
    log2_axis,
    metric_text,
    new_figure,
    series,
    style_axes,
)
from mrl.report.plots.tables import group_stats, methods_of, pivot_by_dim

ROBUSTNESS_METRICS = ("top1", "map@10")
_SEVERITY_STYLES = ("--", "-.", ":", (0, (5, 1)), (0, (1, 1)), (0, (3, 1, 1, 1)))


def plot_robustness(
    robustness: pd.DataFrame,
    reference: Reference | None = None,
    *,
    runs: dict[str, dict[str, Any]] | None = None,
    source: str = "",
    name: str = "robustness",
    metrics: tuple[str, ...] = ROBUSTNESS_METRICS,
    max_cols: int = 4,
) -> Drawn:
    """Top-1 (and mAP@10 where present) per corruption and severity against size.

    One panel per (metric, corruption); in each, the clean test set in bold and each severity
    as a thinner line of its own style, colour = method, mean ± std over seeds. `reference` is
    accepted for a uniform signature; the paper's robustness numbers are not in it.
    """
    del reference
    what = "robustness, accuracy per corruption and severity against size"
    frame = robustness[robustness["metric"].isin(metrics)] if not robustness.empty else robustness
    corrupted = frame[frame["corruption"] != "clean"] if not frame.empty else frame
    if corrupted.empty:
        return Drawn(
            name, what, None,
            missing=["no corrupted splits (query-<corruption>-<severity>) in eval/metrics.csv"],
        )  # fmt: skip
    # A metric is drawn where some corrupted split has it; clean rows alone show no robustness.
    drawn_metrics = [m for m in metrics if m in set(corrupted["metric"])]
    missing = [f"no {m} on corrupted splits" for m in metrics if m not in drawn_metrics]
    corruptions = sorted(set(corrupted["corruption"]))
    severities = sorted({int(s) for s in corrupted["severity"]})
    styles = {s: _SEVERITY_STYLES[i % len(_SEVERITY_STYLES)] for i, s in enumerate(severities)}
    stats = group_stats(frame, ["metric", "method", "corruption", "severity", "dim"], "value")
    methods = methods_of(stats)
    ncols = min(max_cols, len(corruptions))
    rows_per_metric = math.ceil(len(corruptions) / ncols)
    nrows = rows_per_metric * len(drawn_metrics)
    title = figure_title(frame, what, source)
    fig = new_figure(ncols, nrows, width=3.9, height=3.3)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for r in range(nrows):
        for c in range(ncols):
            axes[r][c].set_visible(False)
            # One y axis per metric, so that the corruptions compare at a glance.
            first = axes[(r // rows_per_metric) * rows_per_metric][0]
            if axes[r][c] is not first:
                axes[r][c].sharey(first)
            if c:
                axes[r][c].tick_params(labelleft=False)
    for mi, metric in enumerate(drawn_metrics):
        ms = stats[stats["metric"] == metric]
        clean = ms[ms["corruption"] == "clean"]
        if clean.empty:
            missing.append(f"no clean {metric} rows: bold clean line not drawn")
        for ci, corruption in enumerate(corruptions):
            ax = axes[mi * rows_per_metric + ci // ncols][ci % ncols]
            ax.set_visible(True)
            cs = ms[ms["corruption"] == corruption]
            have = sorted({int(s) for s in cs["severity"]})
            lacking = [s for s in severities if s not in have]
            if lacking and mi == 0:
                missing.append(f"severity {', '.join(map(str, lacking))} missing for {corruption}")
            for method in methods:
                base = clean[clean["method"] == method].sort_values("dim")
                if len(base):
                    series(
                        ax, base["dim"], 100 * base["mean"], 100 * base["std"],
                        color=color(method), linewidth=2.8, marker="o", markersize=3.5,
                    )  # fmt: skip
                for severity in have:
                    s = cs[(cs["method"] == method) & (cs["severity"] == severity)]
                    s = s.sort_values("dim")
                    if s.empty:
                        if mi == 0:
                            missing.append(f"no {corruption}-{severity} rows for {method}")
                        continue
                    series(
                        ax, s["dim"], 100 * s["mean"], 100 * s["std"], color=color(method),
                        linewidth=1.2, linestyle=styles[severity], marker=".", markersize=4,
                        alpha=0.9,
                    )  # fmt: skip
            log2_axis(ax, ms["dim"], max_labels=6)
            ax.set_title(f"{corruption}: {metric_text(metric)}", fontsize=10)
            if ci % ncols == 0:
                ax.set_ylabel(f"{metric_text(metric)} (%)")
            ax.set_xlabel("representation size (dims, log scale)", fontsize=9)
            style_axes(ax)
    handles = [
        Line2D([], [], color="0.15", linewidth=2.8, label="clean test set"),
        *[
            Line2D([], [], color="0.15", linewidth=1.2, linestyle=styles[s],
                   label=f"severity {s}" if s else "corrupted")
            for s in severities
        ],
        *[Line2D([], [], color=color(m), linewidth=2.5, label=label(m)) for m in methods],
    ]  # fmt: skip
    # Beside the top-right panel: constrained layout makes room for an axes legend, and a
    # figure legend above or below collides with the title or the footer.
    axes[0][ncols - 1].legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.03, 1.0), fontsize=8, frameon=False
    )
    footer = figure_footer(frame, runs)
    finish(fig, title, footer)
    table = pivot_by_dim(stats, ["metric", "method", "corruption", "severity"])
    # Key rows: every corruption and severity at the largest size.
    top = stats[stats["dim"] == stats["dim"].max()]
    summary = pivot_by_dim(top.assign(dim=top["severity"]), ["metric", "method", "corruption"])
    if not summary.empty:
        summary.columns = ["clean" if c == "0" else f"severity {c}" for c in summary.columns]
        summary.columns.name = f"at dim {int(stats['dim'].max())}"
    return Drawn(name, title, fig, table, missing, footer, summary=summary)
