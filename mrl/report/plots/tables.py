"""The numbers a figure draws and shows beside it: mean ± std per group, the display table of
methods x dims, and the notes of the methods and dims a figure lacks."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from mrl.report.plots.style import label
from mrl.runs.format import method_sort_key as method_key


def group_stats(frame: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """Mean, sample std (NaN for one value) and count of `value` per `by` group."""
    if frame.empty:
        return pd.DataFrame(columns=[*by, "mean", "std", "n"])
    grouped = frame.groupby(by, dropna=False)[value]
    out = grouped.agg(["mean", "std", "count"]).reset_index()
    return out.rename(columns={"count": "n"})


def _cell(mean: float, std: float, n: int, scale: float = 100.0, digits: int = 2) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    text = f"{scale * mean:.{digits}f}"
    if n > 1 and std == std:
        text += f" ± {scale * std:.{digits}f} (n={n})"
    return text


def pivot_by_dim(stats: pd.DataFrame, index: list[str], scale: float = 100.0) -> pd.DataFrame:
    """Display table: `index` rows x dims, cells "mean ± std (n)" (in percent by default)."""
    if stats.empty:
        return pd.DataFrame()
    numbers = zip(stats["mean"], stats["std"], stats["n"])
    cells = stats.assign(cell=[_cell(m, s, int(n), scale) for m, s, n in numbers])
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


def methods_of(frame: pd.DataFrame, column: str = "method") -> list[str]:
    """The methods in `frame`, in the paper's order."""
    return sorted({str(m) for m in frame[column].dropna()}, key=method_key)


def _dims_text(dims: Iterable[int]) -> str:
    dims = sorted(dims)
    return f"dim {dims[0]}" if len(dims) == 1 else "dims " + ", ".join(str(d) for d in dims)


def declared_methods(frame: pd.DataFrame, runs: dict[str, dict[str, Any]] | None) -> set[str]:
    """The methods the runs behind `frame` declared (`declared_methods` of their provenance)."""
    keys = frame["run"].dropna().unique() if "run" in frame else []
    runs = runs or {}
    return {str(m) for k in keys for m in (runs.get(k) or {}).get("declared_methods") or []}


def missing_methods(
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


def missing_dims(frame: pd.DataFrame, what: str = "") -> list[str]:
    """Notes like "dim 64 missing for ff": each method lacking a dim another method has."""
    notes = []
    all_dims = set(frame["dim"])
    for method in methods_of(frame):
        have = set(frame.loc[frame["method"] == method, "dim"])
        lacking = all_dims - have
        if lacking:
            notes.append(f"{_dims_text(lacking)} missing for {method}{what}")
    return notes
