"""Bad inputs and injected faults tried as a user would: each case is a real command line.

Every case runs the installed commands (`mrl-train`, `mrl-eval`, ...) in a fresh directory and
records its exit status, the last line it printed, its wall time and what it left behind. An
input case passes when it exits with status 2 in one line naming the value and writes no
checkpoint; a fault case passes when the rerun ends like an uninterrupted run. Results go to a
CSV (one row per case, written as each lands); a rerun of the same command skips the cases
already recorded.

    python experiments/studies/input_campaign.py --out experiments/results/input_campaign.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
# A tiny synthetic run: a few steps, a narrow CNN, CSV logging, no progress bars.
TINY = [
    "data=synthetic",
    "optimizer=adamw",
    "logger=csv",
    "encoder.widths=[8,16,16,32]",
    "nesting=[2,4,8,16,32]",
    "trainer.enable_model_summary=false",
    "trainer.enable_progress_bar=false",
    "trainer.max_steps=6",
    "trainer.max_epochs=2",
]
# A run long enough to be interrupted part-way (its length is set per case with max_steps).
LONG = [*TINY[:-2], "trainer.max_epochs=20", "data.num_train=2048"]
COLUMNS = ["case", "kind", "command", "status", "expected", "passed", "seconds", "last_line",
           "left_behind"]  # fmt: skip


@dataclass
class Case:
    """One command line and what a correct framework answers to it."""

    name: str
    command: list[str]
    kind: str = "input"
    expected: int = 2
    needs: str = ""  # "trained": a finished tiny run's last.ckpt is substituted for {ckpt}
    run: Callable[[Case, Path, dict], tuple[int, str, str]] | None = field(default=None)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(WANDB_MODE="disabled", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               OMP_NUM_THREADS="1")  # fmt: skip
    env.pop("MRL_DEBUG", None)
    return env


def _exec(argv: list[str], cwd: Path, timeout: float = 600) -> tuple[int, str]:
    proc = subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    lines = [x for x in (proc.stderr + proc.stdout).strip().splitlines() if x.strip()]
    err = [x for x in proc.stderr.strip().splitlines() if x.strip()]
    return proc.returncode, (err[-1] if proc.returncode else (lines[-1] if lines else ""))


def _train(work: Path, run_id: str, *overrides: str, base: list[str] = TINY) -> list[str]:
    return [str(BIN / "mrl-train"), *base, f"paths.output_root={work}", f"run_id={run_id}",
            *overrides]  # fmt: skip


def _checkpoints(work: Path) -> str:
    found = sorted(str(p.relative_to(work)) for p in work.rglob("*.ckpt"))
    return ";".join(found)


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def _run_dir(work: Path, run_id: str) -> Path:
    hits = [p for p in work.rglob(run_id) if p.is_dir()]
    return hits[0]


def _signal_then_rerun(sig: int, expected_rc: int) -> Callable:
    """Start a longer run, send `sig` after its first checkpoint, rerun, compare to a whole run."""

    def run(case: Case, work: Path, ctx: dict) -> tuple[int, str, str]:
        _exec(_train(work, "whole", "trainer.max_steps=300", base=LONG), work)
        ref = _results(_run_dir(work, "whole"))["per_dim"]
        argv = _train(work, "cut", "trainer.max_steps=300", base=LONG)
        proc = subprocess.Popen(argv, cwd=work, env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if any(work.glob("**/cut/**/last.ckpt")) or any(work.glob("**/cut/**/epoch*.ckpt")):
                break
            time.sleep(0.2)
        time.sleep(1.0)
        proc.send_signal(sig)
        proc.communicate(timeout=300)
        first = proc.returncode
        rc2, rerun = _exec(argv, work)
        same = rc2 == 0 and _results(_run_dir(work, "cut"))["per_dim"] == ref
        detail = (
            f"first exit {first}; rerun exit {rc2}; per-dim metrics equal to the whole run: {same}"
        )
        ok = first == expected_rc and same
        return (0 if ok else 1), detail, _checkpoints(work)

    return run


def _started(argv: list[str], work: Path, ready: str, timeout: float, poll: float = 0.2):
    """`argv` started in `work` (output discarded), returned once a file matching `ready`
    exists below `work` or after `timeout` seconds."""
    proc = subprocess.Popen(argv, cwd=work, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + timeout
    while time.time() < deadline and not any(work.rglob(ready)):
        time.sleep(poll)
    return proc


def _killed_then_rerun(argv: list[str], work: Path, ready: str, timeout: float,
                       poll: float = 0.2) -> tuple[int, str]:  # fmt: skip
    """Start `argv`, SIGKILL it once `ready` exists (see `_started`), then run it again."""
    proc = _started(argv, work, ready, timeout, poll)
    proc.kill()
    proc.wait()
    return _exec(argv, work)


def _concurrent(case: Case, work: Path, ctx: dict) -> tuple[int, str, str]:
    argv = _train(work, "shared", "trainer.max_steps=5000", base=LONG)
    first = _started(argv, work, "last.ckpt", 120)
    rc, line = _exec(argv, work)
    first.send_signal(signal.SIGINT)
    first.wait(timeout=300)
    return rc, line, _checkpoints(work)


def _kill_then_rerun(case: Case, work: Path, ctx: dict) -> tuple[int, str, str]:
    argv = _train(work, "killed", "trainer.max_steps=40", base=LONG)
    rc, line = _killed_then_rerun(argv, work, "last.ckpt", 300)
    return rc, line, _checkpoints(work)


def _kill_eval_then_rerun(case: Case, work: Path, ctx: dict) -> tuple[int, str, str]:
    argv = [str(BIN / "mrl-eval"), f"ckpt_path={ctx['ckpt']}", f"out_dir={work}/eval",
            "probe.enabled=false", "retrieval.ks=[10]", "retrieval.knn_ks=[1]",
            "robustness.corruptions=[]", "adaptive_retrieval.enabled=false"]  # fmt: skip
    rc, line = _killed_then_rerun(argv, work, "*.partial", 120, poll=0.05)
    partial = ";".join(str(p) for p in work.rglob("*.partial"))
    return rc, f"{line} | partial files left: {partial or 'none'}", _checkpoints(work)


def cases() -> list[Case]:
    """The campaign: bad inputs to every command, then faults around real runs."""
    t = "{work}"
    out: list[Case] = []
    train_bad = {
        "batch size 0": ["data.batch_size=0"],
        "negative batch size": ["data.batch_size=-4"],
        "zero max_steps": ["trainer.max_steps=0"],
        "zero max_epochs": ["trainer.max_epochs=0"],
        "zero training samples": ["data.num_train=0"],
        "Fashion-MNIST: zero training samples": ["data=fashion_mnist", "data.limit_train=0"],
        "Fashion-MNIST: negative limit_train": ["data=fashion_mnist", "data.limit_train=-5"],
        "repeated nesting dim": ["nesting=[2,4,8,16,32,32]"],
        "nesting dim 0": ["nesting=[0,8,16,32]"],
        "fractional nesting dim": ["nesting=[2.5,8,16,32]"],
        "nesting of strings": ["nesting=[a,b]"],
        "loss weights of the wrong length": ["loss.weights=[1,2]"],
        "negative loss weight": ["loss.weights=[1,-1,1,1,1]"],
        "label smoothing above 1": ["loss.label_smoothing=1.5"],
        "infinite lr": ["optimizer.lr=inf"],
        "lr not a number": ["optimizer.lr=abc"],
        "negative weight decay": ["optimizer.weight_decay=-1"],
        "seed not a number": ["seed=abc"],
        "fractional seed": ["seed=1.5"],
        "unknown data set": ["data=imagenet22k"],
        "unknown method": ["method=mystery"],
        "unknown key": ["foo=1"],
        "missing data root": ["data=fashion_mnist", "data.root=/nonexistent/fmnist"],
        "checkpoint is a directory": ["ckpt_path=/tmp"],
        "checkpoint absent": ["ckpt_path=/nonexistent/last.ckpt"],
        "run_id escaping the root": ["run_id=../../escape"],
        "negative workers": ["data.num_workers=-1"],
        "Fashion-MNIST: negative val_size": ["data=fashion_mnist", "data.val_size=-1"],
        "Fashion-MNIST: val_size above the training set": [
            "data=fashion_mnist",
            "data.val_size=100000",
        ],
        "gpu on a machine without one": ["trainer.accelerator=gpu"],
        "unknown precision": ["trainer.precision=bf17"],
        "encoder narrower than the nesting": ["encoder.widths=[8,16]"],
        "bad eval_after option": ["eval_after=['retrieval.backend=annoy']"],
        "frozen encoder without weights": [
            "model.freeze_encoder=true",
            "model.encoder_init=/nonexistent.ckpt",
        ],
    }
    for name, overrides in train_bad.items():
        run_id = "r" + str(len(out))
        argv = ["mrl-train", *TINY, f"paths.output_root={t}"]
        if not any(o.startswith("run_id=") for o in overrides):
            argv.append(f"run_id={run_id}")
        out.append(Case(name, argv + overrides))
    # `run_id=` (say, an unset variable in a job script) means no run_id: a fresh directory.
    out.append(Case("empty run_id", ["mrl-train", *TINY, f"paths.output_root={t}", "run_id="],
                    expected=0))  # fmt: skip
    eval_bad = {
        "eval: negative k": ["retrieval.ks=[-3]"],
        "eval: k not a number": ["retrieval.ks=[abc]"],
        "eval: empty dims": ["dims=[]"],
        "eval: dim 0": ["dims=[0,8]"],
        "eval: cuda without a GPU": ["device=cuda"],
        "eval: data of another channel count": ["data=cifar10"],
        "eval: shortlist 0": ["adaptive_retrieval.shortlist_k=0"],
        "eval: probe max_iter 0": ["probe.max_iter=0"],
        "eval: unknown key": ["foo=1"],
        "eval: unwritable out_dir": ["out_dir=/proc/mrl-eval"],
        "eval: unknown checkpoint format": ["checkpoint_format=onnx"],
    }
    for name, overrides in eval_bad.items():
        argv = ["mrl-eval", "ckpt_path={ckpt}", f"out_dir={t}/eval", *overrides]
        if overrides[0].startswith("out_dir="):
            argv = ["mrl-eval", "ckpt_path={ckpt}", *overrides]
        out.append(Case(name, argv, needs="trained"))
    others = {
        "aggregate: absent folder": ["mrl-aggregate", "/nonexistent/study"],
        "aggregate: folder without runs": ["mrl-aggregate", t],
        "report: absent folder": ["mrl-report", "/nonexistent/study", "--out", f"{t}/r"],
        "report: claims of an absent study": ["mrl-report", "--claims", "/nonexistent"],
        "submit: zero nodes": ["mrl-submit", "--nodes", "0", "--dry-run"],
        "submit: nodes not a number": ["mrl-submit", "--nodes", "two", "--dry-run"],
        "submit: misspelt option": ["mrl-submit", "--gpus-per-nod", "4", "--dry-run"],
        "text: nesting not increasing": [
            "mrl-train-text",
            f"paths.output_root={t}",
            "nesting=[64,32]",
        ],
        "text: negative lr": ["mrl-train-text", f"paths.output_root={t}", "optimizer.lr=-1"],
    }
    for name, argv in others.items():
        out.append(Case(name, argv))
    out += [
        Case(
            "fault: SIGTERM then rerun", [], "fault", 0, run=_signal_then_rerun(signal.SIGTERM, 143)
        ),
        Case(
            "fault: SIGINT then rerun", [], "fault", 0, run=_signal_then_rerun(signal.SIGINT, 130)
        ),
        Case("fault: second process in a live run directory", [], "fault", 2, run=_concurrent),
        Case(
            "fault: SIGKILL after the first checkpoint, then rerun",
            [],
            "fault",
            0,
            run=_kill_then_rerun,
        ),
        Case(
            "fault: SIGKILL of mrl-eval while encoding, then rerun",
            [],
            "fault",
            0,
            needs="trained",
            run=_kill_eval_then_rerun,
        ),
    ]
    return out


def _trained(root: Path) -> Path:
    """A finished tiny run's last.ckpt (trained once per campaign)."""
    root.mkdir(parents=True)
    rc, line = _exec(_train(root, "trained"), root)
    if rc != 0:
        raise SystemExit(f"input_campaign: the reference run failed: {line}")
    return next(root.rglob("trained/**/last.ckpt"))


def main(argv: list[str] | None = None) -> int:
    """Run every case not yet in `--out`, appending one row per case as it ends."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--only", default="", help="run only the cases whose name contains this")
    args = ap.parse_args(argv)
    done = set()
    if args.out.exists():
        with args.out.open() as f:
            done = {row["case"] for row in csv.DictReader(f)}
    todo = [c for c in cases() if c.name not in done and args.only in c.name]
    if not todo:
        print(f"input_campaign: every case is already in {args.out}")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    new_file = not args.out.exists()
    with tempfile.TemporaryDirectory(prefix="mrl-campaign-") as tmp, args.out.open("a") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new_file:
            writer.writeheader()
        ctx = {}
        if any(c.needs == "trained" for c in todo):
            ctx["ckpt"] = str(_trained(Path(tmp) / "trained-root"))
        for i, case in enumerate(todo):
            work = Path(tmp) / f"case{i}"
            work.mkdir()
            start = time.perf_counter()
            if case.run is not None:
                status, line, left = case.run(case, work, ctx)
                shown = case.name
            else:
                argv = [a.replace("{work}", str(work)).replace("{ckpt}", ctx.get("ckpt", ""))
                        for a in case.command]  # fmt: skip
                argv[0] = str(BIN / argv[0])
                status, line = _exec(argv, work)
                left = _checkpoints(work)
                shown = " ".join([Path(argv[0]).name, *case.command[1:]])
            seconds = time.perf_counter() - start
            passed = status == case.expected
            if case.kind == "input" and case.expected == 2:  # one line, nothing written
                prog = Path(case.command[0]).name
                passed = passed and line.startswith(f"{prog}: error: ") and not left
            writer.writerow({"case": case.name, "kind": case.kind, "command": shown,
                             "status": status, "expected": case.expected, "passed": passed,
                             "seconds": round(seconds, 1), "last_line": line[:300],
                             "left_behind": left})  # fmt: skip
            f.flush()
            print(
                f"[{i + 1}/{len(todo)}] {'ok ' if passed else 'BAD'} {case.name}: "
                f"{status} {line[:160]}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
