"""The paper's figures, one function per figure, from the DataFrames of `mrl.report.load`.

Each `plot_*` function takes DataFrames and returns a `Drawn`: the matplotlib `Figure` (None
when nothing could be drawn), the table of the numbers drawn, and `missing`, the notes of what it
could not draw ("no SVD rows", "dim 64 missing for ff"). The `*_figures(tables, reference)`
functions draw one figure per study found and are what the CLI and the notebooks call;
`render_all` draws every figure group.

One module per figure family, all on the set-up of `style` (palette, new figures, axes, title,
footer): `per_dim` (top-1 and retrieval against size), `cascade` (adaptive classification),
`search_cost` and `search_time` (adaptive and funnel retrieval against MFLOPs and measured
time), `robustness`, `text` (text retention), `text_sets` (heat maps of a text run's evaluation
sets), `study_figure` (several study tables); `groups` draws them per study. This package's
names below are the ones to import.
"""

from mrl.report.figure import png_data_uri
from mrl.report.plots.cascade import plot_adaptive_classification
from mrl.report.plots.groups import (
    GROUPS,
    ONLY_WITH_ROWS,
    PlotFunction,
    adaptive_classification_figures,
    adaptive_retrieval_figures,
    classification_figures,
    figures_for,
    render_all,
    retrieval_figures,
    robustness_figures,
    text_set_figures,
)
from mrl.report.plots.paper import NO_REFERENCE, PAPER
from mrl.report.plots.per_dim import (
    CLASSIFICATION_METHODS,
    RETRIEVAL_METHODS,
    RETRIEVAL_METRICS,
    plot_classification,
    plot_retrieval,
)
from mrl.report.plots.robustness import ROBUSTNESS_METRICS, plot_robustness
from mrl.report.plots.search_cost import plot_adaptive_retrieval
from mrl.report.plots.search_tables import search_order
from mrl.report.plots.search_time import plot_retrieval_time
from mrl.report.plots.style import LABELS, METRIC_LABELS, PALETTE, color, label
from mrl.report.plots.tables import declared_methods
from mrl.report.plots.text import TEXT_METRICS, plot_text_retention
from mrl.report.plots.text_sets import (
    HEADLINE_METRICS,
    plot_text_sets,
    retention_grid,
    retention_grids,
    retention_table,
)

__all__ = [
    "CLASSIFICATION_METHODS",
    "GROUPS",
    "HEADLINE_METRICS",
    "LABELS",
    "METRIC_LABELS",
    "NO_REFERENCE",
    "ONLY_WITH_ROWS",
    "PALETTE",
    "PAPER",
    "RETRIEVAL_METHODS",
    "RETRIEVAL_METRICS",
    "ROBUSTNESS_METRICS",
    "TEXT_METRICS",
    "PlotFunction",
    "adaptive_classification_figures",
    "adaptive_retrieval_figures",
    "classification_figures",
    "color",
    "declared_methods",
    "figures_for",
    "label",
    "plot_adaptive_classification",
    "plot_adaptive_retrieval",
    "plot_classification",
    "plot_retrieval",
    "plot_retrieval_time",
    "plot_robustness",
    "plot_text_retention",
    "plot_text_sets",
    "png_data_uri",
    "render_all",
    "retention_grid",
    "retention_grids",
    "retention_table",
    "retrieval_figures",
    "robustness_figures",
    "search_order",
    "text_set_figures",
]
