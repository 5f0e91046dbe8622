"""`mrl-eval`'s printed summary: a per-dim table of the headline metrics, then the adaptive
studies, each number named as it is measured."""

from __future__ import annotations

from pathlib import Path

from mrl.runs.format import metric_label

# The printed per-dim table, most informative first; last, the share of queries whose prefix is
# all zero (their embeddings are zero vectors).
SUMMARY_METRICS = [
    "head_top1", "probe_top1", "1nn", "map_standard@10", "map@10", "precision@10", "recall@10",
    "zero_prefix",
]  # fmt: skip


# recall@k can reach at most min(k, R) / R (R: same-class database items); below this ceiling the
# column would read as ~0 at every dim, so it is printed after the table beside its ceiling.
RECALL_CEILING_IN_TABLE = 0.5


def format_speedup(speedup: float) -> str:
    """`1.75x`; below 1, said in words, since it means the method lost to exact search."""
    text = f"{speedup:.2f}x"
    return f"{text} — slower than exact search at this size" if speedup < 1 else text


def format_adaptive_classification(ac: dict, full_accuracy: float | None, n_queries: int) -> str:
    """The cascade's line: which queries its numbers are measured on, and what it achieves."""
    n_cal, n_report = ac.get("n_calibration"), ac.get("n_report")
    if n_cal is not None and n_report is not None:
        where = f"thresholds fitted on {n_cal} queries, measured on the other {n_report}"
        on = f" on those {n_report}"
    else:
        where, on = "measured on the held-out queries", ""
    # The per-dim table's head top-1 is over every query; the cascade's reference is the same
    # head on its report half only, so the two differ by that half's sampling.
    full = (
        f" ({100 * full_accuracy:.2f}% on all {n_queries} queries, as in the table)"
        if full_accuracy is not None
        else ""
    )
    smallest = ac.get("smallest_expected_dim")
    return (
        f"adaptive classification ({where}): largest head {100 * ac['largest_dim_accuracy']:.2f}%"
        f"{on}{full}; "
        + (
            f"the cascade matches it (within {100 * ac['tolerance']:g} pt) at expected dim "
            f"{smallest:.1f} ({ac['dim_reduction']:.1f}x smaller)"
            if smallest
            else "no threshold setting matches it"
        )
        + (
            f"; the smallest single head as accurate: dim {ac['smallest_fixed_dim']}"
            if ac.get("smallest_fixed_dim")
            else ""
        )
        + f"; oracle {100 * ac['oracle']['accuracy']:.2f}% at "
        f"expected dim {ac['oracle']['expected_dim']:.1f}"
    )


def format_summary(summary: dict, rows: list[dict], eval_dir: Path) -> str:
    """A per-dim table of the headline metrics, then the adaptive studies, as text.

    A recall@k whose ceiling (`summary["recall_ceiling"]`) is below `RECALL_CEILING_IN_TABLE`
    is printed after the table with that ceiling instead of as a column."""
    table = summary["per_dim"]
    ceilings = summary.get("recall_ceiling") or {}
    low = {m for m, c in ceilings.items() if c == c and c < RECALL_CEILING_IN_TABLE}
    present = [m for m in SUMMARY_METRICS if any(m in v for v in table.values())]
    shown = [m for m in present if m not in low]
    labels = {m: metric_label(m) for m in shown}
    widths = {m: max(8, len(labels[m])) for m in shown}
    by_dim = sorted(table.items(), key=lambda kv: int(kv[0]))
    lines = [f"{summary['method']} on {summary['checkpoint']}: per-dim metrics (%)"]
    lines.append("  ".join([f"{'dim':>6}", *(f"{labels[m]:>{widths[m]}}" for m in shown)]))
    for dim, values in by_dim:
        cells = [
            f"{100 * values[m]:{widths[m]}.2f}" if m in values else f"{'-':>{widths[m]}}"
            for m in shown
        ]
        lines.append("  ".join([f"{dim:>6}", *cells]))
    for m in present:
        if m in low:
            per_dim = ", ".join(f"{100 * v[m]:.2f}% at dim {d}" for d, v in by_dim if m in v)
            lines.append(
                f"{m} (ceiling {100 * ceilings[m]:.2f}% here: k / same-class database items): "
                f"{per_dim}"
            )
    ac = summary.get("adaptive_classification")
    if ac:
        largest = str(max(summary.get("nesting") or [0]))
        full = table.get(largest, {}).get("head_top1")
        lines.append(format_adaptive_classification(ac, full, summary.get("query_size", 0)))
    for r in summary.get("adaptive_retrieval", []):
        standard = r.get("map_standard@10")
        lines.append(
            f"{r['method']:>8} {r['dims']:>18} shortlists {r['shortlists']:>14}: "
            f"{metric_label('map@10')} {100 * r['map@10']:6.2f}  "
            + (
                f"{metric_label('map_standard@10')} {100 * standard:6.2f}  "
                if standard is not None
                else ""
            )
            + f"MFLOPs/query {r['mflops_per_query']:9.3f}  "
            f"speed-up {format_speedup(r['speedup_vs_exact'])}"
        )
    lines.append(f"tables in {eval_dir}")
    return "\n".join(lines)
