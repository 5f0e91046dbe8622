"""Quality retention: each dim's score as a percentage of the same model's score at its full
(largest) dim, the way Matryoshka text models are judged (e.g. 64 dims keep ~96% of 768's)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def retention(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """For tidy rows `{"method", "dim", "metric", "value", ...}`: the same rows with
    `retention` (percent of the value at that method's and metric's largest dim) and `full_dim`.

    A method and metric whose largest-dim value is zero or missing get no retention rows.
    """
    rows = [r for r in rows if r.get("value") is not None]
    full: dict[tuple[Any, Any], dict[str, Any]] = {}
    for r in rows:
        key = (r["method"], r["metric"])
        if key not in full or int(r["dim"]) > int(full[key]["dim"]):
            full[key] = r
    out = []
    for r in rows:
        top = full[(r["method"], r["metric"])]
        if top["value"]:
            out.append({**r, "retention": 100.0 * r["value"] / top["value"],
                        "full_dim": int(top["dim"])})  # fmt: skip
    return out
