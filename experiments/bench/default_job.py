"""Wall time and per-dim test accuracy of the default job (`mrl-train` with no overrides).

Runs the job in a fresh process exactly as a user would, under a new run directory, and records
the wall time (including start-up) and the per-dim accuracies from its results.json into
`--out` (dim,top1,top5,wall_time_s,run_dir; default `$MRL_OUTPUT_ROOT/bench/default_job.csv`,
`$MRL_OUTPUT_ROOT` defaulting to `outputs`).

    .venv/bin/python experiments/bench/default_job.py \
        [--out experiments/results/bench/default_job.csv] [extra mrl-train overrides...]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mrl.report.paths import output_root
from mrl.runs.files import atomic_write_text

ROOT = Path(__file__).resolve().parents[2]


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The options, and the `mrl-train` overrides that follow them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument(
        "--out",
        type=Path,
        default=output_root() / "bench" / "default_job.csv",
        help="the table (default: %(default)s)",
    )
    return parser.parse_known_args(argv)


def main(argv: list[str]) -> None:
    args, overrides = parse(argv)
    run_id = f"bench-{time.strftime('%Y%m%d-%H%M%S')}"
    mrl_train = Path(sys.executable).parent / "mrl-train"
    cmd = [str(mrl_train), f"run_id={run_id}", *overrides]
    print("running:", " ".join(cmd), flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"default job failed with exit status {done.returncode}")
    run_dir = sorted((ROOT / output_root()).glob(f"*/{run_id}"))[-1]  # where mrl-train put it
    results = json.loads((run_dir / "results.json").read_text())
    lines = ["dim,top1,top5,wall_time_s,run_dir"]
    for row in results["per_dim"]:
        lines.append(
            f"{row['dim']},{row['top1']:.4f},{row['top5']:.4f},{wall:.1f},"
            f"{os.path.relpath(run_dir, ROOT)}"
        )
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    largest = results["per_dim"][-1]
    print(
        f"default job: {wall:.0f} s wall, test top-1 at dim {largest['dim']}: "
        f"{100 * largest['top1']:.2f}%  (wrote {args.out})"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
