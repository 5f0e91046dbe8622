"""Wall time of each `mrl-eval` stage on one checkpoint: encoding, heads, probes, retrieval (per
dim), robustness (per corrupted set), baselines, adaptive classification and adaptive retrieval.

Runs the evaluation in-process, as `mrl-eval` does, with embeddings encoded afresh (as after a
training run) into a scratch `out_dir`, so the run's own `eval/` is left alone. Writes
`<out>/eval_time-<label>.csv` (stage,seconds,share) and that label's section of
`<out>/eval_time.md` (other labels' sections are kept), and prints the table. `--out` defaults to
`$MRL_OUTPUT_ROOT/bench` (`$MRL_OUTPUT_ROOT` defaulting to `outputs`).

    .venv/bin/python experiments/bench/eval_time.py [--ckpt <run>/checkpoints/last.ckpt] \
        [--label after] [--out experiments/results/bench] [eval overrides...]

Without `--ckpt`, the newest `outputs/fmnist/*/checkpoints/last.ckpt`.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import re
import sys
import time
from pathlib import Path

import mrl.training.resolvers  # noqa: F401  (registers the config resolvers)
from mrl.cli.evaluate import compose_eval_config, evaluate
from mrl.report.paths import output_root
from mrl.runs.files import atomic_write_text, write_csv


def newest_checkpoint(root: Path) -> Path:
    """The most recently written `<root>/fmnist/*/checkpoints/last.ckpt`."""
    found = sorted(root.glob("fmnist/*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"no checkpoint under {root}/fmnist: train one with mrl-train")
    return found[-1]


def stage_rows(timings: dict[str, float], wall: float) -> list[dict]:
    """`{stage, seconds, share}` per timed stage (steps `<stage>/<step>` indented under their
    stage), then the remainder of `wall` as `other` and the `total`."""
    top = {k: v for k, v in timings.items() if "/" not in k}
    rows = []
    for name, seconds in top.items():
        rows.append({"stage": name, "seconds": seconds, "share": seconds / wall})
        for key, s in timings.items():
            if key.startswith(f"{name}/"):
                rows.append({"stage": f"  {key}", "seconds": s, "share": s / wall})
    other = wall - sum(top.values())
    rows.append({"stage": "other (loading, tables)", "seconds": other, "share": other / wall})
    rows.append({"stage": "total", "seconds": wall, "share": 1.0})
    return [{**r, "seconds": round(r["seconds"], 2), "share": round(r["share"], 3)} for r in rows]


def markdown_section(label: str, command: str, conditions: str, rows: list[dict]) -> str:
    lines = [f"## {label}", "", f"`{command}`", "", conditions, "",
             "| stage | seconds | share |", "|---|---:|---:|"]  # fmt: skip
    lines += [f"| {r['stage'].strip()} | {r['seconds']:.2f} | {r['share']:.1%} |" for r in rows]
    return "\n".join(lines) + "\n"


def merge_markdown(path: Path, label: str, section: str) -> str:
    """The markdown file at `path` with `label`'s section replaced (or appended)."""
    head = "# `mrl-eval` wall time per stage\n\nWritten by `experiments/bench/eval_time.py`.\n\n"
    text = path.read_text() if path.is_file() else head
    pattern = re.compile(rf"^## {re.escape(label)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        return pattern.sub(lambda _: section + "\n", text).rstrip() + "\n"
    return text.rstrip() + "\n\n" + section


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default=None, help="checkpoint (default: the newest fmnist run)")
    parser.add_argument("--label", default="run", help="section name, e.g. before or after")
    parser.add_argument("--out", default=str(output_root() / "bench"), help="(%(default)s)")
    parser.add_argument("--note", default="", help="machine conditions, written with the table")
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")

    ckpt = Path(args.ckpt) if args.ckpt else newest_checkpoint(output_root())
    out = Path(args.out)
    scratch = output_root() / "bench" / "eval_time_run"
    cfg = compose_eval_config(
        [f"ckpt_path={ckpt}", f"out_dir={scratch}", "reuse_embeddings=false", *overrides]
    )
    t0 = time.perf_counter()
    summary = evaluate(cfg)
    wall = time.perf_counter() - t0
    rows = stage_rows(summary["timings"], wall)

    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / f"eval_time-{args.label}.csv", rows)
    command = " ".join(["python experiments/bench/eval_time.py", *argv])
    conditions = (f"{platform.node()}: {os.cpu_count()} CPU cores, torch threads "
                  f"{_torch_threads()}, checkpoint `{ckpt}`. {args.note}").strip()  # fmt: skip
    section = markdown_section(args.label, command, conditions, rows)
    md = out / "eval_time.md"
    atomic_write_text(md, merge_markdown(md, args.label, section))
    print(section)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main(sys.argv[1:])
