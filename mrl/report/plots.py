"""The paper's figures, one function per figure, from the DataFrames of `mrl.report.load`.

Each `plot_*` function takes DataFrames and returns a `Drawn`: the matplotlib `Figure` (None
when nothing could be drawn), the table of the numbers drawn, and `missing`, the notes of what it
could not draw ("no SVD rows", "dim 64 missing for ff"). The `*_figures(tables, reference)`
functions draw one figure per study found and are what the CLI and the notebooks call;
`render_all` draws every figure group.

Figures are plain `matplotlib.figure.Figure` objects on an Agg canvas (no pyplot, so no global
backend state and nothing to close); every method has one colour in every figure (`PALETTE`).
"""

from __future__ import annotations

import base64
import math
import zlib
from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter, NullLocator

from mrl.report.figure import FOOTER_GID, TITLE_GID, Drawn
from mrl.report.load import Reference, Tables
from mrl.runs.format import method_sort_key as method_key
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
CLASSIFICATION_METHODS = ("mrl", "mrl_e", "ff", "svd", "random")
RETRIEVAL_METHODS = ("mrl", "ff")
RETRIEVAL_METRICS = ("map@10", "1nn")
ROBUSTNESS_METRICS = ("top1", "map@10")
METRIC_LABELS = {"top1": "top-1 accuracy", "map@10": "mAP@10", "1nn": "1-NN accuracy"}
PAPER = "paper (ResNet-50, ImageNet-1K)"
NO_REFERENCE = "no paper reference (--reference or $MRL_REFERENCE_DIR): overlay not drawn"
_SEVERITY_STYLES = ("--", "-.", ":", (0, (5, 1)), (0, (1, 1)), (0, (3, 1, 1, 1)))


def color(method: str) -> str:
    """The fixed colour of `method`; unknown names get a stable colour from their name."""
    if method in PALETTE:
        return PALETTE[method]
    return _FALLBACK_COLOURS[zlib.crc32(str(method).encode()) % len(_FALLBACK_COLOURS)]


def label(method: str) -> str:
    """Display name of a method."""
    return LABELS.get(method, str(method))


# ---------------------------------------------------------------------------------------------
# Helpers


def _stats(frame: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """Mean, sample std (NaN for one value) and count of `value` per `by` group."""
    if frame.empty:
        return pd.DataFrame(columns=[*by, "mean", "std", "n"])
    grouped = frame.groupby(by, dropna=False)[value]
    out = grouped.agg(["mean", "std", "count"]).reset_index()
    return out.rename(columns={"count": "n"})


def _fmt(mean: float, std: float, n: int, scale: float = 100.0, digits: int = 2) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    text = f"{scale * mean:.{digits}f}"
    if n > 1 and std == std:
        text += f" ± {scale * std:.{digits}f} (n={n})"
    return text


def _pivot(stats: pd.DataFrame, index: list[str], scale: float = 100.0) -> pd.DataFrame:
    """Display table: `index` rows x dims, cells "mean ± std (n)" (in percent by default)."""
    if stats.empty:
        return pd.DataFrame()
    cells = stats.assign(
        cell=[_fmt(m, s, int(n), scale) for m, s, n in zip(stats["mean"], stats["std"], stats["n"])]
    )
    keys = list(index)
    if "method" in index:
        # Rows in the paper's method order, not alphabetical.
        cells = cells.assign(_order=[method_key(m) for m in cells["method"]])
        cells = cells.assign(method=cells["method"].map(label))
        keys.insert(index.index("method"), "_order")
    table = cells.pivot_table(index=keys, columns="dim", values="cell", aggfunc="first")
    if "_order" in keys:
        table = table.droplevel("_order")
    table = table.reindex(sorted(table.columns), axis=1).fillna("–")
    table.columns = [str(c) for c in table.columns]
    table.columns.name = "dim"
    return table


def _methods(frame: pd.DataFrame, column: str = "method") -> list[str]:
    return sorted({str(m) for m in frame[column].dropna()}, key=method_key)


def _dims_text(dims: Iterable[int]) -> str:
    dims = sorted(dims)
    return f"dim {dims[0]}" if len(dims) == 1 else "dims " + ", ".join(str(d) for d in dims)


def declared_methods(frame: pd.DataFrame, runs: dict[str, dict[str, Any]] | None) -> set[str]:
    """The methods the runs behind `frame` declared (`declared_methods` of their provenance)."""
    keys = frame["run"].dropna().unique() if "run" in frame else []
    runs = runs or {}
    return {str(m) for k in keys for m in (runs.get(k) or {}).get("declared_methods") or []}


def _missing_methods(
    present: Iterable[str],
    candidates: Iterable[str],
    frame: pd.DataFrame,
    runs: dict[str, dict[str, Any]] | None,
) -> list[str]:
    """Notes "no MRL-E rows" for each of `candidates` that the study declared and lacks; a
    method nobody asked for (MRL-E in a single MRL run) is no absence."""
    have = set(present)
    declared = declared_methods(frame, runs)
    return [
        f"no {label(m)} rows (the study declared method {m})"
        for m in candidates
        if m in declared and m not in have
    ]


def _missing_dims(frame: pd.DataFrame, what: str = "") -> list[str]:
    """Notes like "dim 64 missing for ff": each method lacking a dim another method has."""
    notes = []
    all_dims = set(frame["dim"])
    for method in _methods(frame):
        have = set(frame.loc[frame["method"] == method, "dim"])
        lacking = all_dims - have
        if lacking:
            notes.append(f"{_dims_text(lacking)} missing for {method}{what}")
    return notes


def _log2_axis(ax: Axes, dims: Iterable[float], max_labels: int | None = None) -> None:
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


def _fraction_axis(ax: Axes, fractions: Iterable[float]) -> None:
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


def _series(
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


def _style_axes(ax: Axes) -> None:
    ax.grid(True, alpha=0.3, linewidth=0.6)
    ax.spines[["top", "right"]].set_visible(False)


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


def _title(frame: pd.DataFrame, what: str, source: str) -> str:
    datasets = sorted({str(d) for d in frame.get("dataset", pd.Series()).dropna() if str(d)})
    studies = sorted({str(s) for s in frame.get("study", pd.Series()).dropna() if str(s)})
    where = " / ".join(datasets)
    if studies:
        study = f"study {', '.join(studies)}"
        where = f"{where} ({study})" if where else study
    where = where or "unknown data set"
    return f"{where}: {what}\n{_describe_source(frame, source)}"


def _footer(frame: pd.DataFrame, runs: dict[str, dict[str, Any]] | None) -> str:
    keys = list(frame["run"].dropna().unique()) if "run" in frame else []
    runs = runs or {}
    return summarize(runs.get(k, {"git_revision": None}) for k in keys)


def _finish(fig: Figure, title: str, footer: str) -> None:
    # Tagged so that the HTML page can draw the figure without them: the page has the title as
    # the section's heading and one footer of its own.
    fig.suptitle(title, fontsize=11, gid=TITLE_GID)
    if footer:
        fig.text(0.5, -0.01, footer, ha="center", va="top", fontsize=8, color="0.35",
                 gid=FOOTER_GID)  # fmt: skip


def _new_figure(ncols: int, nrows: int = 1, width: float = 5.6, height: float = 4.2) -> Figure:
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    # The Agg canvas set per figure, not through pyplot: no global backend switch in notebooks.
    FigureCanvasAgg(fig)
    return fig


def _paper_series(reference: Reference | None, metric: str, method: str) -> pd.DataFrame:
    if reference is None or reference.curves.empty:
        return pd.DataFrame(columns=["dim", "value"])
    rows = reference.curves[
        (reference.curves["metric"] == metric) & (reference.curves["method"] == method)
    ]
    return rows.sort_values("dim")[["dim", "value"]]


def _paper_largest_dim(reference: Reference | None) -> int | None:
    if reference is None or reference.curves.empty:
        return None
    return int(reference.curves["dim"].max())


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
        _series(
            ax, x, s["mean"] / top, s["std"] / top, color=color(method), marker="o",
            markersize=4, linewidth=1.8, label=label(method),
        )  # fmt: skip
        paper = _paper_series(reference, metric, method)
        if not paper.empty:
            paper_largest = _paper_largest_dim(reference) or int(paper["dim"].max())
            px = paper["dim"] / paper_largest
            fractions += list(px)
            ax.plot(
                px, paper["value"] / paper["value"].iloc[-1], color=color(method), linestyle="--",
                marker="o", markerfacecolor="white", markersize=4, linewidth=1.2, alpha=0.9,
            )  # fmt: skip
            drew_paper = True
    _fraction_axis(ax, fractions)
    paper_largest = _paper_largest_dim(reference)
    sizes = f"ours: {largest}" + (f", paper: {paper_largest}" if drew_paper else "")
    ax.set_xlabel(f"representation size / largest size ({sizes}; log scale)")
    ax.set_ylabel(ylabel)
    _style_axes(ax)
    handles = [Line2D([], [], color="0.2", marker="o", markersize=4, label="ours")]
    if drew_paper:
        handles.append(
            Line2D([], [], color="0.2", linestyle="--", marker="o", markerfacecolor="white",
                   markersize=4, label=PAPER)
        )  # fmt: skip
    ax.legend(handles=handles, loc="lower right", fontsize=8, title="colour = method",
              title_fontsize=8)  # fmt: skip
    return drew_paper


# ---------------------------------------------------------------------------------------------
# Figure 1: classification


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
    stats = _stats(frame, ["method", "dim"], "top1")
    methods = _methods(stats)
    missing = _missing_methods(methods, CLASSIFICATION_METHODS, frame, runs)
    missing += _missing_dims(stats)
    title = _title(frame, what, source)
    fig = _new_figure(2)
    ax, rel = fig.subplots(1, 2)
    for method in methods:
        s = stats[stats["method"] == method].sort_values("dim")
        _series(
            ax, s["dim"], 100 * s["mean"], 100 * s["std"], color=color(method), marker="o",
            markersize=4, linewidth=1.8, label=label(method),
        )  # fmt: skip
    _log2_axis(ax, stats["dim"])
    ax.set_xlabel("representation size (dimensions, log scale)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("top-1 per size" + (" (mean ± std over seeds)" if stats["n"].max() > 1 else ""))
    _style_axes(ax)
    ax.legend(loc="lower right", fontsize=8)
    drew = _relative_panel(
        rel, stats, reference, "top1", methods, "top-1 / top-1 at the method's largest size"
    )
    rel.set_title("relative to each method's largest size")
    if not drew:
        missing.append(NO_REFERENCE if reference is None else "no paper top-1 for these methods")
    footer = _footer(frame, runs)
    _finish(fig, title, footer)
    table = _pivot(stats, ["method"])
    return Drawn(name, title, fig, table, missing, footer)


# ---------------------------------------------------------------------------------------------
# Figure 2: retrieval


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
    what = "retrieval (" + ", ".join(METRIC_LABELS.get(m, m) for m in metrics) + ") against size"
    frame = retrieval[retrieval["metric"].isin(metrics)] if not retrieval.empty else retrieval
    missing = [f"no {m} rows" for m in metrics if frame.empty or m not in set(frame["metric"])]
    if frame.empty:
        return Drawn(name, what, None, missing=missing or ["no retrieval rows"])
    drawn_metrics = [m for m in metrics if m in set(frame["metric"])]
    stats = _stats(frame, ["metric", "method", "dim"], "value")
    missing += _missing_methods(_methods(stats), RETRIEVAL_METHODS, frame, runs)
    title = _title(frame, what, source)
    fig = _new_figure(len(drawn_metrics), 2, height=3.9)
    axes = fig.subplots(2, len(drawn_metrics), squeeze=False)
    drew_paper = False
    for col, metric in enumerate(drawn_metrics):
        ms = stats[stats["metric"] == metric]
        methods = _methods(ms)
        missing += _missing_dims(ms, f" ({metric})")
        ax = axes[0][col]
        for method in methods:
            s = ms[ms["method"] == method].sort_values("dim")
            _series(
                ax, s["dim"], 100 * s["mean"], 100 * s["std"], color=color(method), marker="o",
                markersize=4, linewidth=1.8, label=label(method),
            )  # fmt: skip
        _log2_axis(ax, ms["dim"])
        ax.set_xlabel("representation size (dimensions, log scale)")
        ax.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} (%)")
        ax.set_title(METRIC_LABELS.get(metric, metric))
        _style_axes(ax)
        ax.legend(loc="lower right", fontsize=8)
        rel = axes[1][col]
        drew_paper |= _relative_panel(
            rel, ms, reference, metric, methods,
            f"{METRIC_LABELS.get(metric, metric)} / value at the largest size",
        )  # fmt: skip
        rel.set_title(f"{METRIC_LABELS.get(metric, metric)}, relative to the largest size")
    if not drew_paper:
        missing.append(NO_REFERENCE if reference is None else "no paper curves for these methods")
    footer = _footer(frame, runs)
    _finish(fig, title, footer)
    table = _pivot(stats, ["metric", "method"])
    return Drawn(name, title, fig, table, missing, footer)


# ---------------------------------------------------------------------------------------------
# Figure 3: adaptive classification


def _nesting_dims(frame: pd.DataFrame) -> list[int]:
    heads = frame.loc[frame["kind"] == "head", "expected_dim"].dropna()
    if len(heads):
        return sorted({int(d) for d in heads})
    cols = [c for c in frame.columns if str(c).startswith("exit@")]
    return sorted(int(str(c).split("@", 1)[1]) for c in cols)


def _paper_cascade(reference: Reference | None) -> tuple[pd.DataFrame, float | None, int]:
    """The paper's cascade rows, the accuracy they are normalised by, and the full size."""
    if reference is None or reference.adaptive.empty:
        return pd.DataFrame(), None, 2048
    rows = reference.adaptive[reference.adaptive["study"] == "adaptive_classification"]
    full = _paper_largest_dim(reference) or 2048
    mrl = _paper_series(reference, "top1", "mrl")
    if not mrl.empty:
        return rows, float(mrl["value"].iloc[-1]), full
    return rows, float(rows["value"].max()) if len(rows) else None, full


def _row_method(row: pd.Series) -> str:
    return str(row["method"]) if pd.notna(row["method"]) else "mrl"


def _cascade_fronts(sweep: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame, pd.DataFrame]]:
    """Per run of the threshold sweep: `(run, method, distinct rows, Pareto front)`, the front
    being the rows with the best accuracy at no larger expected size (the curve drawn; every
    row is a faint dot, since rows of nearby targets scatter around it)."""
    out = []
    for run, rs in sweep.groupby("run", sort=True):
        method = str(rs["method"].iloc[0]) if rs["method"].notna().any() else "mrl"
        rs = rs.sort_values(["expected_dim", "accuracy"]).drop_duplicates(
            ["expected_dim", "accuracy"]
        )
        front, best = [], -1.0
        for _, row in rs.iterrows():
            if row["accuracy"] > best:
                front.append(row)
                best = row["accuracy"]
        out.append((str(run), method, rs, pd.DataFrame(front)))
    return out


def _cascade_table(
    sweep: pd.DataFrame, head_stats: pd.DataFrame, oracle: pd.DataFrame, match: pd.DataFrame
) -> pd.DataFrame:
    """The numbers of the cascade figure: each run's Pareto front, the heads' mean ± std over
    runs, the oracle and the smallest expected size matching the largest head."""
    rows = []
    for run, method, _, front in _cascade_fronts(sweep):
        rows += [
            {"run": run, "method": method, "kind": "sweep (Pareto front)",
             "target": row.get("target"), "expected_dim": row["expected_dim"],
             "accuracy": row["accuracy"]}
            for _, row in front.iterrows()
        ]  # fmt: skip
    for method in _methods(head_stats):
        hs = head_stats[head_stats["method"] == method].sort_values("expected_dim")
        rows += [
            {"run": "mean over runs", "method": method, "kind": "fixed-dim head",
             "target": None, "expected_dim": row["expected_dim"], "accuracy": row["mean"],
             "std": row["std"], "n": row["n"]}
            for _, row in hs.iterrows()
        ]  # fmt: skip
    for kind, frame in (("oracle", oracle), ("matches largest head", match)):
        rows += [
            {"run": row["run"], "method": _row_method(row), "kind": kind,
             "target": row.get("target") if kind != "oracle" else None,
             "expected_dim": row["expected_dim"], "accuracy": row["accuracy"]}
            for _, row in frame.iterrows()
        ]  # fmt: skip
    table = pd.DataFrame(rows)
    if not table.empty:
        table["accuracy (%)"] = (100 * table.pop("accuracy")).round(2)
        if "std" in table:
            table["std (%)"] = (100 * table.pop("std")).round(2)
        table["expected_dim"] = table["expected_dim"].astype(float).round(2)
        table["method"] = table["method"].map(label)
    return table


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


def _marked_points(points: pd.DataFrame) -> pd.DataFrame:
    """Per method: mean and std over runs of `expected_dim` and `accuracy`, and the run count."""
    if points.empty:
        return pd.DataFrame(columns=["method", "dim", "dim_std", "acc", "acc_std", "n"])
    rows = points.assign(method=[_row_method(r) for _, r in points.iterrows()])
    grouped = rows.groupby("method")
    out = pd.DataFrame(
        {
            "dim": grouped["expected_dim"].mean(),
            "dim_std": grouped["expected_dim"].std(),
            "acc": grouped["accuracy"].mean(),
            "acc_std": grouped["accuracy"].std(),
            "n": grouped["accuracy"].count(),
        }
    ).reset_index()
    return out.sort_values("acc", ascending=False).reset_index(drop=True)


def _mark_points(ax: Axes, points: pd.DataFrame, kind: str, largest: float) -> None:
    """The oracle (star) or the match with the largest head (ring) of each method: one marker
    per method (mean over runs, error bars where several), each with its own label beside it,
    drawn with an arrow so that no label can be read as another marker's."""
    marked = _marked_points(points)
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


def _cascade_summary(
    head_stats: pd.DataFrame, oracle: pd.DataFrame, match: pd.DataFrame
) -> pd.DataFrame:
    """The key rows of the cascade figure per method: the largest head, the oracle and the
    smallest expected size matching the largest head (means over runs)."""
    rows = []
    for method in _methods(head_stats) or sorted({_row_method(r) for _, r in match.iterrows()}):
        hs = head_stats[head_stats["method"] == method].sort_values("expected_dim")
        if len(hs):
            top = hs.iloc[-1]
            rows.append({"method": label(method), "point": "largest fixed-dim head",
                         "expected_dim": float(top["expected_dim"]),
                         "accuracy (%)": 100 * top["mean"], "runs": int(top["n"])})  # fmt: skip
        for kind, frame in (("oracle", oracle), ("matches the largest head", match)):
            marked = _marked_points(frame)
            for _, row in marked[marked["method"] == method].iterrows():
                rows.append({"method": label(method), "point": kind, "expected_dim": row["dim"],
                             "accuracy (%)": 100 * row["acc"], "runs": int(row["n"])})  # fmt: skip
    table = pd.DataFrame(rows)
    if not table.empty:
        table["expected_dim"] = table["expected_dim"].round(1)
        table["accuracy (%)"] = table["accuracy (%)"].round(2)
    return table


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
    title = _title(frame, what, source)
    dims = _nesting_dims(frame)
    largest = max(dims) if dims else float(sweep["expected_dim"].max())
    fig = _new_figure(2, height=4.4)
    ax, rel = fig.subplots(1, 2)
    labelled: set[str] = set()
    head_stats = _stats(heads, ["method", "expected_dim"], "accuracy")
    top_acc: dict[str, float] = {}
    for method in _methods(head_stats):
        hs = head_stats[head_stats["method"] == method].sort_values("expected_dim")
        top_acc[method] = float(hs["mean"].iloc[-1])
    fractions: list[float] = []
    for run, method, rs, front_frame in _cascade_fronts(sweep):
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
    for method in _methods(head_stats):
        hs = head_stats[head_stats["method"] == method].sort_values("expected_dim")
        _series(
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
    _log2_axis(ax, dims or sweep["expected_dim"])
    # After the axis: the oracle's label is placed by the marker's position on it.
    _mark_points(ax, oracle, "oracle", largest)
    _mark_points(ax, match, "match", largest)
    ax.set_xlabel("expected representation size (dimensions per example, log scale)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("cascade over the nested heads")
    _style_axes(ax)
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
    _fraction_axis(rel, fractions or [1.0])
    paper_text = f", paper: {paper_full}" if not paper.empty else ""
    rel.set_xlabel(f"expected size / largest size (ours: {int(largest)}{paper_text}; log scale)")
    rel.set_ylabel("accuracy / largest head's accuracy")
    rel.set_title(
        "relative to the largest head" + (f"; dashed: {PAPER}" if not paper.empty else ""),
        fontsize=10 if not paper.empty else None,
    )
    _style_axes(rel)
    rel.legend(loc="lower right", fontsize=8)
    footer = _footer(frame, runs)
    _finish(fig, title, footer)
    table = _cascade_table(sweep, head_stats, oracle, match)
    summary = _cascade_summary(head_stats, oracle, match)
    return Drawn(name, title, fig, table, missing, footer, summary=summary)


# ---------------------------------------------------------------------------------------------
# Figure 4: adaptive / funnel retrieval


def _strategy(setting: str) -> str:
    text = str(setting).lower()
    if text.startswith("exact"):
        return "exact"
    return "funnel" if text.startswith("funnel") else "adaptive"


_SEARCH_KEYS = ["method", "dims", "shortlists"]


def _numbers(text: Any) -> tuple[float, ...]:
    """`"8>2048"` -> (8, 2048): dims and shortlists compared as numbers, not strings."""
    out = []
    for part in str(text).split(">"):
        try:
            out.append(float(part))
        except ValueError:
            out.append(math.inf)
    return tuple(out)


_SEARCH_ORDER = {"exact": 0, "adaptive": 1, "funnel": 2}


def search_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of search settings in reading order: exact search, then adaptive, then funnels
    (then any other method), each by its dims and shortlists as numbers (16 before 128)."""
    if frame.empty:
        return frame
    method = "method" if "method" in frame else "search"
    stages = (
        frame["first_stage"].fillna("exact") if "first_stage" in frame else ["exact"] * len(frame)
    )
    keys = [
        (_SEARCH_ORDER.get(str(m), 3), str(m), str(f) != "exact", str(f), _numbers(d), _numbers(s))
        for m, f, d, s in zip(frame[method], stages, frame["dims"], frame["shortlists"])
    ]
    order = sorted(range(len(frame)), key=lambda i: keys[i])
    return frame.iloc[order].reset_index(drop=True)


def _search_stats(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per search setting (`method, dims, shortlists`): `metric` mean/std/n over runs, the mean
    MFLOPs per query (`mflops`) and the means of the timing and 1-NN columns present."""
    stats = _stats(frame, _SEARCH_KEYS, metric)
    grouped = frame.groupby(_SEARCH_KEYS, dropna=False)
    stats = stats.merge(grouped["mflops_per_query"].mean().rename("mflops").reset_index(),
                        on=_SEARCH_KEYS)  # fmt: skip
    for column in ("ms_per_query", "speedup_vs_exact", "1nn"):
        if column in frame:
            stats = stats.merge(grouped[column].mean().reset_index(), on=_SEARCH_KEYS)
    return search_order(stats)


def _search_table(stats: pd.DataFrame, exact: pd.Series | None, metric: str) -> pd.DataFrame:
    """The figure's table of `_search_stats`: percentages, FLOPs as a fraction of exact's, and
    the measured time and speed-up where recorded."""
    table = stats.rename(columns={"mean": f"{metric} (%)", "mflops": "MFLOPs/query"})
    table[f"{metric} (%)"] = (100 * table[f"{metric} (%)"]).round(2)
    table["std"] = (100 * table["std"]).round(2)
    if "1nn" in table:
        table["1nn"] = (100 * table["1nn"]).round(2)
        table = table.rename(columns={"1nn": "1-NN (%)"})
    if exact is not None:
        table["FLOPs / exact"] = (table["MFLOPs/query"] / exact["mflops"]).round(4)
    measured = _measured_speedup(stats, exact)
    if measured is not None:
        table["ms_per_query"] = table["ms_per_query"].round(4)
        table["measured speed-up"] = measured.round(2)
        table = table.drop(columns=[c for c in ("speedup_vs_exact",) if c in table])
        table = table.rename(columns={"ms_per_query": "ms/query (measured)"})
    table = table.rename(columns={"method": "search", "std": "std (%)"})
    return table.reset_index(drop=True)


def _measured_speedup(stats: pd.DataFrame, exact: pd.Series | None) -> pd.Series | None:
    """Measured wall-clock speed-up over exact search per setting: exact's ms per query over
    the setting's, else the recorded `speedup_vs_exact`; None where no time was recorded."""
    if "ms_per_query" in stats and stats["ms_per_query"].notna().any() and exact is not None:
        if exact.get("ms_per_query") == exact.get("ms_per_query") and exact["ms_per_query"]:
            return exact["ms_per_query"] / stats["ms_per_query"]
    if "speedup_vs_exact" in stats and stats["speedup_vs_exact"].notna().any():
        return stats["speedup_vs_exact"].astype(float)
    return None


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
            _series(
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
    _style_axes(target)


def _draw_measured_speedup(ax: Axes, stats: pd.DataFrame, measured: pd.Series, ex: pd.Series):
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
    _style_axes(ax)
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
    what = f"adaptive retrieval, {METRIC_LABELS.get(metric, metric)} against cost per query"
    frame = adaptive_retrieval
    if frame.empty or metric not in frame.columns:
        return Drawn(name, what, None, missing=[f"no adaptive retrieval rows with {metric}"])
    frame = frame.dropna(subset=[metric, "mflops_per_query"])
    if "first_stage" in frame.columns:
        frame = frame[frame["first_stage"].fillna("exact").astype(str) == "exact"]
    if frame.empty:
        return Drawn(name, what, None, missing=["no rows with a brute-force first stage"])
    missing: list[str] = []
    stats = _search_stats(frame, metric)
    exact = stats[stats["method"] == "exact"]
    if exact.empty:
        missing.append("no exact search row: relative panel not drawn")
    title = _title(frame, what, source)
    ex = exact.iloc[0] if len(exact) else None
    measured = _measured_speedup(stats, ex) if ex is not None else None
    ncols = 3 if measured is not None else 2
    fig = _new_figure(ncols, width=5.6 if ncols == 2 else 4.9, height=4.4)
    axes = fig.subplots(1, ncols)
    ax, rel = axes[0], axes[1]

    _draw_search_costs(ax, stats, ex, relative=False)
    ax.set_xlabel("MFLOPs per query (log scale)")
    ax.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} (%)")
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
            paper_exact = paper[[_strategy(s) == "exact" for s in paper["setting"]]]
        else:
            paper_exact = paper
        if len(paper_exact):
            pe = paper_exact.iloc[0]
            for _, row in paper.iterrows():
                strategy = _strategy(row["setting"])
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
        rel.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} / exact search's")
        rel.set_title(f"relative to exact search; hollow: {PAPER}", fontsize=9)
        handles = [h for h, t in zip(*rel.get_legend_handles_labels()) if t.startswith("paper")]
        handles.append(Line2D([], [], color="0.3", marker="o", label="ours (filled, as left)"))
        rel.legend(handles=handles, loc="lower right", fontsize=7 if ncols == 3 else 8)
        if measured is not None:
            _draw_measured_speedup(axes[2], stats, measured, ex)
    else:
        rel.set_visible(False)
    footer = _footer(frame, runs)
    _finish(fig, title, footer)
    return Drawn(name, title, fig, _search_table(stats, ex, metric), missing, footer)


def _time_axis(ax: Axes, times: pd.Series) -> None:
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
    what = f"retrieval, {METRIC_LABELS.get(metric, metric)} against measured time per query"
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
    title = _title(frame, what, source)
    fig = _new_figure(2 if recall else 1, height=4.6)
    axes = fig.subplots(1, 2) if recall else [fig.subplots(1, 1)]
    markers = {"exact": "o", "hnsw": "^", "ivf": "s", "binary": "v", "numpy": "o"}
    for ax, column, label_text in zip(
        axes, values[:1] + values[2:], [METRIC_LABELS.get(metric, metric), "recall@10 vs exact"]
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
        _time_axis(ax, stats["ms_per_query"])
        ax.set_ylabel(f"{label_text} (%)")
        _style_axes(ax)
    axes[0].legend(loc="lower right", fontsize=7)
    footer = _footer(frame, runs)
    _finish(fig, title, footer)
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


# ---------------------------------------------------------------------------------------------
# Figure 5: robustness


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
    stats = _stats(frame, ["metric", "method", "corruption", "severity", "dim"], "value")
    methods = _methods(stats)
    ncols = min(max_cols, len(corruptions))
    rows_per_metric = math.ceil(len(corruptions) / ncols)
    nrows = rows_per_metric * len(drawn_metrics)
    title = _title(frame, what, source)
    fig = _new_figure(ncols, nrows, width=3.9, height=3.3)
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
                    _series(
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
                    _series(
                        ax, s["dim"], 100 * s["mean"], 100 * s["std"], color=color(method),
                        linewidth=1.2, linestyle=styles[severity], marker=".", markersize=4,
                        alpha=0.9,
                    )  # fmt: skip
            _log2_axis(ax, ms["dim"], max_labels=6)
            ax.set_title(f"{corruption}: {METRIC_LABELS.get(metric, metric)}", fontsize=10)
            if ci % ncols == 0:
                ax.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} (%)")
            ax.set_xlabel("representation size (dims, log scale)", fontsize=9)
            _style_axes(ax)
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
    footer = _footer(frame, runs)
    _finish(fig, title, footer)
    table = _pivot(stats, ["metric", "method", "corruption", "severity"])
    # Key rows: every corruption and severity at the largest size.
    top = stats[stats["dim"] == stats["dim"].max()]
    summary = _pivot(top.assign(dim=top["severity"]), ["metric", "method", "corruption"])
    if not summary.empty:
        summary.columns = ["clean" if c == "0" else f"severity {c}" for c in summary.columns]
        summary.columns.name = f"at dim {int(stats['dim'].max())}"
    return Drawn(name, title, fig, table, missing, footer, summary=summary)


# ---------------------------------------------------------------------------------------------
# Figure groups over the studies of a `Tables`

PlotFunction = Callable[..., Drawn]
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
    title = _title(frame, what, source)
    fig = _new_figure(len(metrics), height=4.0)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        rows = frame[frame["metric"] == metric]
        for method in _methods(rows):
            r = rows[rows["method"] == method].sort_values("dim")
            ax.plot(r["dim"], r["retention"], color=color(method), marker="o", markersize=4,
                    linewidth=1.8, label=label(method))  # fmt: skip
        ax.axhline(100, color="0.6", linewidth=0.8, linestyle=":")
        _log2_axis(ax, rows["dim"])
        ax.set_xlabel("embedding size (dimensions, log scale)")
        ax.set_ylabel(f"% of the full dim's {metric}")
        ax.set_title(f"{metric}, full dim {int(rows['full_dim'].max())}")
        _style_axes(ax)
        ax.legend(loc="lower right", fontsize=8)
    footer = "the full dim's score is 100%; one run per model"
    _finish(fig, title, footer)
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


GROUPS: dict[str, tuple[str, PlotFunction]] = {
    "classification": ("classification", plot_classification),
    "retrieval": ("retrieval", plot_retrieval),
    "adaptive_classification": ("adaptive_classification", plot_adaptive_classification),
    "adaptive_retrieval": ("adaptive_retrieval", plot_adaptive_retrieval),
    "retrieval_time": ("adaptive_retrieval", plot_retrieval_time),
    "robustness": ("robustness", plot_robustness),
    "text_retention": ("text", plot_text_retention),
}


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text).strip("_") or "x"


def figures_for(group: str, tables: Tables, reference: Reference | None = None) -> list[Drawn]:
    """One figure of `group` (a key of `GROUPS`) per study in its table.

    Names are the group (`classification`), or `<group>__<study>` when several studies are
    found; a group without rows gives one `Drawn` without a figure, whose notes say so.
    """
    attribute, function = GROUPS[group]
    frame: pd.DataFrame = getattr(tables, attribute)
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


def render_all(tables: Tables, reference: Reference | None = None) -> list[Drawn]:
    """Every figure group, in the paper's order."""
    return [d for group in GROUPS for d in figures_for(group, tables, reference)]


def png_data_uri(drawn: Drawn) -> str:
    """`data:image/png;base64,...` of a drawn figure, for self-contained HTML."""
    return "data:image/png;base64," + base64.b64encode(drawn.png()).decode("ascii")
