"""The figure groups of the report, each drawn once per study of a `Tables`: what the command
and the notebooks call."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from mrl.report.figure import Drawn
from mrl.report.load import Reference, Tables
from mrl.report.plots.cascade import plot_adaptive_classification
from mrl.report.plots.per_dim import plot_classification, plot_retrieval
from mrl.report.plots.robustness import plot_robustness
from mrl.report.plots.search_cost import plot_adaptive_retrieval
from mrl.report.plots.search_time import plot_retrieval_time
from mrl.report.plots.text import plot_text_retention
from mrl.report.plots.text_sets import plot_text_sets

PlotFunction = Callable[..., Drawn]
# Group -> (the `Tables` attribute it draws, its function), in the paper's order.
GROUPS: dict[str, tuple[str, PlotFunction]] = {
    "classification": ("classification", plot_classification),
    "retrieval": ("retrieval", plot_retrieval),
    "adaptive_classification": ("adaptive_classification", plot_adaptive_classification),
    "adaptive_retrieval": ("adaptive_retrieval", plot_adaptive_retrieval),
    "retrieval_time": ("adaptive_retrieval", plot_retrieval_time),
    "robustness": ("robustness", plot_robustness),
    "text_retention": ("text", plot_text_retention),
    "text_sets": ("text_sets", plot_text_sets),
}
# Groups drawn only where their table has rows: most results have no text evaluation sets, and
# the page leaves out what does not apply to them rather than listing it as not drawn.
ONLY_WITH_ROWS = {"text_sets"}


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text).strip("_") or "x"


def figures_for(group: str, tables: Tables, reference: Reference | None = None) -> list[Drawn]:
    """One figure of `group` (a key of `GROUPS`) per study in its table.

    Names are the group (`classification`), or `<group>__<study>` when several studies are
    found; a group without rows gives one `Drawn` without a figure, whose notes say so, or
    nothing for a group of `ONLY_WITH_ROWS`.
    """
    attribute, function = GROUPS[group]
    frame: pd.DataFrame = getattr(tables, attribute)
    if frame.empty and group in ONLY_WITH_ROWS:
        return []
    source = tables.root.resolve().name
    studies = sorted({str(s) for s in frame["study"].dropna()}) if not frame.empty else []
    if len(studies) <= 1:
        drawn = function(frame, reference, runs=tables.runs, source=source, name=group)
        drawn.group, drawn.study = group, studies[0] if studies else ""
        return [drawn]
    out = []
    for study in studies:
        drawn = function(
            frame[frame["study"].astype(str) == study].reset_index(drop=True),
            reference,
            runs=tables.runs,
            source=source,
            name=f"{group}__{_safe(study)}",
        )
        drawn.group, drawn.study = group, study
        out.append(drawn)
    return out


def classification_figures(tables: Tables, reference: Reference | None = None) -> list[Drawn]:
    """Figure 1 (top-1 against size) per study."""
    return figures_for("classification", tables, reference)


def retrieval_figures(tables: Tables, reference: Reference | None = None) -> list[Drawn]:
    """Figure 2 (mAP@10 and 1-NN against size) per study."""
    return figures_for("retrieval", tables, reference)


def adaptive_classification_figures(
    tables: Tables, reference: Reference | None = None
) -> list[Drawn]:
    """Figure 3 (cascade accuracy against expected size) per study."""
    return figures_for("adaptive_classification", tables, reference)


def adaptive_retrieval_figures(tables: Tables, reference: Reference | None = None) -> list[Drawn]:
    """Figure 4 (mAP@10 against MFLOPs per query) per study."""
    return figures_for("adaptive_retrieval", tables, reference)


def robustness_figures(tables: Tables, reference: Reference | None = None) -> list[Drawn]:
    """Figure 5 (accuracy per corruption and severity against size) per study."""
    return figures_for("robustness", tables, reference)


def text_set_figures(tables: Tables, reference: Reference | None = None) -> list[Drawn]:
    """Heat maps of the text runs' evaluation-set retention per study (none without rows)."""
    return figures_for("text_sets", tables, reference)


def render_all(tables: Tables, reference: Reference | None = None) -> list[Drawn]:
    """Every figure group, in the paper's order."""
    return [d for group in GROUPS for d in figures_for(group, tables, reference)]
