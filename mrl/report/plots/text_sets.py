"""Retention of a text run's evaluation sets over dims: a heat map per run, one row per set (its
headline metric), one column per dim, each cell the set's score at that dim as a percentage of
its score at the largest dim."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import Normalize

from mrl.report.figure import Drawn
from mrl.report.load import Reference
from mrl.report.plots.style import figure_footer, figure_title, finish, label, new_figure

# The metric a set is judged by, by kind of set (as `mrl.text.evaluation.HEADLINE`).
HEADLINE_METRICS = {"retrieval": "ndcg@10", "sts": "spearman"}
_METRIC_NAMES = {"ndcg@10": "nDCG@10", "spearman": "Spearman"}
SET_INDEX = "evaluation set"
_CMAP = "viridis"
# Panels per row of the figure: a sweep of many runs wraps instead of growing one wide row.
_COLUMNS = 2


def set_label(name: str, metric: str) -> str:
    """A heat map row's label: the set and its metric, "gcide · nDCG@10"."""
    return f"{name} · {_METRIC_NAMES.get(metric, metric)}"


def headline_rows(text_sets: pd.DataFrame) -> pd.DataFrame:
    """The rows of each set's headline metric (`HEADLINE_METRICS` by kind), with a `label`."""
    wanted = text_sets["kind"].map(HEADLINE_METRICS)
    rows = text_sets[text_sets["metric"] == wanted].copy()
    rows["label"] = [set_label(s, m) for s, m in zip(rows["set"], rows["metric"])]
    return rows


def retention_grid(rows: pd.DataFrame) -> pd.DataFrame:
    """One run's headline retention (%): a row per evaluation set (labelled by `set_label`, in
    the order the rows give), a column per dim (ascending), NaN where it is undefined."""
    headline = headline_rows(rows)
    grid = headline.groupby(["label", "dim"], sort=False)["retention"].mean().unstack("dim")
    grid = grid.reindex(index=list(dict.fromkeys(headline["label"])), columns=sorted(grid.columns))
    grid.index.name, grid.columns.name = SET_INDEX, "dim"
    return grid.astype(float)


def retention_grids(text_sets: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """`retention_grid` of each run (`run` column), in the order the runs come."""
    runs = list(dict.fromkeys(text_sets["run"]))
    return {str(run): retention_grid(text_sets[text_sets["run"] == run]) for run in runs}


def _missing(text_sets: pd.DataFrame) -> list[str]:
    """Notes of the sets without their headline metric's rows."""
    notes = []
    for (name, kind), rows in text_sets.groupby(["set", "kind"], sort=False):
        metric = HEADLINE_METRICS.get(str(kind))
        if metric not in set(rows["metric"]):
            wanted = metric or f"no headline metric for kind {kind!r}"
            notes.append(f"set {name}: no {wanted} rows")
    return notes


def _panel_title(run: str, rows: pd.DataFrame, source: str) -> str:
    name = source if run == "." and source else run
    first = rows.iloc[0]
    details = [label(str(first["method"])) if pd.notna(first["method"]) else ""]
    details.append(f"seed {first['seed']}" if pd.notna(first["seed"]) else "")
    details = [d for d in details if d]
    return f"{name} ({', '.join(details)})" if details else name


def _draw_grid(ax: Axes, grid: pd.DataFrame, norm: Normalize, title: str) -> Any:
    """One heat map: the cells coloured by `norm` with their number printed, "–" where NaN."""
    image = ax.imshow(grid.to_numpy(), cmap=_CMAP, norm=norm, aspect="auto")
    ax.set_xticks(range(len(grid.columns)), [str(d) for d in grid.columns])
    ax.set_yticks(range(len(grid.index)), list(grid.index))
    ax.set_xlabel("embedding size (dimensions)")
    ax.set_title(title, fontsize=10)
    ax.tick_params(length=0)
    ax.spines[:].set_visible(False)
    colormap = image.get_cmap()
    for i, row in enumerate(grid.to_numpy()):
        for j, value in enumerate(row):
            dark = math.isfinite(value) and sum(colormap(norm(value))[:3]) < 1.5
            text = f"{value:.1f}" if math.isfinite(value) else "–"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")  # fmt: skip
    return image


def _norm(grids: dict[str, pd.DataFrame]) -> Normalize:
    """One colour scale for every panel: at least 50-100%, wider where a cell lies outside."""
    values = np.concatenate([g.to_numpy().ravel() for g in grids.values()])
    finite = values[np.isfinite(values)]
    low = min(50.0, float(finite.min())) if finite.size else 50.0
    high = max(100.0, float(finite.max())) if finite.size else 100.0
    return Normalize(vmin=low, vmax=high)


def retention_table(text_sets: pd.DataFrame) -> pd.DataFrame:
    """The numbers of the heat maps: retention (%) per set and dim, rounded to 0.1, with each
    set's headline score (%) at the largest dim; indexed by set, or by run and set."""
    parts = []
    for run, grid in retention_grids(text_sets).items():
        rows = headline_rows(text_sets[text_sets["run"] == run])
        full = rows[rows["dim"] == rows["dim"].max()].groupby("label", sort=False)["value"].mean()
        table = grid.round(1)
        table.columns = [str(c) for c in table.columns]
        table["full-dim score (%)"] = (100 * full.reindex(table.index)).round(2)
        parts.append(table.assign(run=run).set_index("run", append=True))
    table = pd.concat(parts).reorder_levels(["run", SET_INDEX])
    if table.index.get_level_values("run").nunique() == 1:
        table = table.droplevel("run")
    table.columns.name = "retention (%) at dim"
    return table


def plot_text_sets(
    text_sets: pd.DataFrame,
    reference: Reference | None = None,
    *,
    runs: dict[str, dict[str, Any]] | None = None,
    source: str = "",
    name: str = "text_sets",
) -> Drawn:
    """Heat maps of a text run's evaluation sets (one panel per run): rows the sets with their
    headline metric (nDCG@10 for retrieval, Spearman for STS), columns the dims, each cell the
    score at that dim as a percentage of the same set's score at the largest dim."""
    what = "evaluation sets, each dim's score as a percentage of the largest dim's"
    headline = headline_rows(text_sets) if not text_sets.empty else text_sets
    if headline.empty:
        missing = _missing(text_sets) if not text_sets.empty else []
        return Drawn(name, what, None, missing=missing or ["no evaluation-set rows"])
    grids = retention_grids(headline)
    norm = _norm(grids)
    ncols = min(len(grids), _COLUMNS)
    nrows = math.ceil(len(grids) / ncols)
    longest = max(len(str(i)) for g in grids.values() for i in g.index)
    width = 1.2 + 0.07 * longest + 0.75 * max(len(g.columns) for g in grids.values())
    height = 1.4 + 0.42 * max(len(g.index) for g in grids.values())
    fig = new_figure(ncols, nrows, width=width, height=height)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    image = None
    for ax, (run, grid) in zip(axes, grids.items()):
        title = _panel_title(run, headline[headline["run"] == run], source)
        image = _draw_grid(ax, grid, norm, title)
    for ax in axes[len(grids) :]:
        ax.set_visible(False)
    fig.colorbar(image, ax=list(axes[: len(grids)]), label="% of the largest dim's score")
    title, footer = figure_title(headline, what, source), figure_footer(headline, runs)
    finish(fig, title, footer)
    table = retention_table(headline)
    return Drawn(name, title, fig, table, _missing(text_sets), footer, summary=_summary(table))


def _summary(table: pd.DataFrame) -> pd.DataFrame:
    """Key rows of a table of several runs: each set's mean over the runs."""
    if table.index.nlevels == 1:
        return pd.DataFrame()
    return table.groupby(level=SET_INDEX, sort=False).mean().round(1)
