"""Storage cost of Matryoshka embeddings: truncation x quantization against retrieval quality.

For every nesting dim m and precision (float32, float16, int8 with per-dim ranges calibrated on
the database, sign bits), the database's normalised m-prefixes are stored as codes and searched
with the queries' codes (inner product of the codes; Hamming distance for bits). Three ways to
rank, each a row:

- `none`: the codes' own top 10;
- `prefix`: the codes' top `--rescore-k` re-scored by the float query against the stored codes
  (int8 bucket centres, 0/1 bits; sentence-transformers' rescoring), float codes skip this;
- `full`: the codes' top `--rescore-k` re-ranked by the full-dim float vectors (read from disk:
  the Matryoshka funnel; memory holds the codes only, the disk the full vectors too).

Columns: `dim, precision, rescore, bytes_per_vector` (in memory), `disk_bytes_per_vector`
(with the full vectors `full` reads), `map@10, precision@10, recall@10`, and the share of codes
equal to sentence-transformers' `quantize_embeddings` on the same prefixes (`st_codes_equal`;
int8 and binary). Writes `<out>/storage_cost.csv`, `<out>/pareto.md` (the rows no other row
beats on both bytes and mAP@10, per rescoring mode) and `<out>/storage.png`, `--out` defaulting
to `$MRL_OUTPUT_ROOT/storage` (`$MRL_OUTPUT_ROOT` defaulting to `outputs`).

    .venv/bin/python experiments/studies/storage_cost.py \
        --embeddings outputs/fmnist_2048/main/embeddings [--out experiments/results/storage]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from mrl.eval.embeddings import read_split
from mrl.eval.funnel import rerank
from mrl.eval.metrics import neighbor_labels_of, retrieval_metrics
from mrl.eval.quantize import (
    PRECISIONS,
    binary_codes,
    bytes_per_vector,
    dequantize_int8,
    int8_codes,
    int8_ranges,
    unpack_bits,
)
from mrl.eval.search import Searcher, normalize_prefix, prefix_norms
from mrl.report.paths import output_root
from mrl.runs.files import write_csv
from mrl.runs.markdown import markdown_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import largest_database_split  # noqa: E402  (the experiment scripts' helpers)

K = 10


def codes_of(precision: str, db: np.ndarray, q: np.ndarray):
    """(database codes, query codes, ranges or None) of normalised prefixes."""
    if precision == "float32":
        return db, q, None
    if precision == "float16":
        return db.astype(np.float16), q.astype(np.float16), None
    if precision == "int8":
        ranges = int8_ranges(db)
        return int8_codes(db, ranges), int8_codes(q, ranges), ranges
    return binary_codes(db), binary_codes(q), None


def shortlist(precision: str, db_codes, q_codes, k: int) -> np.ndarray:
    """Top-k database rows of each query by the codes' own score."""
    if precision == "binary":
        searcher = Searcher(db_codes_as_rows(db_codes), backend="binary", use_gpu=False)
        return searcher.search(q_codes_as_rows(q_codes), k)[1]
    searcher = Searcher(db_codes.astype(np.float32), backend="exact", use_gpu=False)
    return searcher.search(q_codes.astype(np.float32), k)[1]


def db_codes_as_rows(codes: np.ndarray) -> np.ndarray:
    # The binary backend packs sign bits itself: hand it 0/1 floats that reproduce the codes.
    return unpack_bits(codes, codes.shape[1] * 8)


q_codes_as_rows = db_codes_as_rows


def rescore_with(values: np.ndarray, q: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Candidates re-ranked by the inner product of the float query with `values` rows."""
    ones = np.ones(values.shape[0], dtype=np.float32)  # plain inner product: no norm division
    return rerank(values, ones, q, candidates, K)[1]


def pareto(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows that no other row beats on both fewer bytes and higher mAP@10."""
    frame = frame.sort_values(["bytes_per_vector", "map@10"], ascending=[True, False])
    best, keep = -1.0, []
    for i, row in frame.iterrows():
        if row["map@10"] > best:
            keep.append(i)
            best = row["map@10"]
    return frame.loc[keep]


def draw(frame: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"float32": "#1f77b4", "float16": "#17becf", "int8": "#ff7f0e", "binary": "#d62728"}
    styles = {"none": "-", "prefix": "--", "full": ":"}
    fig, ax = plt.subplots(figsize=(8, 5))
    for (precision, rescore), group in frame.groupby(["precision", "rescore"]):
        group = group.sort_values("bytes_per_vector")
        ax.plot(group["bytes_per_vector"], 100 * group["map@10"], styles[rescore], marker="o",
                markersize=3, color=colours[precision],
                label=f"{precision}, rescore {rescore}")  # fmt: skip
    for rescore, marker in (("none", "s"), ("full", "D")):
        front = pareto(frame[frame["rescore"].isin(["none", "prefix"] if rescore == "none"
                                                   else ["none", "prefix", "full"])])  # fmt: skip
        ax.plot(front["bytes_per_vector"], 100 * front["map@10"], marker, markersize=9,
                markerfacecolor="none", markeredgecolor="black", linestyle="none",
                label="Pareto front, memory only" if rescore == "none"
                else "Pareto front, with full vectors on disk")  # fmt: skip
    ref = frame[(frame["precision"] == "float32") & (frame["rescore"] == "none")]
    ref = ref[ref["dim"] == ref["dim"].max()]["map@10"].iloc[0]
    ax.axhline(100 * ref, color="0.4", linewidth=0.8)
    ax.axhline(100 * ref - 1, color="0.4", linewidth=0.8, linestyle=":")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bytes per vector in memory (log scale)")
    ax.set_ylabel("mAP@10 (%)")
    ax.set_title("Storage against quality: every nesting dim x precision (lines: float32 at the "
                 "full dim, and 1 point below)", fontsize=9)  # fmt: skip
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--embeddings", required=True, help="an mrl-eval embeddings folder")
    parser.add_argument("--database", default=None, help="database split (default: the only "
                        "or the largest database* split)")  # fmt: skip
    parser.add_argument("--db-rows", type=int, default=55000,
                        help="first N database rows (55000: the un-augmented training images "
                        "of an augmented-copies database)")  # fmt: skip
    parser.add_argument("--rescore-k", type=int, default=100)
    parser.add_argument("--dims", type=int, nargs="+", default=None)
    parser.add_argument("--out", default=str(output_root() / "storage"),
                        help="the output folder (default: %(default)s)")  # fmt: skip
    args = parser.parse_args(argv)
    emb = Path(args.embeddings)
    largest = largest_database_split(emb)
    if largest is None:
        parser.error(f"no database split under {emb}: run mrl-eval first")
    db_dir = emb / args.database if args.database else largest
    db_all, db_y = read_split(db_dir)
    db_full, db_y = db_all[: args.db_rows], db_y[: args.db_rows]
    queries, q_y = read_split(emb / "query", mmap=False)
    queries = np.asarray(queries, dtype=np.float32)
    top = db_full.shape[1]
    dims = args.dims or [m for m in (8, 16, 32, 64, 128, 256, 512, 1024, 2048) if m <= top]
    full_norms = prefix_norms(db_full, [top])[top]
    q_full = normalize_prefix(queries, top)
    try:
        from sentence_transformers.util.quantization import quantize_embeddings
    except ImportError:
        quantize_embeddings = None
    rows = []
    print(f"database {db_dir.name}[:{len(db_full):,}] x {top}, queries {len(queries):,}")
    for m in dims:
        db = normalize_prefix(db_full, m)
        q = normalize_prefix(queries, m)
        for precision in PRECISIONS:
            db_codes, q_codes, ranges = codes_of(precision, db, q)
            st_equal = ""
            if quantize_embeddings is not None and precision in ("int8", "binary"):
                kind = "int8" if precision == "int8" else "ubinary"
                theirs = quantize_embeddings(q, kind, calibration_embeddings=db)
                st_equal = float(np.mean(theirs == q_codes))
            cand = shortlist(precision, db_codes, q_codes, args.rescore_k)
            ranked = {"none": cand[:, :K], "full": rerank(db_full, full_norms, q_full, cand, K)[1]}
            if precision == "int8":
                ranked["prefix"] = rescore_with(dequantize_int8(db_codes, ranges), q, cand)
            elif precision == "binary":
                ranked["prefix"] = rescore_with(unpack_bits(db_codes, m), q, cand)
            for rescore, idx in ranked.items():
                metrics = retrieval_metrics(neighbor_labels_of(idx, db_y, q_y), q_y, db_y, [K])
                row = {
                    "dim": m, "precision": precision, "rescore": rescore,
                    "rescore_k": args.rescore_k if rescore != "none" else 0,
                    "bytes_per_vector": bytes_per_vector(m, precision),
                    "disk_bytes_per_vector": bytes_per_vector(m, precision)
                    + (2 * top if rescore == "full" else 0),
                    **{k: round(v, 5) for k, v in metrics.items()},
                    "st_codes_equal": st_equal,
                }  # fmt: skip
                rows.append(row)
                print(f"  dim {m:>4} {precision:<7} rescore {rescore:<6} "
                      f"{row['bytes_per_vector']:>6g} B  mAP@10 {100 * row['map@10']:.2f}",
                      flush=True)  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "storage_cost.csv", rows)
    frame = pd.DataFrame(rows)
    ref = frame[(frame.precision == "float32") & (frame.rescore == "none") & (frame.dim == top)]
    ref_map = float(ref["map@10"].iloc[0])
    lines = [f"# Storage against quality ({db_dir.name}[:{len(db_full)}], {len(queries)} queries)",
             "", f"float32 at {top} dims: mAP@10 {100 * ref_map:.2f} with "
             f"{bytes_per_vector(top, 'float32'):g} bytes per vector.", ""]  # fmt: skip
    modes_of = {
        "memory only (rescore none or prefix)": ["none", "prefix"],
        "with the full vectors on disk for re-ranking": ["none", "prefix", "full"],
    }
    for label, modes in modes_of.items():
        sub = frame[frame.rescore.isin(modes)]
        within = sub[sub["map@10"] >= ref_map - 0.01].sort_values("bytes_per_vector")
        smallest = within.iloc[0] if len(within) else None
        lines += [f"## {label}", ""]
        if smallest is not None:
            ratio = bytes_per_vector(top, "float32") / smallest["bytes_per_vector"]
            lines += [f"Smallest within 1 point of float32 at {top}: {smallest['precision']} at "
                      f"{smallest['dim']} dims, rescore {smallest['rescore']}: "
                      f"{smallest['bytes_per_vector']:g} bytes ({ratio:.0f}x smaller), mAP@10 "
                      f"{100 * smallest['map@10']:.2f}.", ""]  # fmt: skip
        front = pareto(sub)
        body = [[f"{r['bytes_per_vector']:g}", r["dim"], r["precision"], r["rescore"],
                 f"{100 * r['map@10']:.2f}", f"{100 * r['recall@10']:.3f}"]
                for _, r in front.iterrows()]  # fmt: skip
        header = ["bytes", "dim", "precision", "rescore", "mAP@10 (%)", "recall@10 (%)"]
        lines += markdown_table(header, body, "rrll")
        lines.append("")
    (out / "pareto.md").write_text("\n".join(lines))
    draw(frame, out / "storage.png")
    print(f"wrote {out}/storage_cost.csv, pareto.md, storage.png")


if __name__ == "__main__":
    main(sys.argv[1:])
