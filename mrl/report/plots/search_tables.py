"""The numbers of the retrieval-search figures: search settings in reading order, their mean
quality and cost over runs, the figure's table, and the measured speed-up over exact search."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from mrl.report.plots.tables import group_stats

_SEARCH_KEYS = ["method", "dims", "shortlists"]
_SEARCH_ORDER = {"exact": 0, "adaptive": 1, "funnel": 2}


def search_strategy(setting: str) -> str:
    """The search strategy a setting's name says: `exact`, `funnel`, else `adaptive`."""
    text = str(setting).lower()
    if text.startswith("exact"):
        return "exact"
    return "funnel" if text.startswith("funnel") else "adaptive"


def _numbers(text: Any) -> tuple[float, ...]:
    """`"8>2048"` -> (8, 2048): dims and shortlists compared as numbers, not strings."""
    out = []
    for part in str(text).split(">"):
        try:
            out.append(float(part))
        except ValueError:
            out.append(math.inf)
    return tuple(out)


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


def search_stats(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per search setting (`method, dims, shortlists`): `metric` mean/std/n over runs, the mean
    MFLOPs per query (`mflops`) and the means of the timing and 1-NN columns present."""
    stats = group_stats(frame, _SEARCH_KEYS, metric)
    grouped = frame.groupby(_SEARCH_KEYS, dropna=False)
    stats = stats.merge(grouped["mflops_per_query"].mean().rename("mflops").reset_index(),
                        on=_SEARCH_KEYS)  # fmt: skip
    for column in ("ms_per_query", "speedup_vs_exact", "1nn"):
        if column in frame:
            stats = stats.merge(grouped[column].mean().reset_index(), on=_SEARCH_KEYS)
    return search_order(stats)


def search_table(stats: pd.DataFrame, exact: pd.Series | None, metric: str) -> pd.DataFrame:
    """The figure's table of `search_stats`: percentages, FLOPs as a fraction of exact's, and
    the measured time and speed-up where recorded."""
    table = stats.rename(columns={"mean": f"{metric} (%)", "mflops": "MFLOPs/query"})
    table[f"{metric} (%)"] = (100 * table[f"{metric} (%)"]).round(2)
    table["std"] = (100 * table["std"]).round(2)
    if "1nn" in table:
        table["1nn"] = (100 * table["1nn"]).round(2)
        table = table.rename(columns={"1nn": "1-NN (%)"})
    if exact is not None:
        table["FLOPs / exact"] = (table["MFLOPs/query"] / exact["mflops"]).round(4)
    measured = measured_speedup(stats, exact)
    if measured is not None:
        table["ms_per_query"] = table["ms_per_query"].round(4)
        table["measured speed-up"] = measured.round(2)
        table = table.drop(columns=[c for c in ("speedup_vs_exact",) if c in table])
        table = table.rename(columns={"ms_per_query": "ms/query (measured)"})
    table = table.rename(columns={"method": "search", "std": "std (%)"})
    return table.reset_index(drop=True)


def measured_speedup(stats: pd.DataFrame, exact: pd.Series | None) -> pd.Series | None:
    """Measured wall-clock speed-up over exact search per setting: exact's ms per query over
    the setting's, else the recorded `speedup_vs_exact`; None where no time was recorded."""
    if "ms_per_query" in stats and stats["ms_per_query"].notna().any() and exact is not None:
        if exact.get("ms_per_query") == exact.get("ms_per_query") and exact["ms_per_query"]:
            return exact["ms_per_query"] / stats["ms_per_query"]
    if "speedup_vs_exact" in stats and stats["speedup_vs_exact"].notna().any():
        return stats["speedup_vs_exact"].astype(float)
    return None
