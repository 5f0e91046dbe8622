"""Retrieval at scale: time and memory of prefix normalisation, exact search, adaptive retrieval
and the default funnel on a synthetic memory-mapped database.

The database (N_db x dim float32) is written in chunks into a memory-mapped .npy in a temporary
directory, so no two full copies ever exist; queries (N_q x dim) are held in memory. Vectors are
class centres plus isotropic noise, with centre coordinates shrinking along the dimensions so
that prefixes carry most of the class signal, as in a Matryoshka embedding. Accuracy figures are
sanity checks of the pipeline, not results about any model.

Stages, each timed on its own (wall clock; searches best of --repeats with the index built
beforehand): generation; normalisation of each needed prefix (database and queries); exact
search (FAISS IndexFlatIP, k=10) at the full dim and at --small-dim; adaptive retrieval
(shortlist --shortlist at --small-dim, re-rank at the full dim to 10); the default funnel of the
nesting. For every stage it records the peak resident memory during the stage (RSS and its
anonymous part, sampled from /proc every 5 ms; the file part is the memmap's cached pages), the
process's lifetime high-water mark (ru_maxrss) and the peak of NumPy allocations during the
stage (tracemalloc; arrays kept from earlier stages, like the normalised prefixes, included).
Writes `--out` (default `$MRL_OUTPUT_ROOT/bench/retrieval_scale.csv`, `$MRL_OUTPUT_ROOT`
defaulting to `outputs`).

    .venv/bin/python experiments/bench/retrieval_scale.py [--n-db 1000000 --n-query 10000 ...] \
        [--out experiments/results/bench/retrieval_scale.csv]
"""

import argparse
import os
import resource
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np

from mrl.core.nesting import halving_nesting, validate_nesting
from mrl.eval.funnel import FunnelIndex, default_funnel, funnel_mflops
from mrl.eval.metrics import neighbor_labels_of, retrieval_metrics
from mrl.eval.search import normalize_prefix
from mrl.report.paths import output_root
from mrl.runs.files import write_csv

MIB = 1 << 20
K = 10


def rss_bytes() -> tuple[int, int]:
    """(resident, resident anonymous) bytes of this process, from /proc/self/status."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "RssAnon:")):
                name, kib, _ = line.split()
                values[name] = int(kib) * 1024
    return values.get("VmRSS:", 0), values.get("RssAnon:", 0)


class Stage:
    """Context manager measuring a stage's wall time and peak memory."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> "Stage":
        self._stop = threading.Event()
        self.peak_rss, self.peak_anon = rss_bytes()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        tracemalloc.reset_peak()
        self._t0 = time.perf_counter()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            rss, anon = rss_bytes()
            self.peak_rss, self.peak_anon = max(self.peak_rss, rss), max(self.peak_anon, anon)

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._t0
        self.tracemalloc_peak = tracemalloc.get_traced_memory()[1]
        self._stop.set()
        self._thread.join()
        rss, anon = rss_bytes()
        self.peak_rss, self.peak_anon = max(self.peak_rss, rss), max(self.peak_anon, anon)

    def memory(self) -> dict:
        return {
            "peak_rss_mib": round(self.peak_rss / MIB, 1),
            "peak_rss_anon_mib": round(self.peak_anon / MIB, 1),
            "tracemalloc_peak_mib": round(self.tracemalloc_peak / MIB, 1),
            # Linux reports ru_maxrss in KiB.
            "maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }


def generate(path: Path, args, rng: np.random.Generator):
    """Database memmap at `path` (written chunk by chunk), labels, in-memory queries."""
    scale = (1.0 + np.arange(args.dim) / 8.0) ** -0.5
    centres = (rng.standard_normal((args.classes, args.dim)) * scale).astype(np.float32)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, args.classes, n)
        x = rng.standard_normal((n, args.dim), dtype=np.float32)
        x *= args.noise
        x += centres[labels]
        return x, labels

    db = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(args.n_db, args.dim))
    db_labels = np.empty(args.n_db, dtype=np.int64)
    for start in range(0, args.n_db, args.chunk_rows):
        stop = min(args.n_db, start + args.chunk_rows)
        db[start:stop], db_labels[start:stop] = sample(stop - start)
    db.flush()
    del db
    queries, query_labels = sample(args.n_query)
    return np.load(path, mmap_mode="r"), db_labels, queries, query_labels


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-db", type=int, default=1_000_000, help="database size")
    parser.add_argument("--n-query", type=int, default=10_000, help="number of queries")
    parser.add_argument("--dim", type=int, default=256, help="full embedding size")
    parser.add_argument("--classes", type=int, default=1000, help="number of classes")
    parser.add_argument(
        "--dims", type=int, nargs="+", default=None, help="nesting (default: 8, 16, ..., dim)"
    )
    parser.add_argument("--small-dim", type=int, default=16, help="shortlist dim of adaptive")
    parser.add_argument("--shortlist", type=int, default=200, help="adaptive shortlist size")
    parser.add_argument("--noise", type=float, default=0.6, help="noise std around class centres")
    parser.add_argument("--backend", default="exact", help="exact, hnsw or numpy")
    parser.add_argument("--batch-size", type=int, default=4096, help="queries per search batch")
    parser.add_argument("--repeats", type=int, default=1, help="timed repeats per search (best)")
    parser.add_argument("--chunk-rows", type=int, default=65536, help="rows per generated chunk")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmp-dir", default=None, help="where the temporary memmap goes")
    parser.add_argument(
        "--out",
        default=str(output_root() / "bench" / "retrieval_scale.csv"),
        help="the table (default: %(default)s)",
    )
    args = parser.parse_args(argv)

    nesting = list(validate_nesting(args.dims or halving_nesting(args.dim, 8), args.dim))
    if nesting[-1] != args.dim:
        parser.error(f"the largest of --dims must be --dim={args.dim}, got {nesting}")
    if args.small_dim not in nesting[:-1]:
        parser.error(f"--small-dim {args.small_dim} must be a nesting dim below {args.dim}")
    funnel_dims, funnel_shortlists = default_funnel(nesting, args.n_db, final_k=K)
    methods = [
        ("exact", [args.dim], [K]),
        ("exact", [args.small_dim], [K]),
        ("adaptive", [args.small_dim, args.dim], [args.shortlist, K]),
        ("funnel", funnel_dims, funnel_shortlists),
    ]
    needed = sorted({m for _, dims, _ in methods for m in dims})

    print(
        f"N_db={args.n_db:,} N_q={args.n_query:,} dim={args.dim} classes={args.classes} "
        f"nesting={nesting} backend={args.backend} threads: numpy/faiss defaults on "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    tracemalloc.start()
    rows: list[dict] = []

    def record(stage: Stage, **fields) -> None:
        row = {"stage": stage.name, "seconds": round(stage.seconds, 3), **fields}
        row.update(stage.memory())
        rows.append(row)
        shown = {k: v for k, v in row.items() if k != "stage"}
        print(f"{stage.name:<28} " + " ".join(f"{k}={v}" for k, v in shown.items()), flush=True)

    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(dir=args.tmp_dir, prefix="mrl-retrieval-") as tmp:
        with Stage("generate") as st:
            db, db_labels, queries, query_labels = generate(Path(tmp) / "db.npy", args, rng)
        record(st, file_mib=round(db.nbytes / MIB, 1))

        db_cache: dict[int, np.ndarray] = {}
        q_cache: dict[int, np.ndarray] = {}
        for m in sorted(needed, reverse=True):
            with Stage(f"normalize@{m}") as st:
                db_cache[m] = normalize_prefix(db, m)
                q_cache[m] = normalize_prefix(queries, m)
            record(st, dims=str(m))

        exact_seconds = exact_mflops = None
        for method, dims, shortlists in methods:
            label = ">".join(map(str, dims))
            with Stage(f"{method}@{label}") as st:
                t0 = time.perf_counter()
                index = FunnelIndex(
                    db,
                    dims,
                    backend=args.backend,
                    batch_size=args.batch_size,
                    prefix_cache=db_cache,
                )
                index_seconds = time.perf_counter() - t0
                best = float("inf")
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    indices, _, steps = index.search(q_cache, shortlists)
                    best = min(best, time.perf_counter() - t0)
                del index
            labels = neighbor_labels_of(indices, db_labels, query_labels)
            metrics = retrieval_metrics(labels, query_labels, db_labels, ks=[K])
            mflops = funnel_mflops(args.n_db, dims, shortlists)
            if exact_seconds is None:
                exact_seconds, exact_mflops = best, mflops
            record(
                st,
                dims=label,
                shortlists=">".join(map(str, shortlists)),
                index_seconds=round(index_seconds, 3),
                search_seconds=round(best, 3),
                step_seconds="/".join(f"{s:.2f}" for s in steps),
                ms_per_query=round(1000 * best / args.n_query, 4),
                mflops_per_query=round(mflops, 4),
                speedup_vs_exact=round(exact_seconds / best, 2),
                flops_ratio_vs_exact=round(exact_mflops / mflops, 2),
                **{k: round(v, 4) for k, v in metrics.items()},
            )
        del db

    write_csv(args.out, rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
