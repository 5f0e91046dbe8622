"""Fault injection: runs interrupted by signals (in-process and real SIGKILL/SIGINT/SIGTERM on
`mrl-train` processes), resumed, and compared with an uninterrupted run of the same length;
failed starts, non-finite runs, concurrent runs, read-only and full disks."""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import pytest
import torch
from conftest import FAST, compose_train

from mrl.cli.train import train
from mrl.core.errors import ConfigError, NonFiniteError, RunInterrupted
from mrl.runs.directory import RunLock
from mrl.runs.files import read_status

ROOT = Path(__file__).resolve().parents[1]
MRL_TRAIN = Path(sys.executable).with_name("mrl-train")
# 8 batches per epoch; max_steps ends mid-epoch (the Lightning path that lost an epoch).
COMMON = [*FAST, "trainer.max_epochs=3", "trainer.max_steps=20", "trainer.log_every_n_steps=2"]


class SignalAtStep(pl.Callback):
    """Sends this process `signum` in the middle of training step `step` (before backward)."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


class SignalDuringTest(pl.Callback):
    """Sends this process SIGTERM while the final weights are being tested."""

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0:
            os.kill(os.getpid(), signal.SIGTERM)


class NoisyGradients(pl.Callback):
    """Adds noise from torch's global generator to every gradient (like dropout, it makes the
    run depend on the generator's state at each step)."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        for p in pl_module.parameters():
            if p.grad is not None:
                p.grad.add_(torch.randn_like(p.grad), alpha=1e-3)


class PoisonAtStep(pl.Callback):
    """Makes the weights NaN before training step `step` (a diverging run)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


def callback(name: str, **kwargs) -> list[str]:
    keys = [f"+callbacks.fault._target_=test_faults.{name}"]
    return keys + [f"+callbacks.fault.{k}={v}" for k, v in kwargs.items()]


def final_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)


def assert_same_run(a_dir: Path, b_dir: Path) -> None:
    """Parameters and buffers bit-identical, the same step, per-dim results and CSV log."""
    a, b = final_state(a_dir), final_state(b_dir)
    assert a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=0,
                                   msg=key)  # fmt: skip
    ra = json.loads((a_dir / "results.json").read_text())
    rb = json.loads((b_dir / "results.json").read_text())
    assert ra["per_dim"] == rb["per_dim"]
    ca = pd.read_csv(a_dir / "csv" / "metrics.csv")
    cb = pd.read_csv(b_dir / "csv" / "metrics.csv")[ca.columns]
    pd.testing.assert_frame_equal(ca, cb)


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    """An uninterrupted run of `COMMON`."""
    run_dir = tmp_path_factory.mktemp("whole") / "run"
    train(compose_train(run_dir, *COMMON))
    return run_dir


@pytest.fixture(autouse=True)
def _restore_signal_handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def test_max_steps_mid_epoch_saves_the_final_weights(whole: Path):
    assert final_state(whole)["global_step"] == 20
    assert json.loads((whole / "status.json").read_text())["state"] == "finished"
    assert not (whole / ".lock").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "step", "code"),
    [
        (signal.SIGINT, 11, 130),  # mid-epoch
        (signal.SIGTERM, 8, 143),  # the first step of the second epoch
        (signal.SIGTERM, 13, 143),
    ],
)
def test_signal_saves_and_the_rerun_ends_like_an_uninterrupted_run(
    tmp_path: Path, whole: Path, signum: int, step: int, code: int
):
    run_dir = tmp_path / "run"
    with pytest.raises(RunInterrupted) as info:
        train(compose_train(run_dir, *COMMON, *callback("SignalAtStep", step=step, signum=signum)))
    assert info.value.exit_code == code
    saved = torch.load(run_dir / "checkpoints" / "interrupted.ckpt", weights_only=False)
    assert saved["global_step"] == step + 1  # the step that was running finished first
    assert read_status(run_dir)["state"] == "interrupted"
    assert not (run_dir / "results.json").exists()
    train(compose_train(run_dir, *COMMON))
    assert_same_run(whole, run_dir)
    assert not (run_dir / "checkpoints" / "interrupted.ckpt").exists()


# Lightning's warnings that a resume of this package's runs answers: the sampler skips what the
# run trained, and the checkpoint folder is the run's own.
RESUME_WARNINGS = ("your dataloader is not resumable", "exists and is not empty")


def test_a_resume_mid_epoch_shows_no_warning_it_answers(tmp_path: Path, recwarn):
    run_dir = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        train(compose_train(run_dir, *COMMON, *callback("SignalAtStep", step=11, signum=2)))
    recwarn.clear()
    out = train(compose_train(run_dir, *COMMON))
    assert out["resumed_from"].endswith("interrupted.ckpt")  # step 12: mid-epoch, folder full
    shown = [str(w.message) for w in recwarn]
    assert not [m for m in shown if any(text in m for text in RESUME_WARNINGS)], shown


def test_the_same_warnings_about_other_folders_or_data_still_show(tmp_path: Path):
    from mrl.training.quiet import resume_warnings_silenced

    own, other = tmp_path / "run" / "checkpoints", tmp_path / "elsewhere"
    texts = [f"Checkpoint directory {os.path.realpath(own)} exists and is not empty.",
             f"Checkpoint directory {os.path.realpath(other)} exists and is not empty.",
             "You're resuming from a checkpoint that ended before the epoch ended and your "
             "dataloader is not resumable."]  # fmt: skip
    with pytest.warns(UserWarning) as shown, resume_warnings_silenced(own, resumable_data=False):
        for text in texts:
            warnings.warn(text, stacklevel=1)
    messages = [str(w.message) for w in shown]
    assert len(messages) == 2 and str(os.path.realpath(other)) in messages[0]
    assert "dataloader is not resumable" in messages[1]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_random_augmentation_and_model_randomness_resume_exactly(tmp_path: Path, workers: int):
    random_run = [*COMMON, "data.augment=true", f"data.num_workers={workers}",
                  "+callbacks.noise._target_=test_faults.NoisyGradients"]  # fmt: skip
    reference = tmp_path / "whole"
    train(compose_train(reference, *random_run))
    run_dir = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        train(compose_train(run_dir, *random_run,
                            *callback("SignalAtStep", step=10, signum=signal.SIGTERM)))  # fmt: skip
    train(compose_train(run_dir, *random_run))
    assert_same_run(reference, run_dir)


def test_per_sample_seeds_fix_the_augmentation_whatever_the_global_state():
    from mrl.data.base import SeededSamples, TensorImageDataset

    data = SeededSamples(TensorImageDataset(torch.randn(8, 1, 12, 12), torch.zeros(8).long(),
                                            crop_pad=3, hflip=True))  # fmt: skip
    torch.manual_seed(1)
    first = data[(3, 99)][0]
    torch.manual_seed(2)
    before = torch.get_rng_state()
    assert torch.equal(data[(3, 99)][0], first)
    assert torch.equal(torch.get_rng_state(), before)  # the global generator is left alone
    assert any(not torch.equal(data[(3, s)][0], first) for s in range(100, 110))


@pytest.mark.slow
def test_a_signal_during_the_test_keeps_the_final_weights_and_the_rerun_only_tests(
    tmp_path: Path, whole: Path
):
    run_dir = tmp_path / "run"
    during_test = "+callbacks.fault._target_=test_faults.SignalDuringTest"
    with pytest.raises(RunInterrupted) as info:
        train(compose_train(run_dir, *COMMON, during_test))
    assert info.value.exit_code == 143 and not (run_dir / "results.json").exists()
    assert final_state(run_dir)["global_step"] == 20
    out = train(compose_train(run_dir, *COMMON))
    assert out["resumed_from"].endswith("last.ckpt")
    assert out["per_dim"] == json.loads((whole / "results.json").read_text())["per_dim"]


@pytest.mark.slow
def test_a_diverged_run_saves_nothing_non_finite_and_the_rerun_recovers(
    tmp_path: Path, whole: Path
):
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteError, match="at step 11"):
        train(compose_train(run_dir, *COMMON, *callback("PoisonAtStep", step=11)))
    status = read_status(run_dir)
    assert status["state"] == "failed" and "non-finite" in status["reason"]
    for ckpt in run_dir.glob("**/*.ckpt"):
        state = torch.load(ckpt, weights_only=False)["state_dict"]
        assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())
    assert not (run_dir / "checkpoints" / "interrupted.ckpt").exists()
    train(compose_train(run_dir, *COMMON))  # resumes last.ckpt (step 8), the fault gone
    assert_same_run(whole, run_dir)


@pytest.mark.slow
def test_a_rerun_with_a_new_learning_rate_uses_it(tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteError):
        train(compose_train(run_dir, *COMMON, *callback("PoisonAtStep", step=11)))
    train(compose_train(run_dir, *COMMON, "optimizer.lr=0.001"))
    err = capsys.readouterr().err
    assert "failed: non-finite" in err
    assert "resuming from" in err and "(step 8)" in err and "optimizer.lr: 0.003 -> 0.001" in err
    lrs = pd.read_csv(run_dir / "csv" / "metrics.csv").dropna(subset=["lr/pg1"])
    fresh = tmp_path / "fresh"
    train(compose_train(fresh, *COMMON, "optimizer.lr=0.001"))
    fresh_lrs = pd.read_csv(fresh / "csv" / "metrics.csv").dropna(subset=["lr/pg1"])
    late = lrs[lrs.step >= 8].set_index("step")["lr/pg1"]
    assert late.to_dict() == fresh_lrs.set_index("step")["lr/pg1"].loc[late.index].to_dict()


@pytest.mark.slow
def test_a_failed_start_leaves_an_earlier_checkpoint_alone(tmp_path: Path, whole: Path):
    run_dir = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        train(compose_train(run_dir, *COMMON, *callback("SignalAtStep", step=11, signum=2)))
    ckpt = run_dir / "checkpoints" / "interrupted.ckpt"
    before = ckpt.read_bytes()
    for bad in (["optimizer.lr=-1"], ["nesting=[2,4,8,16,64]"], ["data.num_classes=7"]):
        with pytest.raises(ConfigError):
            train(compose_train(run_dir, *COMMON, *bad))
    assert ckpt.read_bytes() == before
    train(compose_train(run_dir, *COMMON))
    assert_same_run(whole, run_dir)


def test_a_live_run_directory_is_refused_and_a_stale_lock_taken_over(tmp_path: Path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen(["sleep", "60"])
    try:
        lock = {"pid": holder.pid, "host": socket.gethostname(), "slurm_job": None, "since": "x"}
        (run_dir / ".lock").write_text(json.dumps(lock))
        with pytest.raises(ConfigError, match=f"in use by process {holder.pid}"):
            train(compose_train(run_dir, *FAST, "trainer.fast_dev_run=true"))
        assert not (run_dir / "results.json").exists()
    finally:
        holder.kill()
        holder.wait()
    (run_dir / "checkpoints").mkdir()
    leftover = run_dir / "checkpoints" / ".last.ckpt.12345.tmp"
    leftover.write_bytes(b"partial")
    train(compose_train(run_dir, *FAST, "trainer.fast_dev_run=true"))  # holder is dead: stale
    assert (run_dir / "results.json").exists() and not leftover.exists()
    assert not (run_dir / ".lock").exists()


def test_lock_of_the_same_slurm_job_is_stale(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    other = {"pid": 1, "host": "another-node", "slurm_job": "77", "since": "x"}
    (tmp_path / ".lock").write_text(json.dumps(other))
    lock = RunLock(tmp_path)
    lock.acquire()  # the requeued job itself: the old holder cannot be alive
    lock.release()
    other["slurm_job"] = "78"
    (tmp_path / ".lock").write_text(json.dumps(other))
    with pytest.raises(ConfigError, match="another-node"):
        RunLock(tmp_path).acquire()


@pytest.mark.parametrize("run_id", ["../../x", "a/b", "..", ".hidden"])
def test_run_id_must_be_a_plain_name(tmp_path: Path, run_id: str):
    with pytest.raises(ConfigError, match="not a plain name"):
        train(compose_train(tmp_path, *FAST, f"run_id='{run_id}'"))
    assert not list(tmp_path.iterdir())


# -- real processes ---------------------------------------------------------------------------


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests"),
            "WANDB_MODE": "disabled"}  # fmt: skip


def _command(run_dir: Path, *extra: str) -> list[str]:
    # Slower than COMMON (more epochs, one thread) so that kills land inside training: the four
    # interruptions take an epoch each, and on a fast machine an epoch passes within the random
    # delay before a signal, so several epochs must remain after the fourth.
    return [str(MRL_TRAIN), f"hydra.run.dir={run_dir}", *FAST, "trainer.max_epochs=10",
            "trainer.max_steps=300", "trainer.log_every_n_steps=2", "data.num_train=1024",
            "data.batch_size=32", *extra]  # fmt: skip


def _wait_for(path: Path, newer_than: float, proc: subprocess.Popen, timeout: float = 120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.is_file() and path.stat().st_mtime > newer_than:
            return
        if proc.poll() is not None:
            err = proc.stderr.read()[-1500:] if proc.stderr else ""
            pytest.fail(
                f"the run ended (status {proc.returncode}) before {path} was written: {err}"
            )
        time.sleep(0.05)
    pytest.fail(f"{path} was not written within {timeout} s")


@pytest.mark.slow
def test_real_kills_then_reruns_end_like_an_uninterrupted_process(tmp_path: Path):
    """SIGKILL twice at seeded random moments, SIGTERM and SIGINT once each, real processes."""
    rng = random.Random(1234)
    reference = tmp_path / "whole"
    subprocess.run(_command(reference), env=_env(), check=True, capture_output=True)
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    codes = []
    for signum in (signal.SIGKILL, signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
        seen = last.stat().st_mtime if last.exists() else 0.0
        proc = subprocess.Popen(_command(run_dir), env=_env(), stderr=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, text=True)  # fmt: skip
        _wait_for(last, seen, proc)  # a new epoch has started, then a random moment in it
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
        codes.append(proc.returncode)
        if signum != signal.SIGKILL:
            assert err.strip().splitlines()[-1].startswith("mrl-train: stopped by SIG"), err
    assert codes == [-9, -9, 143, 130]
    done = subprocess.run(_command(run_dir), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from" in done.stderr
    assert_same_run(reference, run_dir)


@pytest.mark.slow
def test_bad_input_from_the_command_line_is_one_line_and_status_2(tmp_path: Path):
    proc = subprocess.run(
        [str(MRL_TRAIN), f"hydra.run.dir={tmp_path / 'run'}", *FAST, "nesting=abc"],
        env=_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("mrl-train: error: nesting='abc' is not a list"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
    unknown = subprocess.run(  # composed by Hydra, which reports it itself
        [str(MRL_TRAIN), f"hydra.run.dir={tmp_path / 'run'}", "optimizer=nope"],
        env=_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == [
        "mrl-train: error: In 'train': Could not find 'optimizer/nope'; "
        "Available options in 'optimizer': adamw, sgd"
    ]


# -- disks ------------------------------------------------------------------------------------


def test_read_only_output_is_one_line_before_any_work(read_only_disk: Path):
    with pytest.raises(ConfigError, match="cannot write the run directory .*Read-only"):
        train(compose_train(read_only_disk / "run", *FAST))


def test_full_disk_stops_with_one_line_and_leaves_nothing_partial(small_disk: Path, capsys):
    from mrl.commands import run_command

    run_dir = small_disk / "run"
    with pytest.raises(SystemExit) as info:
        run_command("mrl-train", lambda: train(compose_train(run_dir, *FAST)))
    assert info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"mrl-train: error: {run_dir}") and "No space left" in err[-1], err
    assert not list(run_dir.glob("**/*.tmp"))
    for ckpt in run_dir.glob("**/*.ckpt"):  # any checkpoint there is whole
        torch.load(ckpt, weights_only=False)


@pytest.mark.slow
def test_training_continued_from_a_finished_runs_last_ckpt_matches_a_longer_run(tmp_path: Path):
    plain = [*FAST, "scheduler=none", "trainer.log_every_n_steps=2"]
    train(compose_train(tmp_path / "three", *plain, "trainer.max_epochs=3"))
    train(compose_train(tmp_path / "two", *plain, "trainer.max_epochs=2"))
    last = tmp_path / "two" / "checkpoints" / "last.ckpt"
    train(compose_train(tmp_path / "more", *plain, "trainer.max_epochs=3", f"ckpt_path={last}"))
    a, b = final_state(tmp_path / "three"), final_state(tmp_path / "more")
    assert a["global_step"] == b["global_step"] == 24
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=0,
                                   msg=key)  # fmt: skip


@pytest.mark.slow
def test_a_study_run_again_skips_finished_runs_and_resumes_the_interrupted_one(tmp_path: Path):
    sweep = tmp_path / "study"
    command = [str(MRL_TRAIN), "-m", f"hydra.sweep.dir={sweep}", "if_finished=skip", *FAST,
               "trainer.max_epochs=2", "seed=0,1"]  # fmt: skip
    first = subprocess.run(command, env=_env(), capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    console = first.stdout + first.stderr  # fresh runs: nothing a correct run does not deserve
    for noise in ("Tip:", "ckpt_path", "LeafSpec", "Could not load library"):
        assert noise not in console, console[-2000:]
    done = json.loads((sweep / "0" / "results.json").read_text())
    stamp = (sweep / "0" / "results.json").stat().st_mtime
    cut = json.loads((sweep / "1" / "results.json").read_text())
    (sweep / "1" / "results.json").unlink()  # job 1 as if killed after its last checkpoint
    again = subprocess.run(command, env=_env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{sweep / '0'} has finished already: skipped" in again.stderr
    assert (sweep / "0" / "results.json").stat().st_mtime == stamp
    assert "resuming from" in again.stderr
    assert json.loads((sweep / "1" / "results.json").read_text())["per_dim"] == cut["per_dim"]
    assert json.loads((sweep / "0" / "results.json").read_text()) == done
    other = subprocess.run([*command, "optimizer.lr=0.01"], env=_env(), capture_output=True,
                           text=True)  # fmt: skip
    assert other.returncode == 2 and "finished with other settings" in other.stderr


def test_eval_after_training_reads_a_run_folder_named_by_overrides(tmp_path: Path, monkeypatch):
    import mrl.cli.evaluate
    from mrl.cli.train import evaluate_after_training

    run_dir = tmp_path / "method=mrl,seed=0"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"x")
    seen = {}
    monkeypatch.setattr(mrl.cli.evaluate, "evaluate", lambda cfg: seen.setdefault("cfg", cfg))
    evaluate_after_training(run_dir, ["retrieval.ks=[10]"])
    assert seen["cfg"].ckpt_path == str(run_dir / "checkpoints" / "last.ckpt")
    assert list(seen["cfg"].retrieval.ks) == [10]
