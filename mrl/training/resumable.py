"""The Lightning callback that makes a run resumable exactly: it writes the resumable
checkpoints at batch starts, stops on signals at such a point (SLURM's SIGUSR1 requeues the
job), keeps the random generators' states in every checkpoint and restores them, and gives a
resumed run the optimizer settings of its current config."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from mrl.core.errors import SIGNAL_EXIT_CODES, RunInterrupted
from mrl.runs.checkpoints import CHECKPOINT_DIR, INTERRUPTED, LAST

log = logging.getLogger("mrl.training.resumable")


def rng_states() -> dict[str, Any]:
    """The global random generators' states (Python, NumPy, torch CPU and CUDA)."""
    # Plain types and tensors only, so that `torch.load(weights_only=True)` still reads it.
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": [torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what `rng_states` returned."""
    random.setstate(states["python"])
    keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RunLifecycle(pl.Callback):
    """Writes the resumable checkpoints at batch starts, stops on signals, keeps the random
    generators' states in every checkpoint and restores them exactly, and applies a changed
    optimizer or scheduler config to a resumed run."""

    def __init__(self, run_dir: Path, reapply_optimizer: bool = False) -> None:
        self.run_dir = run_dir
        self.reapply_optimizer = reapply_optimizer
        self.signal: int | None = None
        self.start_step: int | None = None
        self._restore: dict[str, Any] | None = None
        self._previous: dict[int, Any] = {}

    # signals: the handler only notes the signal; the next batch start acts on it
    def _handler(self, signum: int, frame: Any) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop at once
        self.signal = signum

    @contextmanager
    def signals(self) -> Iterator[None]:
        """Install the SIGINT, SIGTERM and SIGUSR1 handlers for the duration of the block."""
        for signum in SIGNAL_EXIT_CODES:
            self._previous[signum] = signal.signal(signum, self._handler)
        try:
            yield
        finally:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
            self._previous.clear()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Lightning's SIGTERM handler stops the fit after the current batch (and `test` then runs
        # on those weights); this callback handles SIGTERM itself, at a resumable point.
        connector = trainer._signal_connector
        connector._sigterm_notifier_fn = lambda signum, frame: None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start_step = trainer.global_step
        if self.reapply_optimizer:
            reapply_optimizer_config(trainer, pl_module)

    def _stop_requested(self, trainer: pl.Trainer) -> int | None:
        flag = self.signal is not None
        if trainer.world_size > 1:
            flag = trainer.strategy.reduce_boolean_decision(flag, all=False)
        if not flag:
            return None
        return self.signal if self.signal is not None else signal.SIGTERM

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._restore is not None:
            # Lightning adds one to this counter (the step the loggers record) on every
            # restart, right only for checkpoints it writes inside a batch.
            trainer.fit_loop.epoch_loop._batches_that_stepped = self._restore["batches_stepped"]
            set_rng_states(self._restore["rng"])
            self._restore = None
        signum = self._stop_requested(trainer)
        if signum is not None:
            saved = None
            if trainer.global_step != self.start_step:  # else nothing new since the start
                saved = self._save_for_signal(trainer, signum)
            raise RunInterrupted(signum, saved)
        if batch_idx == 0 and trainer.global_step > 0 and trainer.global_step != self.start_step:
            trainer.save_checkpoint(self.run_dir / CHECKPOINT_DIR / LAST, weights_only=False)

    def _save_for_signal(self, trainer: pl.Trainer, signum: int) -> Path:
        if signum == signal.SIGUSR1:
            path = Path(trainer._checkpoint_connector.hpc_save_path(str(self.run_dir)))
            trainer.save_checkpoint(path, weights_only=False)
            if trainer.is_global_zero:
                requeue_slurm_job()
            return path
        path = self.run_dir / CHECKPOINT_DIR / INTERRUPTED
        trainer.save_checkpoint(path, weights_only=False)
        return path

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["mrl_resume"] = {
            "rng": rng_states(),
            "batches_stepped": trainer.fit_loop.epoch_loop._batches_that_stepped,
        }

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Restored at the first batch start: they were saved at one, and what runs in between
        # on a resume (building loaders, sanity checks, resetting loops) must not shift them.
        self._restore = checkpoint.get("mrl_resume")


def requeue_slurm_job() -> None:
    """Ask SLURM to requeue this job (`scontrol requeue <id>`), as Lightning's handler does."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array_job}_{task}" if array_job and task else os.environ.get("SLURM_JOB_ID")
    if not job:
        log.warning("SIGUSR1 outside SLURM: saved the checkpoint, requeued nothing")
        return
    try:
        result = subprocess.call(["scontrol", "requeue", job])
    except FileNotFoundError:
        log.warning("scontrol not found: job %s was not requeued", job)
        return
    if result != 0:
        log.warning("scontrol requeue %s failed with status %s", job, result)


def reapply_optimizer_config(trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
    """After a resume, give the restored optimizer and scheduler the hyper-parameters of the
    current config (its lr, weight decay, momentum, ...), keeping their accumulated state."""
    fresh = pl_module.configure_optimizers()
    fresh_optimizer = fresh["optimizer"] if isinstance(fresh, dict) else fresh
    optimizer = trainer.optimizers[0]
    for group, new in zip(optimizer.param_groups, fresh_optimizer.param_groups, strict=True):
        for key, value in new.items():
            if key not in ("params", "initial_lr"):
                group[key] = value
        group["initial_lr"] = new.get("initial_lr", new["lr"])
    for config in trainer.lr_scheduler_configs:
        scheduler = config.scheduler
        if hasattr(scheduler, "base_lrs"):
            scheduler.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
            for group, base, fn in zip(
                optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
            ):
                group["lr"] = base * fn(scheduler.last_epoch)
