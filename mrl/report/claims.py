"""`mrl-report --claims`: each claim of the paper, measured on recorded studies, with a verdict.

One row per claim: the paper's number (from the reference folder when there is one), the
measured number with a 95% interval over paired seeds (a t interval; none with one seed), and
`holds`, `does not hold`, `inconclusive` (the interval straddles the line) or `not measured`
(the studies hold no such numbers), plus what was compared. Written as `claims.md` (a table
people read) and `claims.csv` (the same rows for pandas).

Differences are in percentage points of top-1 (or mAP@10); "small dims" are the smallest dim
both methods were measured at.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mrl.eval.cascade import smallest_fixed_dim
from mrl.runs.format import CLEAN_SPLIT
from mrl.runs.reader import find_runs, load_run, run_values

COLUMNS = ["claim", "paper", "measured", "verdict", "compared", "note"]
# A difference counts as "level" within this many points (the paper's "about a point").
LEVEL_POINTS = 1.0
# "Far ahead" of a baseline: at least this many points at the smallest dim.
FAR_AHEAD_POINTS = 10.0
# t quantiles (two-sided 95%) by degrees of freedom; above 30 the normal quantile.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}  # fmt: skip


@dataclass
class Claim:
    """One row of `claims.md`."""

    claim: str
    paper: str
    measured: str
    verdict: str
    compared: str
    # What the ablations say about it (from `mrl-report --claims --notes`), written by people.
    note: str = ""


def not_measured(claim: str, why: str, paper: str = "-") -> Claim:
    """A claim the studies hold no numbers for."""
    return Claim(claim, paper, "-", "not measured", why)


@dataclass
class Interval:
    """Mean of paired differences (points) and its 95% interval (None with one pair)."""

    mean: float
    low: float | None
    high: float | None
    n: int

    def text(self) -> str:
        if self.low is None:
            return f"{self.mean:+.2f} (1 seed)"
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}] ({self.n} seeds)"


def t95(df: int) -> float:
    """Two-sided 95% quantile of Student's t with `df` degrees of freedom."""
    if df > 30:
        return 1.96
    return _T95.get(df) or _T95[max(k for k in _T95 if k <= df)]


def paired_interval(diffs: list[float]) -> Interval | None:
    """Mean and t interval of paired differences."""
    if not diffs:
        return None
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return Interval(mean, None, None, 1)
    half = t95(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return Interval(mean, mean - half, mean + half, len(diffs))


Values = dict[tuple[str, int, object], float]  # (method, dim, seed) -> value in points


def collect(roots: Iterable[Path], metric: str = "top1", split: str = CLEAN_SPLIT) -> Values:
    """Per (method, dim, seed) values of `metric` (percent) over the runs under `roots`."""
    out: Values = {}
    for root in map(Path.resolve, roots):
        for path in find_runs(root):
            run = load_run(path, root, [split])
            if run.status == "failed":
                continue
            for (method, dim), value in run_values(run, metric, split).items():
                out.setdefault((method, dim, run.seed), 100.0 * value)
    return out


def paired(values: Values, a: str, b: str, dim: int) -> Interval | None:
    """`a - b` at `dim`, paired by seed."""
    seeds = {s for m, d, s in values if m == a and d == dim} & {
        s for m, d, s in values if m == b and d == dim
    }
    diffs = [values[(a, dim, s)] - values[(b, dim, s)] for s in sorted(seeds, key=str)]
    return paired_interval(diffs)


def common_dims(values: Values, a: str, b: str) -> list[int]:
    dims = defaultdict(set)
    for m, d, _ in values:
        dims[m].add(d)
    return sorted(dims[a] & dims[b])


ONE_SEED = " (1 seed, no interval)"


def qualified(verdict: str, *intervals: Interval) -> str:
    """`verdict`, marked when any of its intervals rests on one seed."""
    one = any(i.low is None for i in intervals)
    return verdict + ONE_SEED if one and not verdict.endswith(ONE_SEED) else verdict


def verdict_at_least(interval: Interval, line: float) -> str:
    """Whether the difference is at least `line` points (unmarked; see `qualified`)."""
    if interval.low is None:
        return "holds" if interval.mean >= line else "does not hold"
    if interval.low >= line:
        return "holds"
    if interval.high < line:
        return "does not hold"
    return "inconclusive"


def verdict_level(interval: Interval) -> str:
    """Whether the difference is within `LEVEL_POINTS` of zero."""
    low, high = (
        (interval.mean, interval.mean) if interval.low is None else (interval.low, interval.high)
    )
    if -LEVEL_POINTS <= low and high <= LEVEL_POINTS:
        return "holds"
    if high < -LEVEL_POINTS or low > LEVEL_POINTS:
        return "does not hold"
    return "inconclusive"


def all_of(verdicts: list[str]) -> str:
    """One verdict for a claim made of several: any `does not hold` decides, then any
    `inconclusive`; `holds` only when every part holds."""
    if any(v.startswith("does not") for v in verdicts):
        return "does not hold"
    return "inconclusive" if "inconclusive" in verdicts else "holds"


def _paper(reference: dict[str, dict[int, float | None]] | None, a: str, b: str, dim: int) -> str:
    if not reference or a not in reference or b not in reference:
        return "-"
    va, vb = reference[a].get(dim), reference[b].get(dim)
    if va is None or vb is None:
        return "-"
    return f"{va - vb:+.2f} at {dim} ({va:.2f} vs {vb:.2f})"


def _smallest_paper_dim(reference: dict | None, a: str, b: str) -> int | None:
    if not reference or a not in reference or b not in reference:
        return None
    dims = [d for d in reference[a] if reference[a][d] is not None and reference[b].get(d)]
    return min(dims) if dims else None


def comparison_claims(values: Values, reference: dict | None) -> list[Claim]:
    """MRL against FF, MRL-E, SVD and random features."""
    rows: list[Claim] = []
    dims = common_dims(values, "mrl", "ff")
    if not dims:
        rows.append(
            not_measured(
                "MRL is as accurate as FF at every dim", "no study with both MRL and FF-m runs"
            )
        )
        rows.append(
            not_measured(
                "MRL is ahead of FF at the smallest dims", "no study with both MRL and FF-m runs"
            )
        )
    else:
        per_dim = {d: paired(values, "mrl", "ff", d) for d in dims}
        worst = min(per_dim.values(), key=lambda i: i.mean if i.low is None else i.low)
        verdicts = [verdict_at_least(i, -LEVEL_POINTS) for i in per_dim.values()]
        overall = all_of(verdicts)
        measured = "; ".join(f"{d}: {i.text()}" for d, i in per_dim.items())
        small = _smallest_paper_dim(reference, "MRL", "FF")
        rows.append(
            Claim(
                f"MRL is as accurate as FF at every dim (MRL - FF >= -{LEVEL_POINTS:g} pt)",
                _paper(reference, "MRL", "FF", small) if small else "-",
                measured,
                qualified(overall, *per_dim.values()),
                f"top-1, MRL vs FF-m at each dim m, paired by seed; worst {worst.text()}",
            )
        )
        d0 = dims[0]
        rows.append(
            Claim(
                "MRL is ahead of FF at the smallest dims",
                _paper(reference, "MRL", "FF", small) if small else "-",
                f"{d0}: {per_dim[d0].text()}",
                qualified(verdict_at_least(per_dim[d0], 0.0), per_dim[d0]),
                f"top-1 at dim {d0}",
            )
        )
    for base, name in (("svd", "SVD"), ("random", "random features")):
        bdims = common_dims(values, "mrl", base)
        if not bdims:
            rows.append(
                not_measured(
                    f"MRL is far ahead of {name} at small dims", f"no {base} baseline rows"
                )
            )
            continue
        interval = paired(values, "mrl", base, bdims[0])
        small = _smallest_paper_dim(reference, "MRL", "SVD") if base == "svd" else None
        rows.append(
            Claim(
                f"MRL is far ahead of {name} at small dims (>= {FAR_AHEAD_POINTS:g} pt)",
                _paper(reference, "MRL", "SVD", small) if small else "-",
                f"{bdims[0]}: {interval.text()}",
                qualified(verdict_at_least(interval, FAR_AHEAD_POINTS), interval),
                f"MRL top-1 vs {base} (probe on its features) at dim {bdims[0]}",
            )
        )
    edims = common_dims(values, "mrl", "mrl_e")
    if not edims:
        rows.append(
            not_measured(
                "MRL-E is below MRL at small dims only", "no study with both MRL and MRL-E runs"
            )
        )
    else:
        small_i, large_i = (
            paired(values, "mrl", "mrl_e", edims[0]),
            paired(values, "mrl", "mrl_e", edims[-1]),
        )
        below = verdict_at_least(small_i, 0.0)
        level = verdict_level(large_i)
        both = all_of([below, level])
        psmall = _smallest_paper_dim(reference, "MRL", "MRL-E")
        rows.append(
            Claim(
                "MRL-E is below MRL at small dims only",
                _paper(reference, "MRL", "MRL-E", psmall) if psmall else "-",
                f"MRL - MRL-E: {edims[0]}: {small_i.text()}; {edims[-1]}: {large_i.text()}",
                qualified(both, small_i, large_i),
                f"below at {edims[0]}: {below}; level (|diff| <= {LEVEL_POINTS:g}) at "
                f"{edims[-1]}: {level}",
            )
        )
    return rows


def _summaries(roots: Iterable[Path]) -> list[dict]:
    """`mrl-eval` summaries; one without adaptive retrieval rows takes them from the
    `adaptive_retrieval.csv` beside it (what the retrieval benchmark writes)."""
    found = []
    for root in roots:
        for path in sorted(Path(root).glob("**/eval/summary.json")):
            try:
                summary = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            table = path.with_name("adaptive_retrieval.csv")
            if not summary.get("adaptive_retrieval") and table.is_file():
                summary["adaptive_retrieval"] = _retrieval_rows(table)
            found.append(summary)
    return found


def _retrieval_rows(path: Path) -> list[dict]:
    """Rows of an adaptive retrieval table with numbers as floats and the FLOPs ratio to the
    exact row (computed from `mflops_per_query` where the table does not carry it)."""
    import pandas as pd

    frame = pd.read_csv(path)
    rows = frame.to_dict("records")
    exact = next((r for r in rows if r["method"] == "exact"), None)
    for r in rows:
        if "flops_ratio_vs_exact" not in r and exact is not None:
            r["flops_ratio_vs_exact"] = exact["mflops_per_query"] / r["mflops_per_query"]
        r["dims"] = str(r["dims"])
    return rows


def _tolerance(cascade: dict) -> float:
    """The cascade's "as accurate" tolerance (a fraction); summaries before it was recorded
    used 0.001."""
    return float(cascade.get("tolerance", 0.001))


def _points(cascades: list[dict]) -> str:
    """The tolerance of the cascades in points, e.g. "0.1" (several values: "0.1/0.2")."""
    return "/".join(f"{100 * t:g}" for t in sorted({_tolerance(c) for c in cascades}))


def adaptive_claims(roots: list[Path]) -> list[Claim]:
    """Adaptive classification and retrieval, from `mrl-eval`'s summaries of MRL models."""
    summaries = [s for s in _summaries(roots) if s.get("method") == "mrl"]
    rows = []
    cascades = [
        s["adaptive_classification"]
        for s in summaries
        if (s.get("adaptive_classification") or {}).get("dim_reduction")
    ]
    if cascades:
        reductions = [c["dim_reduction"] for c in cascades]
        rows.append(
            Claim(
                "Adaptive classification matches the largest head at a smaller expected dim",
                "14x smaller (ImageNet-1K)",
                f"{statistics.fmean(reductions):.1f}x smaller (mean of "
                f"{len(reductions)} models; best {max(reductions):.1f}x)",
                "holds" if min(reductions) > 1 else "does not hold",
                f"expected dim of the cascade at the largest head's top-1 (within "
                f"{_points(cascades)} pt)",
            )
        )
        pairs = []
        for c in cascades:
            heads = {int(d): acc for d, acc in c["per_head_accuracy"].items()}
            fixed = smallest_fixed_dim(heads, c["largest_dim_accuracy"], _tolerance(c))
            if fixed is not None:
                pairs.append((c["smallest_expected_dim"], fixed))
        if pairs:
            smaller = sum(e < f for e, f in pairs)
            rows.append(
                Claim(
                    "Adaptive classification is smaller than the smallest single head as accurate",
                    "-",
                    f"expected dim {statistics.fmean(e for e, _ in pairs):.1f} against a fixed "
                    f"dim of {statistics.fmean(f for _, f in pairs):.1f} (mean of {len(pairs)} "
                    f"models; the cascade is smaller for {smaller})",
                    "holds" if smaller == len(pairs) else "does not hold" if not smaller
                    else "inconclusive",
                    f"the cascade's expected dim against the smallest head within "
                    f"{_points(cascades)} pt of the largest head's top-1, on the same report "
                    "half of the test set",
                )
            )  # fmt: skip
    else:
        rows.append(
            not_measured(
                "Adaptive classification matches the largest head at a smaller expected dim",
                "no mrl-eval summary with the adaptive classification study",
                paper="14x smaller (ImageNet-1K)",
            )
        )
    studies = [s for s in summaries if s.get("adaptive_retrieval")]
    if studies:
        parts, kept, faster, sizes = [], [], [], []
        for summary in studies:
            rows_ = summary["adaptive_retrieval"]
            n_db = summary.get("database_size")
            exact = next(r for r in rows_ if r["method"] == "exact")
            fits = [
                r
                for r in rows_
                if r["method"] != "exact" and r["map@10"] >= exact["map@10"] - LEVEL_POINTS / 100
            ]
            if fits:
                cheapest = max(fits, key=lambda r: r["flops_ratio_vs_exact"])
                parts.append(
                    f"{cheapest['method']} {cheapest['dims']}: mAP@10 "
                    f"{100 * cheapest['map@10']:.2f} vs {100 * exact['map@10']:.2f}, "
                    f"{cheapest['flops_ratio_vs_exact']:.1f}x fewer FLOPs, "
                    f"{cheapest['speedup_vs_exact']:.1f}x measured"
                    + (f" (N_db {n_db:,})" if n_db else "")
                )
                fastest = max(fits, key=lambda r: r["speedup_vs_exact"])
                if fastest is not cheapest:
                    stage = fastest.get("first_stage")
                    parts[-1] += (
                        f", fastest measured: {fastest['method']} {fastest['dims']}"
                        + (f" on {stage}" if isinstance(stage, str) else "")
                        + f" {fastest['speedup_vs_exact']:.1f}x at mAP@10 "
                        f"{100 * fastest['map@10']:.2f}"
                    )
            kept.append(bool(fits))
            faster.append(bool(fits) and cheapest["speedup_vs_exact"] > 1.0)
            sizes.append(n_db)
        rows.append(
            Claim(
                "Adaptive retrieval keeps mAP@10 at a fraction of the cost",
                "128x fewer FLOPs (funnel), 14x real speed-up (HNSW)",
                "; ".join(parts) or "-",
                ("holds" if all(kept) else "does not hold") + _wall_clock_note(faster, sizes),
                f"the cheapest adaptive or funnel setting within {LEVEL_POINTS:g} pt of exact "
                "mAP@10 (its measured speed-up alongside)",
            )
        )
    else:
        rows.append(
            not_measured(
                "Adaptive retrieval keeps mAP@10 at a fraction of the cost",
                "no mrl-eval summary with the adaptive retrieval study",
                paper="128x fewer FLOPs (funnel)",
            )
        )
    return rows


def _wall_clock_note(faster: list[bool], sizes: list[int | None]) -> str:
    """What the measured times add to the FLOPs verdict."""
    if all(faster):
        return ""
    if not any(faster):
        return " for FLOPs; not faster in wall-clock time here"
    where = ", ".join(f"{n:,}" for f, n in zip(faster, sizes) if f and n)
    return f" for FLOPs; faster in wall-clock time only on the larger database (N_db {where})"


def robustness_drops(roots: Iterable[Path]) -> list[dict]:
    """Relative top-1 drop (percent) of each run's own heads on each corrupted test set: one row
    per (method, dim, seed, corruption, severity). An FF-m run counts at its own dim only."""
    rows = []
    prefix = CLEAN_SPLIT + "-"
    for root in map(Path.resolve, roots):
        for path in find_runs(root):
            run = load_run(path, root, ["*"])
            own = [
                r for r in run.rows
                if r["source"] == "eval" and r["plain"] == "head_top1" and r["method"] == run.method
                and (run.method != "ff" or r["dim"] in run.dims)
            ]  # fmt: skip
            clean = {r["dim"]: r["value"] for r in own if r["split"] == CLEAN_SPLIT}
            for r in own:
                if not r["split"].startswith(prefix):
                    continue  # the clean split
                corruption, _, severity = r["split"].removeprefix(prefix).rpartition("-")
                if severity.isdigit() and clean.get(r["dim"]):  # not an image folder's set
                    rows.append({"method": run.method, "dim": r["dim"], "seed": run.seed,
                                 "corruption": corruption, "severity": int(severity),
                                 "drop": 100.0 * (1.0 - r["value"] / clean[r["dim"]])})  # fmt: skip
    return rows


def robustness_claim(drops: list[dict]) -> Claim:
    """MRL's relative drop under corruption against FF-m's at the same dims, per severity.

    Per seed and severity, each method's drop is averaged over the (dim, corruption) cells both
    methods have; the difference FF - MRL is then paired by seed. Holds when MRL's drop exceeds
    FF's by at most `LEVEL_POINTS` at every severity.
    """
    name = "MRL is as robust as the full representation"
    cells: dict[tuple, dict[tuple, float]] = defaultdict(dict)
    for r in drops:
        cells[(r["method"], r["seed"], r["severity"])][(r["dim"], r["corruption"])] = r["drop"]
    severities = sorted(
        {s for m, _, s in cells if m == "mrl"} & {s for m, _, s in cells if m == "ff"}
    )
    if not severities:
        return not_measured(name, "needs mrl-eval with corruptions of both MRL and FF-m runs",
                            paper="level")  # fmt: skip
    parts, intervals, verdicts = [], [], []
    for sev in severities:
        mrl_means, ff_means, diffs = [], [], []
        seeds = {s for m, s, v in cells if v == sev and m == "mrl"} & {
            s for m, s, v in cells if v == sev and m == "ff"
        }
        for seed in sorted(seeds, key=str):
            mrl, ff = cells[("mrl", seed, sev)], cells[("ff", seed, sev)]
            shared = mrl.keys() & ff.keys()
            if not shared:
                continue
            mrl_means.append(statistics.fmean(mrl[k] for k in shared))
            ff_means.append(statistics.fmean(ff[k] for k in shared))
            diffs.append(ff_means[-1] - mrl_means[-1])
        interval = paired_interval(diffs)
        if interval is None:
            continue
        intervals.append(interval)
        verdicts.append(verdict_at_least(interval, -LEVEL_POINTS))
        parts.append(f"severity {sev}: MRL {statistics.fmean(mrl_means):.1f}% vs FF "
                     f"{statistics.fmean(ff_means):.1f}%, FF - MRL {interval.text()}")  # fmt: skip
    if not intervals:
        return not_measured(name, "no dim and corruption measured for both MRL and FF-m")
    overall = all_of(verdicts)
    return Claim(
        name,
        "level",
        "; ".join(parts),
        qualified(overall, *intervals),
        "relative drop of head top-1 on the corrupted test sets, MRL at dim m against FF-m, "
        f"mean over dims and corruptions, paired by seed; holds if MRL's drop is at most "
        f"{LEVEL_POINTS:g} pt larger (per dim: robustness.md)",
    )


def robustness_markdown(drops: list[dict]) -> str:
    """Mean relative drop (percent, over corruptions and seeds) per method and severity x dim."""
    table: dict[tuple, list[float]] = defaultdict(list)
    seeds: dict[str, set] = defaultdict(set)
    for r in drops:
        table[(r["method"], r["severity"], r["dim"])].append(r["drop"])
        seeds[r["method"]].add(r["seed"])
    dims = sorted({d for _, _, d in table})
    keys = sorted({k[:2] for k in table})
    lines = [
        "# Relative top-1 drop under corruption (%)",
        "",
        "1 - top1(corrupted) / top1(clean) of each model's own head, mean over the corruptions "
        "and seeds; FF is FF-m at its own dim m.",
        "",
        "| method | severity | " + " | ".join(f"dim {d}" for d in dims) + " | seeds |",
        "|---|---:|" + "---:|" * len(dims) + "---:|",
    ]
    for method, sev in keys:
        cells = [table.get((method, sev, d)) for d in dims]
        shown = [f"{statistics.fmean(c):.2f}" if c else "" for c in cells]
        lines.append(f"| {method} | {sev} | " + " | ".join(shown) + f" | {len(seeds[method])} |")
    return "\n".join(lines) + "\n"


def text_claim(path: Path | None) -> Claim:
    """Matryoshka fine-tuning against truncated zero-shot MiniLM at the smallest dim."""
    name = "Matryoshka text fine-tuning beats truncated zero-shot at small dims"
    if path is None or not path.is_file():
        return not_measured(name, "no reverse_dictionary.csv")
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["metric"].startswith("map@")]
    table = {(r["method"], int(r["dim"])): float(r["value"]) for r in rows}
    dims = sorted({d for m, d in table if m == "mrl"} & {d for m, d in table if m == "zero_shot"})
    if not dims:
        return not_measured(name, f"{path} has no mrl and zero_shot rows")
    d = dims[0]
    gain = 100 * (table[("mrl", d)] - table[("zero_shot", d)])
    return Claim(
        name,
        "-",
        f"{d}: {gain:+.2f} pt mAP ({100 * table[('mrl', d)]:.2f} vs "
        f"{100 * table[('zero_shot', d)]:.2f}), one seed",
        ("holds" if gain > 0 else "does not hold") + " (1 seed, no interval)",
        f"reverse dictionary, {rows[0]['metric']} at dim {d}",
    )


def measure_claims(
    roots: list[Path],
    reference: dict | None = None,
    text: Path | None = None,
    drops: list[dict] | None = None,
) -> list[Claim]:
    """Every claim, measured on the studies under `roots` (`drops`: their
    `robustness_drops`, when already read)."""
    values = collect(roots)
    return [
        *comparison_claims(values, reference),
        *adaptive_claims(roots),
        robustness_claim(robustness_drops(roots) if drops is None else drops),
        text_claim(text),
    ]


def claims_markdown(claims: list[Claim], sources: list[Path]) -> str:
    """The claims table as Markdown."""
    lines = [
        "# The paper's claims, measured",
        "",
        "From: " + ", ".join(f"`{s}`" for s in sources) + ". Differences in points; 95% "
        "intervals over paired seeds (t); `inconclusive`: the interval straddles the line.",
        "",
        "| claim | paper | measured | verdict | compared | note |",
        "|---|---|---|---|---|---|",
    ]
    for c in claims:
        cells = [c.claim, c.paper, c.measured, f"**{c.verdict}**", c.compared, c.note]
        lines.append("| " + " | ".join(x.replace("|", "/") for x in cells) + " |")
    return "\n".join(lines) + "\n"


def claims_csv(claims: list[Claim]) -> str:
    """The claims as CSV."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(c.__dict__ for c in claims)
    return buffer.getvalue()
