"""Wall time and per-dim test accuracy of the default job (`mrl-train` with no overrides).

Runs the job in a fresh process exactly as a user would, under a new run directory, and records
the wall time (including start-up) and the per-dim accuracies from its results.json into
experiments/results/bench/default_job.csv (dim,top1,top5,wall_time_s,run_dir).

    .venv/bin/python experiments/bench/default_job.py [extra mrl-train overrides...]
"""

import json
import subprocess
import sys
import time
from pathlib import Path

from mrl.runs.files import atomic_write_text

ROOT = Path(__file__).resolve().parents[2]


def main(overrides: list[str]) -> None:
    run_id = f"bench-{time.strftime('%Y%m%d-%H%M%S')}"
    mrl_train = Path(sys.executable).parent / "mrl-train"
    cmd = [str(mrl_train), f"run_id={run_id}", *overrides]
    print("running:", " ".join(cmd), flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"default job failed with exit status {done.returncode}")
    run_dirs = sorted(ROOT.glob(f"outputs/*/{run_id}"))
    results = json.loads((run_dirs[-1] / "results.json").read_text())
    lines = ["dim,top1,top5,wall_time_s,run_dir"]
    for row in results["per_dim"]:
        lines.append(
            f"{row['dim']},{row['top1']:.4f},{row['top5']:.4f},{wall:.1f},{run_dirs[-1].relative_to(ROOT)}"
        )
    out = ROOT / "experiments/results/bench/default_job.csv"
    atomic_write_text(out, "\n".join(lines) + "\n")
    largest = results["per_dim"][-1]
    print(
        f"default job: {wall:.0f} s wall, test top-1 at dim {largest['dim']}: "
        f"{100 * largest['top1']:.2f}%  (wrote {out})"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
