"""The numbers of the adaptive-classification figure: each run's Pareto front of the threshold
sweep, the oracle and matching points per method, and the figure's full and key-row tables."""

from __future__ import annotations

import pandas as pd

from mrl.report.plots.style import label
from mrl.report.plots.tables import methods_of


def nesting_dims(frame: pd.DataFrame) -> list[int]:
    """The nested heads' dims: those of the fixed-dim head rows, else the sweep's exit columns."""
    heads = frame.loc[frame["kind"] == "head", "expected_dim"].dropna()
    if len(heads):
        return sorted({int(d) for d in heads})
    cols = [c for c in frame.columns if str(c).startswith("exit@")]
    return sorted(int(str(c).split("@", 1)[1]) for c in cols)


def row_method(row: pd.Series) -> str:
    """The method of a row; MRL where the row does not say."""
    return str(row["method"]) if pd.notna(row["method"]) else "mrl"


def cascade_fronts(sweep: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame, pd.DataFrame]]:
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


def cascade_table(
    sweep: pd.DataFrame, head_stats: pd.DataFrame, oracle: pd.DataFrame, match: pd.DataFrame
) -> pd.DataFrame:
    """The numbers of the cascade figure: each run's Pareto front, the heads' mean ± std over
    runs, the oracle and the smallest expected size matching the largest head."""
    rows = []
    for run, method, _, front in cascade_fronts(sweep):
        rows += [
            {"run": run, "method": method, "kind": "sweep (Pareto front)",
             "target": row.get("target"), "expected_dim": row["expected_dim"],
             "accuracy": row["accuracy"]}
            for _, row in front.iterrows()
        ]  # fmt: skip
    for method in methods_of(head_stats):
        hs = head_stats[head_stats["method"] == method].sort_values("expected_dim")
        rows += [
            {"run": "mean over runs", "method": method, "kind": "fixed-dim head",
             "target": None, "expected_dim": row["expected_dim"], "accuracy": row["mean"],
             "std": row["std"], "n": row["n"]}
            for _, row in hs.iterrows()
        ]  # fmt: skip
    for kind, frame in (("oracle", oracle), ("matches largest head", match)):
        rows += [
            {"run": row["run"], "method": row_method(row), "kind": kind,
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


def marked_points(points: pd.DataFrame) -> pd.DataFrame:
    """Per method: mean and std over runs of `expected_dim` and `accuracy`, and the run count."""
    if points.empty:
        return pd.DataFrame(columns=["method", "dim", "dim_std", "acc", "acc_std", "n"])
    rows = points.assign(method=[row_method(r) for _, r in points.iterrows()])
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


def cascade_summary(
    head_stats: pd.DataFrame, oracle: pd.DataFrame, match: pd.DataFrame
) -> pd.DataFrame:
    """The key rows of the cascade figure per method: the largest head, the oracle and the
    smallest expected size matching the largest head (means over runs)."""
    rows = []
    for method in methods_of(head_stats) or sorted({row_method(r) for _, r in match.iterrows()}):
        hs = head_stats[head_stats["method"] == method].sort_values("expected_dim")
        if len(hs):
            top = hs.iloc[-1]
            rows.append({"method": label(method), "point": "largest fixed-dim head",
                         "expected_dim": float(top["expected_dim"]),
                         "accuracy (%)": 100 * top["mean"], "runs": int(top["n"])})  # fmt: skip
        for kind, frame in (("oracle", oracle), ("matches the largest head", match)):
            marked = marked_points(frame)
            for _, row in marked[marked["method"] == method].iterrows():
                rows.append({"method": label(method), "point": kind, "expected_dim": row["dim"],
                             "accuracy (%)": 100 * row["acc"], "runs": int(row["n"])})  # fmt: skip
    table = pd.DataFrame(rows)
    if not table.empty:
        table["expected_dim"] = table["expected_dim"].round(1)
        table["accuracy (%)"] = table["accuracy (%)"].round(2)
    return table
