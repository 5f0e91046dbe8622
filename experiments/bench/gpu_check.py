"""Every GPU-only path of the framework, checked and timed by one command on one CUDA GPU.

    make gpu-check                                      # .venv's Python, results in
                                                        # outputs/gpu_check/
    python3 experiments/bench/gpu_check.py [--out DIR]  # a machine's own CUDA PyTorch
    python3 experiments/bench/gpu_check.py --dry-run    # the same code on the CPU, tiny sizes

Checks: the tests marked `gpu` (`tests/test_gpu.py`: heads and losses on the device in float32
and bf16 against the CPU, the losses' buffers on the device, `fast_dev_run`s of the default job
in bf16-mixed, 16-mixed, channels_last and `model.compile=true` and of the ResNet-50 recipe on a
generated JPEG ImageFolder with PIL and with device decoding, `mrl-eval` on the device against
the CPU, FAISS GPU flat and IVF against FAISS CPU, nvjpeg against PIL). Timings, each side by
side in one run: training images/s of ResNet-50 at 224 px (bf16 autocast, channels_last,
eager and compiled) with the MRL head, the MRL-E head and one plain head (the figure that
matters is MRL / plain); the input pipeline's images/s on generated JPEGs (PIL in loader
workers against device decoding); the heads (MRL-E's fused kernel, MRL's `Linear` per prefix)
at the paper's shapes against the authors' layer and one plain head; exact against adaptive
retrieval (a 16-dim shortlist of 200, re-ranked at 2048 dims) over a 1M x 2048 database on the
GPU.

Writes `<out>/gpu_check.json` (environment, every check with its status and seconds, every
timing) and `<out>/gpu_check.md`, as each section finishes (`--out` defaults to
`$MRL_OUTPUT_ROOT/gpu_check`, `$MRL_OUTPUT_ROOT` defaulting to `outputs`); exits 1 if any check
failed, 2 on bad arguments (no CUDA GPU without `--dry-run`). The dry run is part of
`make test`, so the script cannot rot between GPU loans. Sized to finish within `--budget-s`
(8 minutes on one H200, imports and compilation included): a section that would start past the
budget is recorded as skipped.

Installs nothing. Expects, on the GPU machine: CUDA PyTorch (2.1 or newer), torchvision,
lightning, torchmetrics, hydra-core, omegaconf, numpy, pillow and pytest; FAISS with GPU
support is optional (its checks skip without it). This package is imported from the checkout
the script sits in, so it need not be installed; a machine image's own versions of torch,
lightning and transformers are used as they are and recorded in the JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the checkout's package, whether or not it is installed
    sys.path.insert(0, str(ROOT))

PAPER_NESTING = (8, 16, 32, 64, 128, 256, 512, 1024, 2048)

# Sizes of each section: the real run on a GPU, and the dry run on a CPU.
SIZES = {
    "gpu": dict(
        depth=50,
        resolution=224,
        batch=256,
        classes=1000,
        nesting=PAPER_NESTING,
        rounds=10,
        jpegs=1024,
        jpeg_batch=128,
        jpeg_resolution=224,
        workers=(0, 8),
        kernel_batch=256,
        kernel_repeats=25,
        db_rows=1_000_000,
        db_dim=2048,
        queries=1000,
        shortlist_dim=16,
        shortlist=200,
        k=10,
    ),
    "dry": dict(
        depth=18,
        resolution=32,
        batch=4,
        classes=10,
        nesting=(8, 16, 32, 64, 128, 256, 512),
        rounds=2,
        jpegs=16,
        jpeg_batch=8,
        jpeg_resolution=32,
        workers=(0,),
        kernel_batch=8,
        kernel_repeats=2,
        db_rows=2000,
        db_dim=64,
        queries=50,
        shortlist_dim=8,
        shortlist=50,
        k=10,
    ),
}


def load_script(name: str) -> ModuleType:
    """A sibling benchmark script, loaded by path (its directory is never put on sys.path)."""
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestRecorder:
    """A pytest plugin that keeps each test's outcome, duration and first error line."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when == "call" or report.outcome != "passed":  # skips and errors: any phase
            detail = ""
            if report.outcome == "skipped" and isinstance(report.longrepr, tuple):
                detail = str(report.longrepr[2])
            elif report.outcome == "failed":
                detail = str(report.longrepr).strip().splitlines()[-1][:300]
            self.rows.append(dict(
                name=report.nodeid.split("::", 1)[-1], status=report.outcome,
                seconds=round(report.duration, 2), detail=detail,
            ))  # fmt: skip


def run_tests(device: str) -> list[dict[str, Any]]:
    """The `gpu`-marked tests on `device`, in this process."""
    import pytest

    os.environ["MRL_CHECK_DEVICE"] = device
    recorder = TestRecorder()
    args = [str(ROOT / "tests" / "test_gpu.py"), "-m", "gpu", "-q", "-p", "no:cacheprovider",
            "--rootdir", str(ROOT)]  # fmt: skip
    code = pytest.main(args, plugins=[recorder])
    if code not in (0, 1) or not recorder.rows:
        recorder.rows.append(dict(name="pytest", status="failed", seconds=0.0,
                                  detail=f"pytest exited with status {int(code)}"))  # fmt: skip
    return recorder.rows


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def interleaved_medians(steps: dict[str, Callable[[], None]], rounds: int, device: str,
                        warmup: int = 2) -> dict[str, float]:  # fmt: skip
    """Median seconds per call of each step, timed in rounds that interleave the steps."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def time_training(device: str, size: dict, compiled: bool) -> list[dict[str, Any]]:
    """Training images/s of a ResNet with each head (bf16 autocast, channels_last)."""
    import torch

    from mrl import MatryoshkaLoss, MRLHead
    from mrl.encoders.resnet import resnet

    torch.manual_seed(0)
    encoder = resnet(size["depth"], small_input=size["resolution"] <= 64)
    encoder = encoder.to(device, memory_format=torch.channels_last)
    width, nesting, classes = encoder.num_features, size["nesting"], size["classes"]
    heads = {
        "mrl": MRLHead(width, classes, nesting),
        "mrl_e": MRLHead(width, classes, nesting, tied=True),
        "single head": MRLHead(width, classes, [width]),
    }
    forward = torch.compile(encoder) if compiled else encoder
    loss = MatryoshkaLoss().to(device)
    x = torch.randn(size["batch"], 3, size["resolution"], size["resolution"], device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (size["batch"],), device=device)
    steps = {}
    for name, head in heads.items():
        head.to(device)
        params = [*encoder.parameters(), *head.parameters()]
        optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9)

        def step(head: torch.nn.Module = head, optimizer: torch.optim.Optimizer = optimizer):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device, dtype=torch.bfloat16):
                value = loss(head(forward(x)), y)
            value.backward()
            optimizer.step()

        steps[name] = step
    medians = interleaved_medians(steps, size["rounds"], device)
    single = medians["single head"]
    return [
        dict(section="training", setting=f"resnet{size['depth']} {name}"
             + (" compiled" if compiled else ""),
             images_per_s=round(size["batch"] / seconds, 1), ms=round(1e3 * seconds, 2),
             ratio_to="single head", ratio=round(seconds / single, 3))
        for name, seconds in medians.items()
    ]  # fmt: skip


def time_input_pipeline(device: str, size: dict) -> list[dict[str, Any]]:
    """Training-transform images/s of PIL in loader workers against device decoding."""
    loader = load_script("loader_throughput")
    args = SimpleNamespace(batch_size=size["jpeg_batch"], resolution=size["jpeg_resolution"],
                           warmup=1, passes=1)  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        loader.write_jpegs(root, size["jpegs"])
        for workers in size["workers"]:
            for path in ("pil", "decode_device"):
                rate = loader.measure(root, path, device, workers, args)
                rows.append(dict(section="input pipeline", setting=f"{path}, {workers} workers",
                                 images_per_s=round(rate, 1)))  # fmt: skip
    return rows


def time_fused_heads(device: str, size: dict) -> list[dict[str, Any]]:
    """Head + loss, forward and backward, of the heads (MRL-E's fused kernel), the authors'
    layer and a plain head."""
    import torch

    kernels = load_script("fused_kernels")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    steps = kernels.head_steps(size["classes"], size["kernel_batch"], size["nesting"], device,
                               dtype)  # fmt: skip
    medians = interleaved_medians(steps, size["kernel_repeats"], device)
    ratio_to = {"mrl": "authors MRL", "mrl_e": "authors MRL-E"}
    rows = []
    for name, seconds in medians.items():
        reference = ratio_to.get(name, "plain")
        rows.append(dict(section="fused heads", setting=f"{name} ({str(dtype)[6:]})",
                         ms=round(1e3 * seconds, 3), ratio_to=reference,
                         ratio=round(seconds / medians[reference], 3)))  # fmt: skip
    return rows


def _top_k(queries, database, k: int, chunk: int):
    """Exact top-k inner products over database rows, in chunks of rows."""
    import torch

    best_scores = best_ids = None
    for start in range(0, database.shape[0], chunk):
        scores = queries @ database[start : start + chunk].T
        top = scores.topk(min(k, scores.shape[1]), dim=1)
        ids = top.indices + start
        if best_scores is not None:
            scores_both = torch.cat([best_scores, top.values], dim=1)
            ids_both = torch.cat([best_ids, ids], dim=1)
            keep = scores_both.topk(k, dim=1).indices
            best_scores, best_ids = scores_both.gather(1, keep), ids_both.gather(1, keep)
        else:
            best_scores, best_ids = top.values, ids
    return best_scores, best_ids


def time_retrieval(device: str, size: dict) -> list[dict[str, Any]]:
    """Exact search at the full dim against a short-prefix shortlist re-ranked at the full dim.

    The database has Matryoshka-like structure (the variance of coordinate i falls as
    1/(i+1), so leading coordinates carry the most), normalised rows; queries are noisy copies
    of database rows. Both searches run on `device` in float32.
    """
    import torch

    g = torch.Generator(device=device).manual_seed(0)
    rows, dim, m = size["db_rows"], size["db_dim"], size["shortlist_dim"]
    scale = torch.arange(1, dim + 1, device=device, dtype=torch.float32).rsqrt()
    database = torch.randn(rows, dim, device=device, generator=g) * scale
    database /= database.norm(dim=1, keepdim=True)
    picks = torch.randint(0, rows, (size["queries"],), device=device, generator=g)
    queries = database[picks] + 0.05 * scale * torch.randn(size["queries"], dim, device=device,
                                                           generator=g)  # fmt: skip
    prefix = database[:, :m].contiguous()
    prefix = prefix / prefix.norm(dim=1, keepdim=True)
    chunk = 262_144
    k, shortlist = size["k"], size["shortlist"]
    found: dict[str, Any] = {}

    def exact() -> None:
        found["exact"] = _top_k(queries, database, k, chunk)[1]

    def adaptive() -> None:
        q = queries[:, :m] / queries[:, :m].norm(dim=1, keepdim=True)
        candidates = _top_k(q, prefix, shortlist, chunk)[1]
        scores = torch.einsum("qd,qsd->qs", queries, database[candidates])
        found["adaptive"] = candidates.gather(1, scores.topk(k, dim=1).indices)

    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # exact float32 products on both sides
    try:
        medians = interleaved_medians({"exact": exact, "adaptive": adaptive}, 3, device, 1)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    same = (found["adaptive"].sort(dim=1).values.unsqueeze(2)
            == found["exact"].sort(dim=1).values.unsqueeze(1)).any(dim=2)  # fmt: skip
    overlap = same.float().mean().item()
    label = f"{rows:,} x {dim}, {size['queries']} queries, top {k}"
    return [
        dict(section="retrieval", setting=f"exact, {label}",
             ms=round(1e3 * medians["exact"], 2), ratio_to="exact", ratio=1.0),
        dict(section="retrieval", setting=f"adaptive ({m}-dim shortlist of {shortlist}), {label}",
             ms=round(1e3 * medians["adaptive"], 2), ratio_to="exact",
             ratio=round(medians["adaptive"] / medians["exact"], 3),
             overlap_with_exact=round(overlap, 4)),
    ]  # fmt: skip


def environment(device: str) -> dict[str, Any]:
    import importlib.metadata as metadata

    import torch

    versions = {}
    for name in ("torch", "torchvision", "lightning", "torchmetrics", "hydra-core", "omegaconf",
                 "numpy", "pillow", "faiss-cpu", "faiss-gpu", "transformers"):  # fmt: skip
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    info = dict(device=device, python=sys.version.split()[0], packages=versions,
                cuda=torch.version.cuda)  # fmt: skip
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def failed(results: dict[str, Any]) -> list[str]:
    """The names of the checks and sections that failed."""
    return [c["name"] for c in results["checks"] if c["status"] == "failed"]


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [f"# GPU check ({'dry run, CPU' if results['dry_run'] else env.get('gpu', '')})", "",
             f"`{results['command']}`: {results['seconds']:.0f} s; torch "
             f"{env['packages'].get('torch', '?')}, CUDA {env['cuda']}.", "",
             "| check | status | s | detail |", "|---|---|---:|---|"]  # fmt: skip
    for c in results["checks"]:
        lines.append(f"| {c['name']} | {c['status']} | {c['seconds']} | {c['detail']} |")
    bad = failed(results)
    lines += ["", f"**{len(bad)} failed**: {', '.join(bad)}" if bad else "**All checks passed "
              "or skipped with a reason.**", ""]  # fmt: skip
    columns = ["section", "setting", "images_per_s", "ms", "ratio_to", "ratio",
               "overlap_with_exact"]  # fmt: skip
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for t in results["timings"]:
        lines.append("| " + " | ".join(str(t.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any], out: Path) -> None:
    from mrl.runs.files import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "gpu_check.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(out / "gpu_check.md", markdown(results))


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--dry-run", action="store_true",
                        help="the same code paths on the CPU at tiny sizes")  # fmt: skip
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default: $MRL_OUTPUT_ROOT/gpu_check (dry run: $MRL_OUTPUT_ROOT/gpu_check_dry), "
        "$MRL_OUTPUT_ROOT defaulting to outputs",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=480.0,
        help="sections that would start later than this are skipped",
    )
    parser.add_argument("--skip-tests", action="store_true", help="timings only")
    parser.add_argument("--skip-timings", action="store_true", help="checks only")
    args = parser.parse_args(argv)
    if args.budget_s <= 0:
        parser.error(f"--budget-s must be positive, got {args.budget_s}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    start = time.perf_counter()
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is visible to PyTorch "
              f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); run it on a GPU "
              "machine, or pass --dry-run for the CPU rehearsal", file=sys.stderr)  # fmt: skip
        return 2
    device = "cpu" if args.dry_run else "cuda"
    size = SIZES["dry" if args.dry_run else "gpu"]
    from mrl.report.paths import output_root

    out = args.out or output_root() / ("gpu_check_dry" if args.dry_run else "gpu_check")
    command = "python experiments/bench/gpu_check.py" + (" " + " ".join(argv) if argv else "")
    results: dict[str, Any] = dict(
        command=command, dry_run=args.dry_run, seconds=0.0, environment=environment(device),
        checks=[], timings=[],
    )  # fmt: skip

    def section(name: str, work: Callable[[], list[dict[str, Any]]], is_tests: bool = False):
        began = time.perf_counter()
        if began - start > args.budget_s:
            results["checks"].append(
                dict(
                    name=name,
                    status="skipped",
                    seconds=0.0,
                    detail="over the time budget (--budget-s)",
                )
            )
            return
        print(f"gpu_check: {name} ...", flush=True)
        try:
            rows = work()
        except Exception as err:  # a broken section is a failed check; the others still run
            traceback.print_exc()
            rows, error = [], f"{type(err).__name__}: {err}".splitlines()[0][:300]
            results["checks"].append(dict(name=name, status="failed",
                                          seconds=round(time.perf_counter() - began, 2),
                                          detail=error))  # fmt: skip
        else:
            if is_tests:
                results["checks"].extend(rows)
            else:
                results["timings"].extend(rows)
                results["checks"].append(dict(name=name, status="passed",
                                              seconds=round(time.perf_counter() - began, 2),
                                              detail=f"{len(rows)} figures"))  # fmt: skip
        if device == "cuda":
            torch.cuda.empty_cache()
        results["seconds"] = round(time.perf_counter() - start, 1)
        write(results, out)

    if not args.skip_tests:
        section("gpu tests", lambda: run_tests(device), is_tests=True)
    if not args.skip_timings:
        section("timing: fused heads", lambda: time_fused_heads(device, size))
        section("timing: training, eager", lambda: time_training(device, size, compiled=False))
        section("timing: training, compiled", lambda: time_training(device, size, compiled=True))
        section("timing: input pipeline", lambda: time_input_pipeline(device, size))
        section("timing: retrieval", lambda: time_retrieval(device, size))
    results["seconds"] = round(time.perf_counter() - start, 1)
    write(results, out)
    print(markdown(results))
    bad = failed(results)
    print(f"gpu_check: {len(bad)} failed; results in {out}" if bad
          else f"gpu_check: all passed; results in {out}")  # fmt: skip
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
