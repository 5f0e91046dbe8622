"""Tier benchmark: what each exported tier (dim x model precision) of a Matryoshka model costs to
serve on this CPU, and what it retrieves.

For every dim of an `mrl-export` folder and each of its models (`model.onnx`, float32, and
`model.int8.onnx`, dynamic int8, each shared by the dims: a tier is the model's output of its
dim), with ONNX Runtime's CPU provider (`--threads` intra-op threads, one inter-op thread,
sequential execution):

- encoder latency per query at batch 1: p50 and p99 of `--calls` calls after `--warmup`, on
  real queries of the run's test split, tokenized beforehand (text: its definitions; images:
  its images); the tiers' calls interleave in `--rounds` rounds, so that the noise of a shared
  CPU falls on all of them alike;
- throughput at batch `--batch` (items/s from the median batch time), in the same rounds;
- the model file's size (the one file every dim of that precision reads), and the embedding's
  bytes per item: float32 (4 m, what every tier
  outputs), and int8 (m) and sign bits (m / 8) if it is stored quantized;
- exact search per query at the tier's dim (`mrl.eval.search`, FAISS `IndexFlatIP`, brute force,
  `--threads` threads) over random unit vectors: as many as the run's database holds, and
  `--search-rows` of them; the median of `--search-repeats` batches of `--search-queries`
  queries (through FAISS's matrix-product path at every dim) and the median of
  `--search-single` queries one at a time (a flat index costs the same whatever the vectors
  hold: only rows x dim count). `serve ms` adds
  the encoder's p50 and one query's search over `--search-rows`: the tier's cost per query;
- retrieval quality: recall@k and mAP@k (`--k`) on the run's own evaluation. The float model's
  come from the card where it has them (the run's `results.json` or `eval/metrics.csv`, which
  describe exactly these weights); the others (int8, and float with `--measure-float`) are
  measured: the run's test queries and database embedded by the tier's ONNX session and scored
  by `mrl.eval.retrieval.evaluate_retrieval` (text: the reverse dictionary of the run's test
  split, as `mrl-train-text` tests it; images: query = the test split, database = the training
  split with evaluation transforms, as `mrl-eval` does). The float model at the largest dim is
  measured as well, as a check of this measurement against the card.

The truncation to m and the re-normalisation are the graph's last two steps, on one
`(batch, D)` vector, one pair per exported dim: the encoder's cost barely depends on the dim.
Where the dim does count is the embedding's bytes and the search.

Without `--export`, the benchmark makes its subject first, under `--work` (default
`outputs/bench_tiers/`, kept, so that a rerun reuses it): MiniLM fine-tuned briefly with the
Matryoshka contrastive loss by `mrl-train-text` (the reverse-dictionary benchmark's settings:
2560 training synsets, one epoch of batch 64, 2000 test synsets), then
`mrl-export <run> --dims 32 64 128 384 --int8`.

Outputs (`--out`, default `$MRL_OUTPUT_ROOT/bench/tiers.csv`, `$MRL_OUTPUT_ROOT` defaulting to
`outputs`; the recorded ones only with `--out experiments/results/bench/tiers.csv`; written by
`tiers_report.py`):
`tiers.csv` (a row per tier;
pandas reads it), `tiers.md` (the table, the machine, the settings and the commands),
`tiers.png` (quality against encoder latency, and against the cost with search) and
`tiers.json` (the settings and the subject, from which a finished benchmark's tables are
rewritten without measuring). A row is written as soon as its tier is measured; a rerun
measures only the tiers not in the CSV, and refuses rows measured with other settings (another
export, other threads, batch, calls or search settings) unless `--fresh`.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \\
        .venv/bin/python experiments/bench/tiers.py [--export DIR] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments" / "text"))
import reverse_dictionary as rd  # noqa: E402  (the reverse-dictionary benchmark's helpers)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiers_report import read_rows, write_outputs  # noqa: E402  (tables and figure)

from mrl.core.errors import ConfigError  # noqa: E402
from mrl.export.card import recorded_retrieval  # noqa: E402
from mrl.export.exporter import CARD, tier_dir_name  # noqa: E402
from mrl.export.folder import Tier, load_export  # noqa: E402
from mrl.export.runtime import embed, open_session, time_calls  # noqa: E402
from mrl.report.paths import output_root  # noqa: E402
from mrl.runs.files import read_json  # noqa: E402
from mrl.runs.provenance import cpu_name  # noqa: E402

DEFAULT_WORK = ROOT / "outputs" / "bench_tiers"
DEFAULT_DIMS = (32, 64, 128, 384)
# Settings that make two rows comparable: a rerun refuses rows measured otherwise.
SETTING_COLUMNS = ("export", "threads", "batch", "latency_calls", "search_rows")
# The environment the recorded commands ran under.
ENV = ("OMP_NUM_THREADS", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


STARTED = time.perf_counter()


def log(message: str) -> None:
    """A progress line on stderr, with the seconds since the start."""
    print(f"[tiers {time.perf_counter() - STARTED:6.0f} s] {message}", file=sys.stderr, flush=True)


def relative(path: Path) -> str:
    """`path` relative to the repository when it lies inside it, else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


# -- the subject: a short MiniLM fine-tuning, exported -------------------------------------------


def subject_overrides(run_dir: Path, train_synsets: int, test_synsets: int) -> list[str]:
    """`mrl-train-text` overrides of the default subject (the reverse-dictionary benchmark's
    data and schedule; validation on a small subset: its metrics are not used)."""
    return [
        f"data.limit_train={train_synsets}",
        f"data.limit_test={test_synsets}",
        "data.limit_val=200",
        f"data.batch_size={rd.DEFAULT_BATCH_SIZE}",
        f"trainer.max_epochs={rd.DEFAULT_EPOCHS}",
        "save_model=false",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        f"hydra.run.dir={relative(run_dir)}",
    ]


def make_subject(work: Path, dims: Sequence[int], train_synsets: int, test_synsets: int):
    """The default subject's export folder under `work`, training and exporting what is not
    there yet; returns it with the commands that made it."""
    from mrl.export import export_run

    run_dir, export = work / "run", work / "export"
    overrides = subject_overrides(run_dir, train_synsets, test_synsets)
    dims_text = " ".join(map(str, dims))
    env = environment()
    commands = [
        f"{env}.venv/bin/mrl-train-text " + " ".join(map(shlex.quote, overrides)),
        f"{env}.venv/bin/mrl-export {relative(run_dir)} --dims {dims_text} "
        f"--out {relative(export)} --int8",
    ]
    if (export / CARD).is_file():
        card = read_json(export / CARD) or {}
        if card.get("dims") != sorted(dims):
            raise ConfigError(
                f"{export} holds dims {card.get('dims')}, not {sorted(dims)}: remove it or pass "
                f"--work elsewhere"
            )
        return export, commands
    done = (run_dir / "results.json").is_file() and (run_dir / "checkpoints/last.ckpt").is_file()
    if not done:
        log(f"training the subject: {commands[0]}")
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mrl.cli.train_text", *overrides], check=True,
                       cwd=ROOT)  # fmt: skip
        log(f"trained in {time.perf_counter() - started:.0f} s")
    log(f"exporting: {commands[1]}")
    started = time.perf_counter()
    export_run(run_dir, list(dims), export, int8=True)
    log(f"exported in {time.perf_counter() - started:.0f} s")
    return export, commands


# -- what the tiers are fed ---------------------------------------------------------------------


@dataclass
class Workload:
    """The inputs of the timings (single queries, batches) and of the quality measurement."""

    kind: str
    singles: list[dict[str, np.ndarray]]
    batches: list[dict[str, np.ndarray]]
    note: str
    query_batches: Callable[[], Iterator[dict[str, np.ndarray]]] | None = None
    query_labels: np.ndarray | None = None
    db_batches: Callable[[], Iterator[dict[str, np.ndarray]]] | None = None
    db_labels: np.ndarray | None = None
    db_rows: int | None = None
    tie_aware_max_dim: int = 0
    backend: str = "exact"
    quality_note: str = "not measured"


def run_config(card: dict[str, Any]):
    """The training config of the export's checkpoint, or the reason it cannot be read."""
    from mrl.config import saved_config
    from mrl.runs.checkpoints import load_checkpoint

    checkpoint = Path(card["source"]["checkpoint"])
    try:
        return saved_config(load_checkpoint(checkpoint, where="checkpoint"), checkpoint), ""
    except ConfigError as err:
        return None, str(err)


def text_workload(card: dict, export: Path, cfg, args: argparse.Namespace) -> Workload:
    """Single queries and batches of the run's test definitions, tokenized by the tier's
    tokenizer as the card says; the test split's reverse dictionary for quality."""
    from transformers import AutoTokenizer

    first = card["tiers"][str(card["dims"][0])]
    folder = export / tier_dir_name(card["dims"][0])
    tokenizer = AutoTokenizer.from_pretrained(str(folder / first["tokenizer"]))
    max_length = int(first["max_length"])

    def tokens(texts: Sequence[str]) -> dict[str, np.ndarray]:
        out = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                        return_tensors="np")  # fmt: skip
        return {name: out[name].astype(np.int64) for name in ("input_ids", "attention_mask")}

    rng = np.random.default_rng(args.seed)
    work = Workload("text", [], [], "")
    if cfg is not None:
        try:
            from mrl.config import instantiate
            from mrl.text.data import retrieval_datasets

            datamodule = instantiate(cfg.data, "data")
            datamodule.check()
            queries, database = map(rd.texts_and_labels,
                                    retrieval_datasets(datamodule.split("test")))  # fmt: skip
        except (ConfigError, OSError) as err:
            work.quality_note = f"not measured: the run's test split is not here ({err})"
            cfg = None
    if cfg is None:
        from mrl.export.exporter import DEFAULT_TEXTS

        texts = list(DEFAULT_TEXTS)
        work.note = f"the export's {len(texts)} parity sentences (the run's data is not here)"
    else:
        texts = queries[0]
        pick = rng.permutation(len(texts))
        work.note = (
            f"definitions of the run's test split ({len(texts)} queries; mean "
            f"{np.mean([tokens([t])['input_ids'].shape[1] for t in texts]):.1f} tokens)"
        )
        texts = [texts[i] for i in pick]
        batch = args.batch

        def feeds(items: list[str]) -> Callable[[], Iterator[dict[str, np.ndarray]]]:
            # Sorted by length (as the data module's loaders are): little padding per batch.
            prepared = [tokens(items[i : i + batch]) for i in range(0, len(items), batch)]
            return lambda: iter(prepared)

        work.query_batches, work.query_labels = feeds(queries[0]), queries[1]
        work.db_batches, work.db_labels = feeds(database[0]), database[1]
        work.db_rows = len(database[0])
        work.backend = str((cfg.get("module") or {}).get("retrieval_backend") or "exact")
        work.quality_note = (
            f"reverse dictionary of the run's test split ({len(queries[0])} definitions against "
            f"{len(database[0])} lemmas), as mrl-train-text tests it"
        )
    singles = texts[: args.queries]
    work.singles = [tokens([t]) for t in singles]
    need = args.batches * args.batch
    pool = [texts[i % len(texts)] for i in range(need)]
    work.batches = [tokens(pool[i : i + args.batch]) for i in range(0, need, args.batch)]
    return work


def image_workload(card: dict, cfg, args: argparse.Namespace) -> Workload:
    """Single images and batches of the run's test split in the model's input range; for
    quality, query = the test split and database = the training split with evaluation
    transforms (mrl-eval's), or seeded random images when the data is not here."""
    import torch

    from mrl.config import instantiate
    from mrl.core.errors import DataNotFoundError
    from mrl.saved import image_input

    work = Workload("image", [], [], "", tie_aware_max_dim=8)
    shape = card["tiers"][str(card["dims"][0])]["inputs"][0]["shape"][1:]
    test = None
    if cfg is not None:
        try:
            datamodule = instantiate(cfg.data, "data")
            contract = image_input(datamodule)
            datamodule.setup("test")
            test, database = datamodule.test_set, datamodule.database_set()
        except (DataNotFoundError, ConfigError, OSError) as err:
            work.quality_note = f"not measured: the run's data is not here ({err})"
    if test is None:
        generator = torch.Generator().manual_seed(args.seed)
        pool = torch.rand(max(args.queries, args.batch), *shape, generator=generator).numpy()
        work.note = "seeded uniform-random images (the run's data is not here)"
    else:
        mean = None if contract.mean is None else torch.tensor(contract.mean).view(1, -1, 1, 1)
        std = None if contract.std is None else torch.tensor(contract.std).view(1, -1, 1, 1)

        def batches_of(dataset) -> Callable[[], Iterator[dict[str, np.ndarray]]]:
            def run() -> Iterator[dict[str, np.ndarray]]:
                loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch)
                for x, _ in loader:
                    x = x.float() if mean is None else x.float() * std + mean
                    yield {"images": x.numpy()}

            return run

        def labels_of(dataset) -> np.ndarray:
            loader = torch.utils.data.DataLoader(dataset, batch_size=1024)
            return torch.cat([y for _, y in loader]).numpy()

        work.query_batches, work.query_labels = batches_of(test), labels_of(test)
        work.db_batches, work.db_labels = batches_of(database), labels_of(database)
        work.db_rows = len(database)
        work.quality_note = (
            f"test split ({len(test)} queries) against the training split with evaluation "
            f"transforms ({len(database)} images), as mrl-eval does"
        )

        def raw(i: int) -> np.ndarray:
            x = test[i][0].float().unsqueeze(0)
            return (x if mean is None else x * std + mean).numpy()

        need = min(max(args.queries, args.batch), len(test))
        pool = np.concatenate([raw(i) for i in range(need)])
        work.note = f"images of the run's test split ({len(test)})"
    work.singles = [{"images": pool[i : i + 1]} for i in range(min(args.queries, len(pool)))]
    order = np.random.default_rng(args.seed).permutation(len(pool))
    work.batches = []
    for b in range(args.batches):
        rows = [order[(b * args.batch + i) % len(pool)] for i in range(args.batch)]
        work.batches.append({"images": pool[rows]})
    return work


# -- measurements -------------------------------------------------------------------------------


def time_tiers(tiers: list[Tier], work: Workload, args: argparse.Namespace) -> dict[tuple, dict]:
    """Latency at batch 1 (p50, p99) and throughput at `args.batch` of each tier, their calls
    interleaved in rounds whose order rotates."""
    opened: dict[Path, Any] = {}
    for t in tiers:  # the dims of one precision share one model file, and one session of it
        if t.path not in opened:
            opened[t.path] = open_session(t.path, args.threads)
    sessions = {t.key: opened[t.path] for t in tiers}
    outputs = {t.key: t.output for t in tiers}
    for key, sess in sessions.items():
        time_calls(sess, work.singles, args.warmup, outputs[key])
        time_calls(sess, work.batches, 1, outputs[key])
    single: dict[tuple, list[float]] = {k: [] for k in sessions}
    batched: dict[tuple, list[float]] = {k: [] for k in sessions}
    calls = math.ceil(args.calls / args.rounds)
    batch_calls = math.ceil(args.batches / args.rounds)
    keys = list(sessions)
    for r in range(args.rounds):
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            sess, output = sessions[key], outputs[key]
            seconds = time_calls(sess, work.singles, calls, output, start=r * calls)
            single[key] += [1e3 * t for t in seconds]
            batched[key] += time_calls(sess, work.batches, batch_calls, output,
                                       start=r * batch_calls)  # fmt: skip
        log(f"timing round {r + 1}/{args.rounds}")
    return {
        key: {
            "latency_p50_ms": float(np.percentile(single[key], 50)),
            "latency_p99_ms": float(np.percentile(single[key], 99)),
            "latency_calls": len(single[key]),
            "throughput_items_per_s": args.batch / float(np.median(batched[key])),
        }
        for key in keys
    }


def search_costs(
    dims: Sequence[int], rows: int, args: argparse.Namespace, single: bool
) -> dict[int, dict[str, float]]:
    """Exact search per query at each dim over `rows` random unit vectors: ms per query in a
    batch of `args.search_queries` through FAISS's matrix-product (BLAS) path (the median of
    `args.search_repeats` batches), and (`single`) the p50 of one query at a time (FAISS's
    scan)."""
    from mrl.eval.search import build_index, matrix_product_search, normalize_prefix

    rng = np.random.default_rng(args.seed)
    width = max(dims)
    database = np.empty((rows, width), dtype=np.float32)
    for start in range(0, rows, 100_000):
        stop = min(rows, start + 100_000)
        database[start:stop] = rng.standard_normal((stop - start, width), dtype=np.float32)
    queries = rng.standard_normal((args.search_queries, width), dtype=np.float32)
    k = min(args.k, rows)
    out = {}
    for dim in dims:
        index = build_index(database, "exact", dim=dim, use_gpu=False)
        q = normalize_prefix(queries, dim)
        index.search(q[:1], k)  # warm-up of the scan
        with matrix_product_search():  # every dim's batch on the same path
            index.search(q[: min(8, len(q))], k)  # warm-up of the BLAS path
            times = []
            for _ in range(args.search_repeats):
                start = time.perf_counter()
                index.search(q, k)
                times.append(1e3 * (time.perf_counter() - start) / len(q))
            cost = {"batch_ms": float(np.median(times))}
        if single:
            times = []
            for i in range(args.search_single):
                start = time.perf_counter()
                index.search(q[i % len(q) : i % len(q) + 1], k)
                times.append(1e3 * (time.perf_counter() - start))
            cost["single_p50_ms"] = float(np.median(times))
        out[dim] = cost
        del index
    return out


def measure_quality(tier: Tier, work: Workload, args: argparse.Namespace) -> dict[str, float]:
    """recall@k and mAP@k of the tier's own ONNX embeddings of the run's queries and database."""
    from mrl.eval.retrieval import evaluate_retrieval

    sess = open_session(tier.path, args.threads)
    database = embed(sess, work.db_batches(), tier.output)
    queries = embed(sess, work.query_batches(), tier.output)
    rows = evaluate_retrieval(
        database, work.db_labels, queries, work.query_labels, dims=[tier.dim], ks=(args.k,),
        knn_ks=(1,), backend=work.backend, tie_aware_max_dim=work.tie_aware_max_dim,
    )  # fmt: skip
    value = {r["metric"]: float(r["value"]) for r in rows}
    return {"recall": value[f"recall@{args.k}"], "map": value[f"map@{args.k}"]}


# -- rows, tables, figure -----------------------------------------------------------------------


# -- the run ------------------------------------------------------------------------------------


def machine(threads: int) -> dict[str, Any]:
    """The CPU, the libraries and the threads of this run."""
    import faiss
    import onnxruntime

    return {
        "cpu": cpu_name(),
        "cores": len(os.sched_getaffinity(0)),
        "threads": threads,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "onnxruntime": onnxruntime.__version__,
        "faiss": faiss.__version__,
    }


def settings(args: argparse.Namespace, export: Path) -> dict[str, Any]:
    """The settings a row depends on (and those the tables state)."""
    return {
        "export": relative(export), "threads": args.threads, "batch": args.batch,
        "latency_calls": math.ceil(args.calls / args.rounds) * args.rounds, "warmup": args.warmup,
        "batches": math.ceil(args.batches / args.rounds) * args.rounds, "rounds": args.rounds,
        "search_rows": args.search_rows, "search_queries": args.search_queries,
        "search_repeats": args.search_repeats, "search_single": args.search_single,
        "k": args.k, "seed": args.seed,
    }  # fmt: skip


def environment() -> str:
    """The `NAME=value ` prefix of the variables in `ENV` that this process has."""
    return "".join(f"{name}={os.environ[name]} " for name in ENV if os.environ.get(name))


def command_line(argv: Sequence[str] | None) -> str:
    """This benchmark's command as it was given, with the thread variable it ran under."""
    args = sys.argv[1:] if argv is None else list(argv)
    env = environment()
    script = relative(Path(__file__))
    return f"{env}.venv/bin/python {script} {' '.join(shlex.quote(a) for a in args)}".strip()


def check_rows(rows: list[dict], info: dict | None, want: dict[str, Any], out: Path) -> None:
    """Refuse rows measured under other settings than `want`, by the rows' own columns and
    the settings their JSON recorded (one line, the fix)."""
    found = [(key, row.get(key)) for row in rows for key in SETTING_COLUMNS
             if str(row.get(key)) != str(want[key])]  # fmt: skip
    if rows and info and info.get("settings"):
        found += [(key, value) for key, value in info["settings"].items()
                  if key in want and value != want[key]]  # fmt: skip
    if found:
        key, value = found[0]
        raise ConfigError(
            f"{out} holds rows measured with {key}={value}, this run has {want[key]}: pass "
            f"--fresh to measure again, or --out elsewhere"
        )


def run(args: argparse.Namespace, argv: Sequence[str] | None = None) -> list[dict]:
    """Measure every tier not yet in `args.out` and rewrite the outputs; returns all rows."""
    import torch

    torch.set_num_threads(args.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        pass
    out = Path(args.out)
    k = args.k
    rows = [] if args.fresh else read_rows(out)
    info = read_json(out.with_suffix(".json")) if not args.fresh else None
    want = settings(args, Path(args.export) if args.export else Path(args.work) / "export")
    done = {(r["dim"], r["precision"]) for r in rows}
    check_rows(rows, info, want, out)
    if info and rows and set(map(tuple, info["tiers"])) <= done:
        log(f"every tier is in {out}: rewriting the tables only")
        write_outputs(out, rows, info, k)
        return rows

    commands = []
    if args.export is None:
        export, commands = make_subject(Path(args.work), args.dims, args.train_synsets,
                                        args.test_synsets)  # fmt: skip
    else:
        export = Path(args.export)
    card, tiers = load_export(export)
    source = card["source"]
    subject = {
        "title": ("MiniLM" if source["kind"] == "text" else "an image encoder")
        + f" ({source['task']}, {source['representation_size']}-d)",
        "checkpoint": relative(Path(source["checkpoint"])),
        "kind": source["kind"], "task": source["task"], "global_step": source["global_step"],
        "nesting": source["nesting"],
    }  # fmt: skip
    pending = [t for t in tiers if t.key not in done]
    cfg, reason = run_config(card)
    log(f"{len(tiers)} tiers in {export}, {len(pending)} to measure")
    if source["kind"] == "text":
        work = text_workload(card, export, cfg, args)
    else:
        work = image_workload(card, cfg, args)
    if cfg is None:
        work.quality_note = f"not measured: {reason}"
    info = {
        "settings": want,
        "subject": subject,
        "machine": machine(args.threads),
        "inputs": work.note,
        "quality": work.quality_note,
        "commands": [*commands, command_line(argv)],
        "tiers": [list(t.key) for t in tiers],
    }
    if not pending:
        write_outputs(out, rows, info, k)
        return rows

    log("timing the encoders")
    timings = time_tiers(pending, work, args)
    pending_dims = sorted({t.dim for t in pending})
    log(f"timing exact search over {args.search_rows:,} vectors")
    large = search_costs(pending_dims, args.search_rows, args, single=True)
    small = search_costs(pending_dims, work.db_rows, args, single=False) if work.db_rows else {}
    largest = max(t.dim for t in tiers)
    for tier in pending:
        quality, source_note = (None, "")
        if tier.precision == "float32":
            quality, where = recorded_retrieval(tier.card.get("quality"), k)
            source_note = f"card: {where}" if quality is not None else ""
        measure = work.db_batches is not None and (
            quality is None or args.measure_float or tier.dim == largest
        )
        measured = None
        if measure:
            log(f"measuring the quality of dim {tier.dim} {tier.precision}")
            measured = measure_quality(tier, work, args)
        if quality is None and measured is not None:
            quality, source_note = measured, "measured: ONNX Runtime, " + work.quality_note
        int8 = tier.card.get("int8") or {}
        dim = tier.dim
        row = {
            "dim": dim, "precision": tier.precision, "model_file": relative(tier.path),
            "model_bytes": tier.path.stat().st_size, "threads": args.threads,
            **timings[tier.key], "batch": args.batch,
            "embedding_bytes_float32": 4 * dim, "embedding_bytes_int8": dim,
            "embedding_bytes_binary": math.ceil(dim / 8),
            "db_rows": work.db_rows,
            "db_search_ms_per_query": small[dim]["batch_ms"] if small else None,
            "search_rows": args.search_rows, "search_ms_per_query": large[dim]["batch_ms"],
            "search_p50_ms": large[dim]["single_p50_ms"],
            "serve_p50_ms": timings[tier.key]["latency_p50_ms"] + large[dim]["single_p50_ms"],
            f"recall@{k}": None if quality is None else quality["recall"],
            f"map@{k}": None if quality is None else quality["map"],
            "quality_source": source_note or work.quality_note,
            f"measured_recall@{k}": None if measured is None else measured["recall"],
            f"measured_map@{k}": None if measured is None else measured["map"],
            "int8_min_cosine": int8.get("min_cosine") if tier.precision == "int8" else None,
            "export": want["export"],
        }  # fmt: skip
        rows.append(row)
        write_outputs(out, rows, info, k)
    return rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The benchmark's options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--export", default=None, help="an mrl-export folder (default: make the "
                   "MiniLM subject under --work)")  # fmt: skip
    p.add_argument("--work", default=str(DEFAULT_WORK), help="where the default subject's run "
                   "and export are made and kept")  # fmt: skip
    p.add_argument("--dims", type=int, nargs="+", default=list(DEFAULT_DIMS),
                   help="the default subject's exported dims")  # fmt: skip
    p.add_argument("--train-synsets", type=int, default=rd.DEFAULT_TRAIN_SYNSETS)
    p.add_argument("--test-synsets", type=int, default=rd.DEFAULT_TEST_SYNSETS)
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op and FAISS threads")
    p.add_argument("--calls", type=int, default=1000, help="batch-1 calls per tier")
    p.add_argument("--warmup", type=int, default=50, help="untimed batch-1 calls per tier")
    p.add_argument("--batch", type=int, default=64, help="the throughput batch size")
    p.add_argument("--batches", type=int, default=20, help="timed batches per tier")
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds of the timings")
    p.add_argument("--queries", type=int, default=256, help="distinct batch-1 queries")
    p.add_argument("--search-rows", type=int, default=1_000_000)
    p.add_argument("--search-queries", type=int, default=128, help="queries of a search batch")
    p.add_argument("--search-repeats", type=int, default=3, help="search batches timed")
    p.add_argument("--search-single", type=int, default=20, help="one-query searches timed")
    p.add_argument("--k", type=int, default=10, help="recall@k and mAP@k")
    p.add_argument("--measure-float", action="store_true", help="measure the float models' "
                   "quality too where the card has it")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="drop the rows already in --out")
    p.add_argument("--out", default=str(output_root() / "bench" / "tiers.csv"),
                   help="the CSV, the other outputs beside it (default: %(default)s)")  # fmt: skip
    args = p.parse_args(argv)
    for name in ("threads", "calls", "batch", "batches", "rounds", "queries", "search_rows",
                 "search_queries", "search_repeats", "search_single", "k"):  # fmt: skip
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Run the benchmark and print its table."""
    args = parse_args(argv)
    try:
        rows = run(args, argv)
    except ConfigError as err:
        print(f"tiers.py: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    md = Path(args.out).with_suffix(".md")
    if md.is_file():
        print(md.read_text())
    return rows


if __name__ == "__main__":
    main()
