"""Forward + backward time of the Matryoshka heads against the naive computation.

Heads (head + loss, forward and backward, the gradients of the representation, weights and
biases), at the paper's shapes (batch 256, D 2048, nesting 8..2048) with 1000 classes
(ImageNet-1K) and 4202 (ImageNet-4K):

- `plain`: one `Linear(D, C)` + cross-entropy, the cost of an ordinary classifier;
- `authors MRL` / `authors MRL-E`: the authors' layer as its equations read (one slice, one
  product and one cross-entropy per nesting dim, summed; `mrl.core.naive`), untied and tied;
- `mrl` / `mrl_e`: this package's `MRLHead` + `MatryoshkaLoss` (one cross-entropy over every
  dim's logits); the untied heads are one `Linear` per prefix, the tied head is the fused kernel
  of `mrl.core.fused`.

Every setting is timed in rounds that interleave the settings of its table (machine noise hits
all alike): median of `--repeats` after warm-up, and the ratios of medians. `--compile` adds the
same under `torch.compile` where it works on CPU; a GPU section (bf16) runs when CUDA is there.
Writes `--out` (default `$MRL_OUTPUT_ROOT/bench/kernels.csv`, `$MRL_OUTPUT_ROOT` defaulting to
`outputs`: table, setting, ms, ratio_to, ratio) and the same tables as Markdown beside it
(`kernels.md`); the recorded ones are rewritten only when `--out` names them.

    OMP_NUM_THREADS=2 .venv/bin/python experiments/bench/fused_kernels.py [--repeats 25] \
        [--compile] [--out experiments/results/bench/kernels.csv]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from mrl import MatryoshkaLoss, MRLHead
from mrl.core import naive
from mrl.report.paths import output_root
from mrl.runs.files import atomic_write_text, write_csv

PAPER_NESTING = (8, 16, 32, 64, 128, 256, 512, 1024, 2048)


def _timed(step: Callable[[], None], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if device == "cuda":
        torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - start)


def interleaved(steps: dict[str, Callable[[], None]], repeats: int, device: str) -> dict:
    """Median ms per step of each setting, timed in interleaved rounds after two warm-ups."""
    for step in steps.values():
        step()
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            times[name].append(_timed(step, device))
    return {name: statistics.median(values) for name, values in times.items()}


def head_steps(
    classes: int, batch: int, nesting: tuple[int, ...], device: str, dtype: torch.dtype,
    compiled: bool = False,
) -> dict[str, Callable[[], None]]:  # fmt: skip
    """One forward + backward of each head and its loss at these shapes."""
    dim = nesting[-1]
    g = torch.Generator().manual_seed(0)
    z = torch.randn(batch, dim, generator=g).to(device, dtype).requires_grad_()
    y = torch.randint(0, classes, (batch,), generator=g).to(device)
    plain = torch.nn.Linear(dim, classes).to(device, dtype)
    untied = MRLHead(dim, classes, nesting).to(device, dtype)
    tied = MRLHead(dim, classes, nesting, tied=True).to(device, dtype)
    loss = MatryoshkaLoss()

    def authors_untied() -> torch.Tensor:
        logits = naive.nested_logits(
            z, [lin.weight for lin in untied.linears], [lin.bias for lin in untied.linears],
            nesting,
        )  # fmt: skip
        return sum(F.cross_entropy(x, y) for x in logits)

    def authors_tied() -> torch.Tensor:
        logits = naive.tied_nested_logits(z, tied.linear.weight, tied.linear.bias, nesting)
        return sum(F.cross_entropy(x, y) for x in logits)

    losses = {
        "plain": lambda: F.cross_entropy(plain(z), y),
        "authors MRL": authors_untied,
        "mrl": lambda: loss(untied(z), y),
        "authors MRL-E": authors_tied,
        "mrl_e": lambda: loss(tied(z), y),
    }
    if compiled:
        losses = {name: torch.compile(fn) for name, fn in losses.items()}
    params = [z, *plain.parameters(), *untied.parameters(), *tied.parameters()]

    def step(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            for p in params:
                p.grad = None
            fn().backward()

        return run

    return {name: step(fn) for name, fn in losses.items()}


MARKDOWN: list[str] = []


def say(text: str) -> None:
    """Print a line of the report and keep it for `kernels.md`."""
    print(text, flush=True)
    MARKDOWN.append(text)


def table(title: str, medians: dict[str, float], ratios: list[tuple[str, str]]) -> list[dict]:
    """Rows of one table, printed as Markdown: each setting's ms and its ratios."""
    rows = []
    say(f"\n### {title}\n\n| setting | ms | ratio |\n|---|---:|---|")
    for name, ms in medians.items():
        shown = [f"{ms / medians[ref]:.2f} x {ref}" for a, ref in ratios if a == name]
        say(f"| {name} | {ms:.1f} | {'; '.join(shown)} |")
        rows.append({"table": title, "setting": name, "ms": round(ms, 3), "ratio_to": "",
                     "ratio": ""})  # fmt: skip
        for a, ref in ratios:
            if a == name:
                rows.append({"table": title, "setting": name, "ms": round(ms, 3),
                             "ratio_to": ref, "ratio": round(ms / medians[ref], 4)})  # fmt: skip
    return rows


HEAD_RATIOS = [
    ("authors MRL", "plain"), ("mrl", "authors MRL"), ("mrl", "plain"),
    ("authors MRL-E", "plain"), ("mrl_e", "authors MRL-E"), ("mrl_e", "plain"),
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--compile", action="store_true", help="also time under torch.compile")
    parser.add_argument(
        "--out",
        type=Path,
        default=output_root() / "bench" / "kernels.csv",
        help="the CSV; the Markdown goes beside it (default: %(default)s)",
    )
    args = parser.parse_args()
    say(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of "
        f"{args.repeats} interleaved rounds"
    )
    rows: list[dict] = []
    devices = [("cpu", torch.float32)]
    if torch.cuda.is_available():
        devices.append(("cuda", torch.bfloat16))
    else:
        say("\nGPU section: skipped (no CUDA device)")
    for device, dtype in devices:
        where = f"{device} {str(dtype).removeprefix('torch.')}"
        for classes in (1000, 4202):
            title = f"heads + loss, B {args.batch}, D 2048, {classes} classes, {where}"
            steps = head_steps(classes, args.batch, PAPER_NESTING, device, dtype)
            rows += table(title, interleaved(steps, args.repeats, device), HEAD_RATIOS)
            write_csv(args.out, rows)
        if args.compile:
            title = f"heads + loss under torch.compile, B {args.batch}, 1000 classes, {where}"
            try:
                steps = head_steps(1000, args.batch, PAPER_NESTING, device, dtype, compiled=True)
                rows += table(title, interleaved(steps, args.repeats, device), HEAD_RATIOS)
            except Exception as err:  # noqa: BLE001  (what fails to compile is reported, not fatal)
                say(f"\n### {title}\n\nnot measured: {type(err).__name__}: {err}"[:300])
            write_csv(args.out, rows)
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(MARKDOWN).lstrip() + "\n")
    print(f"\nwrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
