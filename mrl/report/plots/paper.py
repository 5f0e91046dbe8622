"""The paper's numbers as the figures overlay them: one method's per-dim curve, the paper's
largest dim, and the labels and note of the overlay."""

from __future__ import annotations

import pandas as pd

from mrl.report.load import Reference

PAPER = "paper (ResNet-50, ImageNet-1K)"
NO_REFERENCE = "no paper reference (--reference or $MRL_REFERENCE_DIR): overlay not drawn"


def paper_series(reference: Reference | None, metric: str, method: str) -> pd.DataFrame:
    """The paper's `dim, value` of `method` on `metric`, dims ascending (empty without one)."""
    if reference is None or reference.curves.empty:
        return pd.DataFrame(columns=["dim", "value"])
    rows = reference.curves[
        (reference.curves["metric"] == metric) & (reference.curves["method"] == method)
    ]
    return rows.sort_values("dim")[["dim", "value"]]


def paper_largest_dim(reference: Reference | None) -> int | None:
    """The largest dim of the paper's curves; None without them."""
    if reference is None or reference.curves.empty:
        return None
    return int(reference.curves["dim"].max())
