"""`mrl-submit`: write (and submit, or only print) an sbatch script for `mrl-train` under SLURM.

The script runs the `mrl-train` of the environment `mrl-submit` itself runs from (a venv, a conda
env, a cluster module), by its absolute path, so the job finds it whatever folder it starts in;
`--setup LINE` (repeatable) adds shell lines the job runs first, in order, such as
`module load cuda/12.4` or `source /opt/conda/bin/activate myenv`.

One task per GPU (`--ntasks-per-node` = GPUs per node) launched by `srun`, so Lightning reads the
SLURM environment and sets up DDP across all nodes; `--signal=SIGUSR1@90` gives Lightning 90 s to
save `hpc_ckpt_*.ckpt` before a preemption, and `--requeue` brings the job back under the same
job id, whose run directory (`run_id=slurm-<job id>[_<task>]`) holds that checkpoint, so the
job resumes instead of starting over. With `--sweep FILE` the script is a job array: task i runs
the overrides on line i of FILE (blank lines and `#` comments skipped).

    mrl-submit --dry-run --nodes 2 -- experiment=paper/resnet50_imagenet
    mrl-submit --setup 'module load cuda/12.4' -- experiment=paper/resnet50_imagenet
"""

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from mrl.runs.files import atomic_write_text


def sweep_lines(path: str | Path) -> list[str]:
    """The override lines of a sweep file, one job-array task each."""
    lines = [line.strip() for line in Path(path).read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def train_command() -> list[str]:
    """The `mrl-train` of the running environment, as absolute words for the job's shell: the
    console script beside this interpreter, or the interpreter with `-m mrl.cli.train`."""
    if not sys.executable:  # an embedded interpreter that cannot name itself
        return ["mrl-train"]
    # abspath, not resolve: a venv's python is a symlink to the base interpreter, whose folder
    # holds neither this environment's scripts nor its packages.
    python = Path(os.path.abspath(sys.executable))
    script = python.with_name("mrl-train")
    # The console script first: its shebang pins this interpreter, and unlike `python -m` it does
    # not put the job's working folder (often a checkout of the sources) first on sys.path. `-m`
    # covers installs whose scripts live elsewhere (`pip install --user`, some system layouts).
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [str(python), "-m", "mrl.cli.train"]


def render(
    overrides: list[str],
    nodes: int = 1,
    gpus_per_node: int = 8,
    cpus_per_task: int = 8,
    time_limit: str = "48:00:00",
    partition: str | None = None,
    account: str | None = None,
    constraint: str | None = None,
    mem: str = "0",
    job_name: str = "mrl",
    sweep_file: str | None = None,
    num_tasks: int | None = None,
    command: Sequence[str] | None = None,
    setup: Sequence[str] = (),
) -> str:
    """The sbatch script text (deterministic, so it can be reviewed and tested). `command` is
    what `srun` starts (default: `train_command()`); the `setup` lines run before it, in order."""
    sbatch = {
        "job-name": job_name,
        "nodes": nodes,
        "ntasks-per-node": gpus_per_node,
        "gpus-per-node": gpus_per_node,
        "cpus-per-task": cpus_per_task,
        "mem": mem,
        "time": time_limit,
        "partition": partition,
        "account": account,
        "constraint": constraint,
        "signal": "SIGUSR1@90",
        "requeue": True,
        "output": "slurm-%A_%a.out" if sweep_file else "slurm-%j.out",
    }
    if sweep_file:
        sbatch["array"] = f"0-{num_tasks - 1}" if num_tasks else "0-0"
    lines = [
        "#!/bin/bash",
        "# Written by mrl-submit. Submit with `sbatch <this file> [more mrl-train overrides]`.",
    ]
    for key, value in sbatch.items():
        if value is True:
            lines.append(f"#SBATCH --{key}")
        elif value is not None:
            lines.append(f"#SBATCH --{key}={value}")
    lines += [
        "",
        "set -euo pipefail",
        'cd "${SLURM_SUBMIT_DIR:-.}"',
        'export WANDB_MODE="${WANDB_MODE:-offline}"',
    ]
    if setup:
        lines += [
            "# Setup lines (mrl-submit --setup), in order. `set -u` is off while they run: module",
            "# and environment activation scripts read variables that may be unset.",
            "set +u",
            *setup,
            "set -u",
        ]
    run_id = "slurm-${SLURM_JOB_ID:-local}"
    extra = ""
    if sweep_file:
        run_id = "slurm-${SLURM_ARRAY_JOB_ID:-local}_${SLURM_ARRAY_TASK_ID:-0}"
        lines += [
            f"SWEEP={shlex.quote(str(sweep_file))}",
            "# Task i runs the overrides on the i-th non-comment line of the sweep file.",
            "TASK_ARGS=$(grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' \"$SWEEP\" "
            '| sed -n "$((${SLURM_ARRAY_TASK_ID:-0} + 1))p")',
        ]
        extra = " $TASK_ARGS"
    args = " ".join(shlex.quote(o) for o in overrides)
    train = " ".join(shlex.quote(word) for word in (command or train_command()))
    lines += [
        "",
        f"srun {train} trainer=ddp "
        f"trainer.devices=${{SLURM_NTASKS_PER_NODE:-{gpus_per_node}}} "
        f"trainer.num_nodes=${{SLURM_NNODES:-{nodes}}} "
        f'run_id="{run_id}"' + (f" {args}" if args else "") + extra + ' "$@"',
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    parser = argparse.ArgumentParser(
        prog="mrl-submit", description=__doc__.splitlines()[0], allow_abbrev=False,
        epilog="Everything after `--` is passed to mrl-train as overrides. The script runs "
               f"{shlex.join(train_command())}, this environment's mrl-train.",
    )  # fmt: skip
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--cpus-per-task", type=int, default=8)
    parser.add_argument("--time", dest="time_limit", default="48:00:00")
    parser.add_argument("--partition")
    parser.add_argument("--account")
    parser.add_argument("--constraint")
    parser.add_argument("--mem", default="0", help="memory per node (0: all of it)")
    parser.add_argument("--job-name", default="mrl")
    parser.add_argument("--sweep", help="file with one line of overrides per job-array task")
    parser.add_argument(
        "--out-dir", default=str(Path("slurm") / "generated"),
        help="where the sbatch script is written (default: slurm/generated in the current folder)",
    )  # fmt: skip
    parser.add_argument(
        "--setup", action="append", default=[], metavar="LINE",
        help="a shell line the job runs before mrl-train, e.g. 'module load cuda/12.4' or "
             "'source /opt/conda/bin/activate myenv' (repeatable; run in the order given)",
    )  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="print the script, submit nothing")
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args, overrides = parser.parse_known_args(argv[:cut])
    unknown = [o for o in overrides if o.startswith("-")]
    overrides += argv[cut + 1 :]
    if unknown:  # a typo such as --nodse would otherwise reach mrl-train as an override
        parser.exit(2, f"mrl-submit: error: unknown option {unknown[0]}: see mrl-submit --help "
                       f"(mrl-train overrides are key=value)\n")  # fmt: skip
    for name in ("nodes", "gpus_per_node", "cpus_per_task"):
        if getattr(args, name) < 1:
            parser.exit(2, f"mrl-submit: error: --{name.replace('_', '-')} must be >= 1\n")
    num_tasks = None
    if args.sweep:
        if not Path(args.sweep).is_file():
            parser.exit(2, f"mrl-submit: error: sweep file {args.sweep} does not exist\n")
        num_tasks = len(sweep_lines(args.sweep))
        if num_tasks == 0:
            parser.exit(2, f"mrl-submit: error: sweep file {args.sweep} has no override lines\n")
    script = render(
        overrides, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_task, time_limit=args.time_limit, partition=args.partition,
        account=args.account, constraint=args.constraint, mem=args.mem, job_name=args.job_name,
        sweep_file=args.sweep, num_tasks=num_tasks, setup=args.setup,
    )  # fmt: skip
    if args.dry_run:
        print(script, end="")
        return
    if shutil.which("sbatch") is None:
        parser.exit(2, "mrl-submit: error: sbatch not found: run on a SLURM login node, or "
                       "print the script with --dry-run\n")  # fmt: skip
    path = Path(args.out_dir) / f"{args.job_name}-{time.strftime('%Y%m%d-%H%M%S')}.sbatch"
    atomic_write_text(path, script)
    print(f"wrote {path}", flush=True)
    done = subprocess.run(["sbatch", str(path)], check=False)
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
