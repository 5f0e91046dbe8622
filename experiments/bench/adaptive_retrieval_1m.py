"""Adaptive and funnel retrieval at 1M x 2048 on real Matryoshka embeddings, side by side with
exact search and HNSW at the full dim: quality, time per query (batch and single-query), index
build time and size, peak memory.

The embeddings are an `mrl-eval` encoding of the `fmnist/retrieval_2048` model: the database is
Fashion-MNIST's 55k training images and 18 seeded augmented copies of each (1.045M rows, float32,
memory-mapped), the queries are the 10k test images. It is not ImageNet. Build them with

    mrl-train experiment=fmnist/retrieval_2048 run_id=main
    mrl-eval ckpt_path=outputs/fmnist_2048/main/checkpoints/last.ckpt \
        database.augmented_copies=18 dtype=float32 probe.enabled=false retrieval.enabled=false \
        adaptive_retrieval.enabled=false adaptive_classification.enabled=false \
        robustness.corruptions=[]

then run (a rerun continues: finished settings are skipped, their rows kept)

    .venv/bin/python experiments/bench/adaptive_retrieval_1m.py \
        --embeddings outputs/fmnist_2048/main/embeddings

Its table goes to `--out` (default `$MRL_OUTPUT_ROOT/bench/adaptive_retrieval_1m.csv`,
`$MRL_OUTPUT_ROOT` defaulting to `outputs`; the recorded one is
`experiments/results/fmnist_2048/eval/adaptive_retrieval.csv`, written only when `--out` names it).

Every setting is one cascade: a first stage (exact flat, HNSW, IVF with a coarse quantizer on a
shorter prefix, or binary codes by Hamming distance) on the contiguous normalised prefix of
`dims[0]`, then re-ranks that gather the candidates' rows from the memory-mapped embeddings.
For each it records mAP@10 / P@10 / recall@10 (labels), recall@10 against exact search at 2048
(the same neighbours), time per query over all queries in batches, single-query latency (p50,
p99 over --latency-queries queries searched one at a time), build seconds (the index, or
loading it, and the prefix norms of the later steps), index bytes, the first stage's distance
computations per query where FAISS counts them, the paper's MFLOPs model, and the peak resident
memory while the setting ran (less the interpreter's own, measured before any data is read)
against the embedding bytes plus its index and norm bytes. Speed-ups are against exact search
at 2048 as timed by the invocation that ran it first (a
rerun that adds settings keeps that row and divides by it).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

# The scripts beside this file, and the experiments' shared helpers.
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from _common import largest_database_split, read_csv_rows  # noqa: E402
from retrieval_scale import Stage, rss_bytes  # noqa: E402

from mrl.eval.embeddings import read_split  # noqa: E402
from mrl.eval.funnel import FunnelIndex, default_funnel, funnel_mflops, overlap_recall  # noqa: E402
from mrl.eval.index_cache import embeddings_fingerprint  # noqa: E402
from mrl.eval.metrics import neighbor_labels_of, retrieval_metrics  # noqa: E402
from mrl.eval.search import normalize_prefix  # noqa: E402
from mrl.report.paths import output_root  # noqa: E402
from mrl.runs.files import atomic_write_text, write_csv  # noqa: E402

K = 10
MIB = 1 << 20


def settings(args, nesting: list[int], n_db: int) -> list[dict]:
    """The cascades to compare, cheapest to build first after the exact baseline."""
    top = nesting[-1]
    out = [{"method": "exact", "first_stage": "exact", "dims": [top], "shortlists": [K]}]
    hnsw = {
        "hnsw_m": args.hnsw_m,
        "ef_search": args.ef_search,
        "ef_construction": args.ef_construction,
    }
    for d in args.adaptive_dims:
        out.append({"method": "adaptive", "first_stage": "exact", "dims": [d, top],
                    "shortlists": [args.shortlist, K]})  # fmt: skip
    for d in args.adaptive_dims:
        out.append({"method": "adaptive", "first_stage": "hnsw", "dims": [d, top],
                    "shortlists": [args.shortlist, K], "options": hnsw})  # fmt: skip
    for coarse, d in args.ivf:
        out.append({"method": "adaptive", "first_stage": "ivf", "dims": [d, top],
                    "shortlists": [args.shortlist, K],
                    "options": {"coarse_dim": coarse, "nprobe": args.nprobe}})  # fmt: skip
    for d in args.binary_dims:
        out.append({"method": "adaptive", "first_stage": "binary", "dims": [d, top],
                    "shortlists": [args.binary_shortlist, K]})  # fmt: skip
    f_dims, f_short = default_funnel(nesting, n_db, final_k=K, first_shortlist=args.shortlist)
    for stage in ("exact", "hnsw"):
        out.append({"method": "funnel", "first_stage": stage, "dims": f_dims,
                    "shortlists": f_short, "options": hnsw if stage == "hnsw" else {}})  # fmt: skip
    for spec in args.funnel or []:
        stage, dims_text, shortlists_text = spec.split(":")
        options = {"hnsw": hnsw, "ivf": {"coarse_dim": args.funnel_coarse_dim,
                                         "nprobe": args.nprobe}}.get(stage, {})  # fmt: skip
        out.append({"method": "funnel", "first_stage": stage,
                    "dims": [int(d) for d in dims_text.split(">")],
                    "shortlists": [int(k) for k in shortlists_text.split(">")],
                    "options": options})  # fmt: skip
    if args.hnsw_full:
        out.append({"method": "exact-hnsw", "first_stage": "hnsw", "dims": [top],
                    "shortlists": [K], "options": hnsw})  # fmt: skip
    for s in out:
        s.setdefault("options", {})
        opts = ",".join(f"{k}={v}" for k, v in sorted(s["options"].items()))
        dims, shortlists = ">".join(map(str, s["dims"])), ">".join(map(str, s["shortlists"]))
        s["setting"] = f"{s['method']}:{s['first_stage']}:{dims}:{shortlists}"
        s["setting"] += f":{opts}" if opts else ""
    return out


def first_stage_distances(stage: str, faiss) -> float | None:
    """Distance computations FAISS counted since the last reset (HNSW and IVF only)."""
    if faiss is None:
        return None
    if stage == "hnsw":
        return float(faiss.cvar.hnsw_stats.ndis)
    if stage == "ivf":
        return float(faiss.cvar.indexIVF_stats.ndis)
    return None


def reset_stats(faiss) -> None:
    if faiss is not None:
        faiss.cvar.hnsw_stats.reset()
        faiss.cvar.indexIVF_stats.reset()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--embeddings", required=True, help="an mrl-eval embeddings folder")
    parser.add_argument("--database", default=None, help="database split name (default: the "
                        "largest database-* split there)")  # fmt: skip
    parser.add_argument("--shortlist", type=int, default=200, help="adaptive shortlist size")
    parser.add_argument("--binary-shortlist", type=int, default=1000, help="binary shortlist")
    parser.add_argument("--adaptive-dims", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--binary-dims", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--ivf", type=int, nargs=2, action="append", metavar=("COARSE", "DIM"),
                        help="IVF: cluster on COARSE dims, scan lists at DIM (repeatable; "
                        "default 8 16 and 16 32)")  # fmt: skip
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument(
        "--funnel",
        action="append",
        metavar="STAGE:DIMS:SHORTLISTS",
        help="an extra funnel, e.g. ivf:64>256>2048:200>50>10 (repeatable)",
    )
    parser.add_argument("--funnel-coarse-dim", type=int, default=16,
                        help="coarse quantizer dims of an extra IVF funnel")  # fmt: skip
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-search", type=int, default=256)
    parser.add_argument("--ef-construction", type=int, default=80)
    parser.add_argument("--hnsw-full", action="store_true", help="also HNSW at the full dim")
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--latency-queries-exact", type=int, default=50,
                        help="single queries timed for exact search at the full dim (each "
                        "reads the whole index)")  # fmt: skip
    parser.add_argument("--max-queries", type=int, default=None, help="first N queries only")
    parser.add_argument("--db-rows", type=int, default=None, help="first N database rows only")
    parser.add_argument("--only", nargs="+", default=None, help="run only these settings")
    parser.add_argument(
        "--out",
        default=str(output_root() / "bench" / "adaptive_retrieval_1m.csv"),
        help="the table (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    args.ivf = args.ivf or [[8, 16], [16, 32]]

    baseline_rss = rss_bytes()[0]  # the interpreter and its imports, before any data
    emb = Path(args.embeddings)
    if not emb.is_dir():
        parser.error(f"--embeddings {emb} is not a folder: run mrl-eval first (see --help)")
    db_dir = emb / args.database if args.database else largest_database_split(emb)
    if db_dir is None:
        parser.error(f"no database split under {emb}")
    db, db_y = read_split(db_dir)
    if args.db_rows:
        db, db_y = db[: args.db_rows], db_y[: args.db_rows]
    queries, q_y = read_split(emb / "query", mmap=False)
    if args.max_queries:
        queries, q_y = queries[: args.max_queries], q_y[: args.max_queries]
    queries = np.asarray(queries, dtype=np.float32)
    meta = json.loads((db_dir / "meta.json").read_text())
    n_db, dim = db.shape
    nesting = [m for m in (8, 16, 32, 64, 128, 256, 512, 1024, 2048) if m <= dim]
    fingerprint = embeddings_fingerprint(db_dir)
    cache_dir = db_dir / "indexes"
    out = Path(args.out)
    done = {row["setting"]: row for row in read_csv_rows(out)}
    rows = list(done.values())
    print(f"database {db_dir.name}: {n_db:,} x {dim} {db.dtype} ({db.nbytes / MIB:,.0f} MiB), "
          f"queries {len(queries):,}; {os.cpu_count()} CPUs; rows so far {len(rows)}",
          flush=True)  # fmt: skip
    try:
        import faiss
    except ImportError:
        faiss = None

    # Exact neighbours at the full dim: the reference for recall against exact search.
    digest = hashlib.sha1(json.dumps([fingerprint, len(queries)], sort_keys=True).encode())
    exact_path = cache_dir / f"exact-top{K}-{digest.hexdigest()[:12]}.npy"
    q_prefix = {m: normalize_prefix(queries, m) for m in nesting}
    exact_rows = [row for row in done.values() if row["method"] == "exact"]
    exact_ms = float(exact_rows[0]["ms_per_query"]) if exact_rows else None
    for s in settings(args, nesting, n_db):
        if s["setting"] in done or (args.only and s["setting"] not in args.only):
            continue
        if s["method"] != "exact" and not exact_path.is_file():
            raise SystemExit("the exact baseline must run first (it is the first setting)")
        print(f"-- {s['setting']}", flush=True)
        gc.collect()
        with Stage(s["setting"]) as st:
            t0 = time.perf_counter()
            index = FunnelIndex(db, s["dims"], backend=s["first_stage"], index_cache_dir=cache_dir,
                                fingerprint=fingerprint, **s["options"])  # fmt: skip
            build = time.perf_counter() - t0
            reset_stats(faiss)
            t0 = time.perf_counter()
            indices, _, steps = index.search(q_prefix, s["shortlists"])
            batch_seconds = time.perf_counter() - t0
            distances = first_stage_distances(s["first_stage"], faiss)
            lat = []
            n_lat = args.latency_queries_exact if s["method"] == "exact" else args.latency_queries
            for i in range(min(n_lat, len(queries))):
                one = {m: q[i : i + 1] for m, q in q_prefix.items()}
                t = time.perf_counter()
                index.search(one, s["shortlists"])
                lat.append(time.perf_counter() - t)
            index_bytes = index.searcher.index_bytes
            reused = index.index_reused
            del index
        if s["method"] == "exact":
            cache_dir.mkdir(parents=True, exist_ok=True)
            np.save(exact_path, indices)
        exact = np.load(exact_path)
        labels = neighbor_labels_of(indices, db_y, q_y)
        metrics = retrieval_metrics(labels, q_y, db_y, ks=[K])
        ms = 1000 * batch_seconds / len(queries)
        exact_ms = ms if s["method"] == "exact" else exact_ms
        norms_bytes = 4 * n_db * (len(s["dims"]) - 1)
        row = {
            "setting": s["setting"], "method": s["method"], "first_stage": s["first_stage"],
            "dims": ">".join(map(str, s["dims"])),
            "shortlists": ">".join(map(str, s["shortlists"])),
            "options": json.dumps(s["options"], sort_keys=True),
            **{k: round(v, 5) for k, v in metrics.items()},
            f"recall_vs_exact@{K}": round(overlap_recall(indices, exact), 5),
            "ms_per_query": round(ms, 4),
            "speedup_vs_exact": round(exact_ms / ms, 2),
            "latency_p50_ms": round(1000 * float(np.percentile(lat, 50)), 3),
            "latency_p99_ms": round(1000 * float(np.percentile(lat, 99)), 3),
            "latency_queries": len(lat),
            "step_seconds": "/".join(f"{x:.2f}" for x in steps),
            "build_seconds": round(build, 2), "index_reused": reused,
            "index_mib": round(index_bytes / MIB, 1), "norms_mib": round(norms_bytes / MIB, 1),
            "embedding_mib": round(db.nbytes / MIB, 1),
            "first_stage_distances_per_query": (round(distances / len(queries), 1)
                                                if distances is not None else ""),
            "mflops_per_query": round(funnel_mflops(n_db, s["dims"], s["shortlists"]), 3),
            **st.memory(),
            "baseline_rss_mib": round(baseline_rss / MIB, 1),
            "peak_vs_bytes": round(
                (st.peak_rss - baseline_rss) / (db.nbytes + index_bytes + norms_bytes), 3
            ),
            "n_db": n_db, "n_query": len(queries), "database": db_dir.name,
            "model": meta.get("checkpoint", {}).get("path", ""),
        }  # fmt: skip
        rows.append(row)
        write_csv(out, rows)
        shown = ("map@10", "recall_vs_exact@10", "ms_per_query", "speedup_vs_exact",
                 "latency_p50_ms", "build_seconds", "index_mib", "peak_rss_mib",
                 "peak_vs_bytes")  # fmt: skip
        print("   " + " ".join(f"{k}={row[k]}" for k in shown), flush=True)
    summary = out.with_suffix(".md")
    atomic_write_text(summary, summary_markdown(rows))
    print(f"wrote {out} and {summary}")


def summary_markdown(rows: list[dict]) -> str:
    """The recorded settings as a table, and how the cascades compare with exact search and
    with HNSW at the full dim (mAP@10 in points, times per query in batch)."""
    text = ("setting", "method", "first_stage", "dims", "shortlists", "options", "database")
    rows = [{k: (float(v) if k not in text and _is_number(v) else v) for k, v in r.items()}
            for r in rows]  # fmt: skip
    exact = next(r for r in rows if r["method"] == "exact")
    full_hnsw = next((r for r in rows if r["method"] == "exact-hnsw"), None)
    lines = [
        f"# Retrieval at {int(exact['n_db']):,} x {exact['dims']} ({exact['database']}), "
        f"{int(exact['n_query']):,} queries",
        "",
        "mAP@10 and recall@10 against exact search at the full dim in %; ms per query over all "
        "queries in batches; latency: one query at a time; peak: resident memory over the "
        "embedding, index and norm bytes.",
        "",
        "| method | first stage | dims | shortlists | mAP@10 | vs exact | recall vs exact "
        "| ms/query | speed-up | p50 ms | p99 ms | build s | index MiB | peak / bytes |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        options = json.loads(r.get("options") or "{}")
        stage = r["first_stage"]
        if "coarse_dim" in options:
            stage += f" (coarse {options['coarse_dim']}, nprobe {options.get('nprobe')})"
        elif stage == "hnsw":
            stage += f" (M {options.get('hnsw_m')}, efSearch {options.get('ef_search')})"
        lines.append(
            f"| {r['method']} | {stage} | {r['dims']} | {r['shortlists']} | "
            f"{100 * r['map@10']:.2f} | {100 * (r['map@10'] - exact['map@10']):+.2f} | "
            f"{100 * r['recall_vs_exact@10']:.1f} | {r['ms_per_query']:.3f} | "
            f"{r['speedup_vs_exact']:.1f}x | {r['latency_p50_ms']:.2f} | "
            f"{r['latency_p99_ms']:.2f} | "
            f"{r['build_seconds']:.0f} | {r['index_mib']:.0f} | {r['peak_vs_bytes']:.2f} |"
        )
    kept = [r for r in rows if r["method"] in ("adaptive", "funnel")
            and r["map@10"] >= exact["map@10"] - 0.002]  # fmt: skip
    lines.append("")
    if kept:
        best = max(kept, key=lambda r: r["speedup_vs_exact"])
        lines.append(
            f"Fastest cascade within 0.2 points of exact search's mAP@10: {best['method']} "
            f"{best['first_stage']} {best['dims']} ({best['shortlists']}), "
            f"{best['speedup_vs_exact']:.1f}x faster than exact search, mAP@10 "
            f"{100 * (best['map@10'] - exact['map@10']):+.2f}."
        )
        if full_hnsw is not None:
            lines.append(
                f"HNSW at the full dim: {full_hnsw['speedup_vs_exact']:.1f}x faster than exact, "
                f"recall vs exact {100 * full_hnsw['recall_vs_exact@10']:.1f}%, mAP@10 "
                f"{100 * (full_hnsw['map@10'] - exact['map@10']):+.2f}; the cascade above is "
                f"{full_hnsw['ms_per_query'] / best['ms_per_query']:.2f}x faster than it, at "
                f"recall vs exact {100 * best['recall_vs_exact@10']:.1f}%."
            )
    return "\n".join(lines) + "\n"


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, bool)


if __name__ == "__main__":
    main(sys.argv[1:])
