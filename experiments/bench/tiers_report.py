"""The tier benchmark's tables, observations and figure, written from its rows
(`experiments/bench/tiers.py` measures them; a finished benchmark's tables are rewritten from
its CSV without measuring)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from mrl.export.folder import PRECISIONS
from mrl.runs.files import atomic_write_json, atomic_write_text, write_csv


def columns(k: int) -> list[str]:
    """The CSV's columns for quality at `k`."""
    return [
        "dim", "precision", "model_file", "model_bytes", "threads",
        "latency_p50_ms", "latency_p99_ms", "latency_calls", "batch", "throughput_items_per_s",
        "embedding_bytes_float32", "embedding_bytes_int8", "embedding_bytes_binary",
        "db_rows", "db_search_ms_per_query",
        "search_rows", "search_ms_per_query", "search_p50_ms", "serve_p50_ms",
        f"recall@{k}", f"map@{k}", "quality_source", f"measured_recall@{k}", f"measured_map@{k}",
        "int8_min_cosine", "export",
    ]  # fmt: skip


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The CSV's rows, numbers parsed (None for empty cells)."""
    if not path.is_file():
        return []
    out = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            parsed: dict[str, Any] = {}
            for key, value in row.items():
                if value == "":
                    parsed[key] = None
                elif key in ("precision", "model_file", "quality_source", "export"):
                    parsed[key] = value
                else:
                    number = float(value)
                    parsed[key] = int(number) if number.is_integer() and "ms" not in key else number
            out.append(parsed)
    return out


def fmt(value: Any, spec: str, scale: float = 1.0) -> str:
    """`value * scale` formatted, or `-` when absent."""
    return "-" if value is None else format(scale * value, spec)


def size_text(n: float) -> str:
    """A file size in MB, or kB below a megabyte."""
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def speed_text(ratio: float) -> str:
    """`ratio` (old time / new time) as `N x faster` or `N x slower`."""
    return f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"


# Below this spread of the p50 latency over dims, the dim is said not to change the encoder.
FLAT_SPREAD = 0.15


def observations(rows: list[dict], k: int, search_rows: int) -> list[str]:
    """What the table shows, in numbers: the dim's (non-)effect on the encoder, where it does
    count, and what int8 changes."""
    lines = []
    by = {(r["dim"], r["precision"]): r for r in rows}
    dims = sorted({r["dim"] for r in rows})
    lo, hi = dims[0], dims[-1]
    for precision in PRECISIONS:
        group = [r for r in rows if r["precision"] == precision]
        if len(group) < 2:
            continue
        p50 = [r["latency_p50_ms"] for r in group]
        items = [r["throughput_items_per_s"] for r in group]
        files = [r["model_bytes"] for r in group]
        excess = max(p50) / min(p50) - 1
        head = (
            "The encoder's cost barely depends on the dim"
            if excess <= FLAT_SPREAD
            else "The encoder's cost over dims"
        )
        lines.append(
            f"- **{head}** ({precision}): p50 at batch 1 is {min(p50):.2f}-{max(p50):.2f} ms over "
            f"dims {lo}-{hi} (the slowest {100 * excess:.0f}% above the fastest), throughput "
            f"{min(items):.0f}-{max(items):.0f} items/s, files {size_text(min(files))}-"
            f"{size_text(max(files))}: the dim changes only the graph's last two steps, a slice "
            f"and a re-normalisation of one vector per item."
        )
    a = by.get((lo, "float32")) or by.get((lo, "int8"))
    b = by.get((hi, "float32")) or by.get((hi, "int8"))
    if a and b and lo != hi:
        lines.append(
            f"- **Where the dim counts: bytes and search.** A float32 embedding takes "
            f"{a['embedding_bytes_float32']} bytes at {lo} dims against "
            f"{b['embedding_bytes_float32']} at {hi} ({hi / lo:g}x; int8 codes "
            f"{a['embedding_bytes_int8']} and {b['embedding_bytes_int8']}, sign bits "
            f"{a['embedding_bytes_binary']} and {b['embedding_bytes_binary']}). Exact search over "
            f"{search_rows:,} vectors takes {a['search_ms_per_query']:.3f} ms per query in a "
            f"batch at {lo} dims against {b['search_ms_per_query']:.3f} at {hi}, and "
            f"{a['search_p50_ms']:.2f} against {b['search_p50_ms']:.2f} ms for one query: with "
            f"the encoder's p50 the cost per query is {a['serve_p50_ms']:.2f} against "
            f"{b['serve_p50_ms']:.2f} ms ({a['precision']})."
        )
        if a.get("db_rows") and a.get("db_search_ms_per_query") is not None:
            share = max(r["db_search_ms_per_query"] / r["latency_p50_ms"] for r in rows)
            lines.append(
                f"  Over the run's own database ({a['db_rows']:,} items) search takes "
                f"{a['db_search_ms_per_query']:.4f} ms per query at {lo} dims and "
                f"{b['db_search_ms_per_query']:.4f} at {hi}, at most {100 * share:.1f}% of a "
                f"tier's encoder p50."
            )
    pairs = [(by[(d, "float32")], by[(d, "int8")]) for d in dims
             if (d, "float32") in by and (d, "int8") in by]  # fmt: skip
    if pairs:
        size = np.mean([f["model_bytes"] / q["model_bytes"] for f, q in pairs])
        fast = np.mean([f["latency_p50_ms"] / q["latency_p50_ms"] for f, q in pairs])
        thr = np.mean([q["throughput_items_per_s"] / f["throughput_items_per_s"] for f, q in pairs])
        quality = [
            f"{100 * (q[f'recall@{k}'] - f[f'recall@{k}']):+.2f}"
            for f, q in pairs
            if f[f"recall@{k}"] is not None and q[f"recall@{k}"] is not None
        ]
        lines.append(
            f"- **int8** against float32 (means over dims): files {size:.1f}x smaller, "
            f"{speed_text(fast)} at batch 1, {speed_text(thr)} at batch {pairs[0][0]['batch']}; "
            f"recall@{k} int8 - float32 in points at dims "
            f"{', '.join(str(f['dim']) for f, _ in pairs)}: {', '.join(quality) or '-'}."
        )
    checked = [r for r in rows if r["quality_source"].startswith("card")
               and r[f"measured_recall@{k}"] is not None]  # fmt: skip
    for r in checked:
        lines.append(
            f"- **Check of the measurement**: the float32 model at {r['dim']} dims measured "
            f"through ONNX Runtime gives recall@{k} {100 * r[f'measured_recall@{k}']:.2f}% and "
            f"mAP@{k} {100 * r[f'measured_map@{k}']:.2f}%; the card (PyTorch, the run's own "
            f"test) {100 * r[f'recall@{k}']:.2f}% and {100 * r[f'map@{k}']:.2f}%."
        )
    return lines


def markdown(rows: list[dict], info: dict[str, Any], k: int) -> str:
    """The table of every tier, with the machine, the settings, what it shows and the
    commands."""
    s = info["settings"]
    search_rows = s["search_rows"]
    lines = [
        f"# Serving tiers of {info['subject']['title']}: cost and quality per (dim, precision)",
        "",
        f"Export `{s['export']}` of `{info['subject']['checkpoint']}` "
        f"({info['subject']['kind']}, {info['subject']['task']}, step "
        f"{info['subject']['global_step']}, nesting {info['subject']['nesting']}).",
        "",
        f"Machine: {info['machine']['cpu']}, {info['machine']['cores']} cores visible, shared "
        f"with other work; ONNX Runtime {info['machine']['onnxruntime']} (CPU provider, "
        f"{s['threads']} intra-op thread(s), 1 inter-op, sequential), FAISS "
        f"{info['machine']['faiss']} ({s['threads']} thread(s)); OMP_NUM_THREADS="
        f"{info['machine']['omp_num_threads']}.",
        "",
        f"Inputs: {info['inputs']}. Latency: p50/p99 of {s['latency_calls']} calls at batch 1 "
        f"per tier after {s['warmup']} warm-up calls (tokenization not included); throughput: "
        f"batch {s['batch']}, from the median of {s['batches']} batches; the tiers' calls "
        f"interleaved in {s['rounds']} rounds; batches are random test queries padded to the "
        f"longest of each. Search: exact inner product (`mrl.eval.search`, FAISS "
        f"IndexFlatIP) at the tier's dim over random unit vectors: the median of "
        f"{s['search_repeats']} batches of {s['search_queries']} queries (FAISS's BLAS path "
        f"for every dim), and the median of "
        f"{s['search_single']} queries one at a time. serve = encoder p50 + one "
        f"query's search over {search_rows:,}. Quality: {info['quality']}; `card` = the run's "
        f"own figures for these weights (the float model equals them within the export's "
        f"parity check), `measured` = the tier's ONNX embeddings scored by "
        f"`mrl.eval.retrieval.evaluate_retrieval`.",
        "",
        f"| dim | model | file | p50 ms | p99 ms | items/s (batch {s['batch']}) | "
        f"bytes/item f32 / int8 / bits | search ms/query ({search_rows:,}, batch) | "
        f"search ms ({search_rows:,}, one query) | serve ms | recall@{k} % | mAP@{k} % | quality |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["dim"], list(PRECISIONS).index(r["precision"]))):
        source = r["quality_source"].split(":")[0]
        lines.append(
            f"| {r['dim']} | {r['precision']} | {size_text(r['model_bytes'])} | "
            f"{r['latency_p50_ms']:.2f} | {r['latency_p99_ms']:.2f} | "
            f"{r['throughput_items_per_s']:.0f} | {r['embedding_bytes_float32']} / "
            f"{r['embedding_bytes_int8']} / {r['embedding_bytes_binary']} | "
            f"{r['search_ms_per_query']:.3f} | {r['search_p50_ms']:.2f} | "
            f"{r['serve_p50_ms']:.2f} | {fmt(r[f'recall@{k}'], '.2f', 100)} | "
            f"{fmt(r[f'map@{k}'], '.2f', 100)} | {source} |"
        )
    lines += ["", *observations(rows, k, search_rows), "", "Commands (from the repository root):",
              "", "```bash"]  # fmt: skip
    lines += [f"{c}" for c in info["commands"]]
    lines += ["```", ""]
    return "\n".join(lines)


def figure(rows: list[dict], path: Path, k: int, search_rows: int, title: str) -> None:
    """Quality against the encoder's p50 latency (left) and against the serving cost with
    exact search over `search_rows` (right), a labelled point per tier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    style = {"float32": ("o", "#1f77b4"), "int8": ("^", "#ff7f0e")}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    panels = [
        ("latency_p50_ms", "encoder latency per query, batch 1, p50 (ms)"),
        ("serve_p50_ms", f"encoder p50 + one query's exact search over {search_rows:,} (ms)"),
    ]
    for ax, (x, label) in zip(axes, panels):
        for precision, (marker, colour) in style.items():
            group = sorted((r for r in rows if r["precision"] == precision
                            and r[f"recall@{k}"] is not None), key=lambda r: r["dim"])  # fmt: skip
            if not group:
                continue
            xs = [r[x] for r in group]
            ys = [100 * r[f"recall@{k}"] for r in group]
            ax.plot(xs, ys, marker=marker, color=colour, linestyle=":", label=precision)
            for r, xv, yv in zip(group, xs, ys):
                ax.annotate(f"{r['dim']} {precision}", (xv, yv), textcoords="offset points",
                            xytext=(5, -3 if precision == "int8" else 4), fontsize=7)  # fmt: skip
        ax.set_xlabel(label)
        ax.set_ylabel(f"recall@{k} (%)")
        ax.grid(alpha=0.3)
        ax.margins(x=0.2)
        ax.legend(fontsize=8, loc="best")
    axes[0].set_xlim(left=0)
    axes[0].set_title("the encoder alone", fontsize=9)
    axes[1].set_xscale("log")
    axes[1].xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
    axes[1].xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axes[1].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[1].set_title("the encoder and the search", fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(out: Path, rows: list[dict], info: dict[str, Any], k: int) -> None:
    """The CSV, and the Markdown table, the figure and the JSON when there are rows."""
    write_csv(out, rows, columns(k))
    if rows:
        atomic_write_text(out.with_suffix(".md"), markdown(rows, info, k))
        title = (f"{info['subject']['title']}: one point per (dim, precision); ONNX Runtime, "
                 f"{info['settings']['threads']} thread(s)")  # fmt: skip
        figure(rows, out.with_suffix(".png"), k, info["settings"]["search_rows"], title)
    atomic_write_json(out.with_suffix(".json"), info)
