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
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from mrl.report.figure import Drawn
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


def _missing_methods(present: Iterable[str], expected: Iterable[str]) -> list[str]:
    have = set(present)
    return [f"no {label(m)} rows" for m in expected if m not in have]


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


def _log2_axis(ax: Axes, dims: Iterable[float]) -> None:
    """Log2 x axis with the given dims as the only tick labels."""
    ticks = sorted({int(d) for d in dims})
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.set_xticklabels([str(t) for t in ticks])
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
    fig.suptitle(title, fontsize=11)
    if footer:
        fig.text(0.5, -0.01, footer, ha="center", va="top", fontsize=8, color="0.35")


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
    missing = _missing_methods(methods, CLASSIFICATION_METHODS) + _missing_dims(stats)
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
    missing += _missing_methods(_methods(stats), RETRIEVAL_METHODS)
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
    for i, (_, row) in enumerate(oracle.iterrows()):
        method = _row_method(row)
        ax.plot(
            row["expected_dim"], 100 * row["accuracy"], linestyle="none", marker="*",
            markersize=13, color=color(method), markeredgecolor="black",
            label="oracle (smallest correct head)" if i == 0 else None,
        )  # fmt: skip
    for i, (_, row) in enumerate(match.iterrows()):
        ax.plot(
            row["expected_dim"], 100 * row["accuracy"], linestyle="none", marker="o",
            markersize=12, markerfacecolor="none", markeredgecolor="black", markeredgewidth=1.5,
            label="matches the largest head" if i == 0 else None,
        )  # fmt: skip
        if i == 0 and row["expected_dim"]:
            ax.annotate(
                f"{row['expected_dim']:.1f} dims: {largest / row['expected_dim']:.1f}x smaller",
                (row["expected_dim"], 100 * row["accuracy"]), textcoords="offset points",
                xytext=(0, 12), ha="center", va="bottom", fontsize=8,
            )  # fmt: skip
    _log2_axis(ax, dims or sweep["expected_dim"])
    ax.set_xlabel("expected representation size (dimensions per example, log scale)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("cascade over the nested heads")
    _style_axes(ax)
    ax.legend(loc="lower right", fontsize=8)

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
    return Drawn(name, title, fig, table, missing, footer)


# ---------------------------------------------------------------------------------------------
# Figure 4: adaptive / funnel retrieval


def _strategy(setting: str) -> str:
    text = str(setting).lower()
    if text.startswith("exact"):
        return "exact"
    return "funnel" if text.startswith("funnel") else "adaptive"


_SEARCH_KEYS = ["method", "dims", "shortlists"]


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
    return stats


def _search_table(stats: pd.DataFrame, exact: pd.Series | None, metric: str) -> pd.DataFrame:
    """The figure's table of `_search_stats`: percentages, and FLOPs as a fraction of exact's."""
    table = stats.rename(columns={"mean": f"{metric} (%)", "mflops": "MFLOPs/query"})
    table[f"{metric} (%)"] = (100 * table[f"{metric} (%)"]).round(2)
    table["std"] = (100 * table["std"]).round(2)
    if "1nn" in table:
        table["1nn"] = (100 * table["1nn"]).round(2)
        table = table.rename(columns={"1nn": "1-NN (%)"})
    if exact is not None:
        table["FLOPs / exact"] = (table["MFLOPs/query"] / exact["mflops"]).round(4)
    table = table.rename(columns={"method": "search", "std": "std (%)"})
    return table.reset_index(drop=True)


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


def plot_adaptive_retrieval(
    adaptive_retrieval: pd.DataFrame,
    reference: Reference | None = None,
    *,
    runs: dict[str, dict[str, Any]] | None = None,
    source: str = "",
    name: str = "adaptive_retrieval",
    metric: str = "map@10",
) -> Drawn:
    """Retrieval mAP@10 against MFLOPs per query (log x) of exact, adaptive and funnel search.

    Left: absolute, exact search as the reference point (mean ± std over runs). Right: relative
    to exact search (MFLOPs and mAP@10 as fractions of exact's), with the paper's points.
    """
    what = f"adaptive retrieval, {METRIC_LABELS.get(metric, metric)} against cost per query"
    frame = adaptive_retrieval
    if frame.empty or metric not in frame.columns:
        return Drawn(name, what, None, missing=[f"no adaptive retrieval rows with {metric}"])
    frame = frame.dropna(subset=[metric, "mflops_per_query"])
    missing: list[str] = []
    stats = _search_stats(frame, metric)
    exact = stats[stats["method"] == "exact"]
    if exact.empty:
        missing.append("no exact search row: relative panel not drawn")
    for strategy in ("adaptive", "funnel"):
        if strategy not in set(stats["method"]):
            missing.append(f"no {strategy} rows")
    title = _title(frame, what, source)
    fig = _new_figure(2, height=4.4)
    ax, rel = fig.subplots(1, 2)
    ex = exact.iloc[0] if len(exact) else None

    _draw_search_costs(ax, stats, ex, relative=False)
    ax.set_xlabel("MFLOPs per query (log scale)")
    ax.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} (%)")
    ax.set_title("cost against quality")
    ax.legend(loc="lower right", fontsize=8)
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
        rel.set_title(f"relative to exact search; hollow: {PAPER}", fontsize=10)
        handles = [h for h, t in zip(*rel.get_legend_handles_labels()) if t.startswith("paper")]
        handles.append(Line2D([], [], color="0.3", marker="o", label="ours (filled, as left)"))
        rel.legend(handles=handles, loc="lower right", fontsize=8)
    else:
        rel.set_visible(False)
    footer = _footer(frame, runs)
    _finish(fig, title, footer)
    return Drawn(name, title, fig, _search_table(stats, ex, metric), missing, footer)


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
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("measured ms per query (log scale)")
        ax.set_ylabel(f"{label_text} (%)")
        _style_axes(ax)
    axes[0].legend(loc="lower right", fontsize=7)
    footer = _footer(frame, runs)
    _finish(fig, title, footer)
    table = stats.copy()
    for column in values:
        if column != "ms_per_query":
            table[column] = (100 * table[column]).round(2)
    exact = stats[stats["method"] == "exact"]
    if len(exact):
        table["speed-up vs exact"] = (exact["ms_per_query"].iloc[0] / stats["ms_per_query"]).round(
            1
        )
    return Drawn(name, title, fig, table, [], footer)


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
            _log2_axis(ax, ms["dim"])
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
    return Drawn(name, title, fig, table, missing, footer)


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
    return Drawn(name, title, fig, table.reset_index(drop=True), [], footer)


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
        return [function(frame, reference, runs=tables.runs, source=source, name=group)]
    return [
        function(
            frame[frame["study"].astype(str) == study].reset_index(drop=True),
            reference,
            runs=tables.runs,
            source=source,
            name=f"{group}__{_safe(study)}",
        )  # fmt: skip
        for study in studies
    ]


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
