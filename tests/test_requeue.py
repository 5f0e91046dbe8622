"""SLURM preemption: SIGUSR1 saves Lightning's HPC checkpoint, a relaunch under the same job id
resumes from it and ends exactly where an uninterrupted run ends."""

import json
import os
import signal
import stat
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import FAST, compose_train

from mrl.cli.train import train
from mrl.core.errors import RunInterrupted
from mrl.saved import load_saved
from mrl.training.resolvers import run_name

SLURM_ENV = {
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "mrl",
    "SLURM_NTASKS": "1",
    "SLURM_NTASKS_PER_NODE": "1",
    "SLURM_NNODES": "1",
    "SLURM_NODEID": "0",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
}


class PreemptAtStep(pl.Callback):
    """Sends this process SIGUSR1 (SLURM's warning) during training step `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGUSR1)  # saved and requeued at the next batch start


def test_run_directory_name_follows_the_slurm_job(monkeypatch):
    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(key, raising=False)
    assert run_name("mine") == "mine"
    assert not run_name(None).startswith("slurm-")  # a timestamp off the cluster
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert run_name(None) == "slurm-4242"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert run_name(None) == "slurm-77_3"
    assert run_name("explicit") == "explicit"


@pytest.mark.slow
@pytest.mark.parametrize("step", [7, 10])  # the last step of the first epoch, and mid-epoch
def test_preempted_job_resumes_from_its_hpc_checkpoint(tmp_path: Path, monkeypatch, step: int):
    common = [*FAST, "trainer.max_epochs=3"]
    whole = compose_train(tmp_path / "whole", *common)
    expected = train(whole)

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"  # records the requeue request instead of talking to SLURM
    scontrol.write_text(f'#!/bin/bash\necho "$@" > {tmp_path / "requeued"}\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    for key, value in SLURM_ENV.items():
        monkeypatch.setenv(key, value)
    previous = signal.getsignal(signal.SIGUSR1)
    run_dir = tmp_path / "slurm-4242"
    preempt = [
        "+callbacks.preempt._target_=test_requeue.PreemptAtStep",
        f"+callbacks.preempt.step={step}",
    ]
    try:
        with pytest.raises(RunInterrupted) as info:
            train(compose_train(run_dir, *common, *preempt))
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert (tmp_path / "requeued").read_text().split() == ["requeue", "4242"]
    hpc = sorted(run_dir.glob("hpc_ckpt_*.ckpt"))
    assert len(hpc) == 1 and not (run_dir / "results.json").exists()
    assert torch.load(hpc[0], weights_only=False)["global_step"] == step + 1
    assert info.value.exit_code == 138

    resumed = train(compose_train(run_dir, *common))  # the requeued job: same directory
    assert resumed["per_dim"] == expected["per_dim"]
    a = load_saved(tmp_path / "whole" / "checkpoints" / "last.ckpt").module.state_dict()
    b = load_saved(run_dir / "checkpoints" / "last.ckpt").module.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert not list(run_dir.glob("hpc_ckpt_*.ckpt"))  # no longer needed once the run is done
    assert json.loads((run_dir / "results.json").read_text())["per_dim"] == expected["per_dim"]
