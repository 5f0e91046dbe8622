"""Quality retention of a text model's prefixes: each dim's score as a percentage of the same
model's full-dim score."""

from __future__ import annotations

from typing import Any

import pandas as pd

from mrl.report.figure import Drawn
from mrl.report.load import Reference
from mrl.report.plots.style import (
    figure_title,
    finish,
    label,
    log2_axis,
    method_line,
    new_figure,
    style_axes,
)
from mrl.report.plots.tables import methods_of

TEXT_METRICS = ("recall@10", "map@10", "1nn")


def plot_text_retention(
    text: pd.DataFrame,
    reference: Reference | None = None,
    *,
    runs: dict[str, dict[str, Any]] | None = None,
    source: str = "",
    name: str = "text_retention",
) -> Drawn:
    """Quality retention of a text model's prefixes: each dim's score as a percentage of the
    same model's full-dim score (as Matryoshka text models are judged), one panel per metric,
    one line per model (zero-shot truncated, Matryoshka- and single-dim fine-tuned)."""
    what = "text embeddings: each dim's score as a percentage of the full dim's"
    frame = text[text["metric"].isin(TEXT_METRICS)] if not text.empty else text
    if frame.empty:
        return Drawn(name, what, None, missing=["no text benchmark table (reverse_dictionary.csv)"])
    metrics = [m for m in TEXT_METRICS if m in set(frame["metric"])]
    title = figure_title(frame, what, source)
    fig = new_figure(len(metrics), height=4.0)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        rows = frame[frame["metric"] == metric]
        for method in methods_of(rows):
            r = rows[rows["method"] == method].sort_values("dim")
            ax.plot(r["dim"], r["retention"], **method_line(method))
        ax.axhline(100, color="0.6", linewidth=0.8, linestyle=":")
        log2_axis(ax, rows["dim"])
        ax.set_xlabel("embedding size (dimensions, log scale)")
        ax.set_ylabel(f"% of the full dim's {metric}")
        ax.set_title(f"{metric}, full dim {int(rows['full_dim'].max())}")
        style_axes(ax)
        ax.legend(loc="lower right", fontsize=8)
    footer = "the full dim's score is 100%; one run per model"
    finish(fig, title, footer)
    table = frame[["study", "method", "dim", "metric", "value", "retention"]].copy()
    table["value (%)"] = (100 * table.pop("value")).round(2)
    table["retention (%)"] = table.pop("retention").round(1)
    table["method"] = table["method"].map(label)
    # Key rows: the retention of each model per dim and metric, one row each.
    summary = table.pivot_table(
        index=["metric", "method"], columns="dim", values="retention (%)", aggfunc="first"
    )
    summary.columns = [str(c) for c in summary.columns]
    summary.columns.name = "retention (%) at dim"
    return Drawn(name, title, fig, table.reset_index(drop=True), [], footer, summary=summary)
