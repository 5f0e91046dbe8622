"""One run's lifecycle, shared by every trainer (`mrl-train`, `mrl-train-text`, benchmarks).

`run_training(cfg, spec)` does, in order: check the run directory's name and that it can be
written; lock it (one live process per run directory); remove temporary files that killed
processes left; choose the checkpoint to resume from (finite, loadable, and compatible with the
model the config builds); build the trainer (atomic checkpoint writes); fit; save the final
weights as `checkpoints/last.ckpt`; drop the requeue checkpoints; test those final weights; write
`results.json` with provenance; mark the run finished; close wandb; unlock. A trainer only says
what it builds (`TrainerSpec`).

Every checkpoint this module resumes from is written (by `RunLifecycle`, `mrl.training.resumable`)
at one kind of moment, the start of a
training batch (or after the last one), where the model, optimizer, scheduler, BatchNorm
buffers, random generators and the sampler position agree: `last.ckpt` at the first batch of
each epoch (so it holds the previous epoch and its validation), `interrupted.ckpt` on SIGINT or
SIGTERM and `hpc_ckpt_<n>.ckpt` on SLURM's SIGUSR1 at the next batch start. Lightning resumes
such checkpoints exactly; its own `save_last` checkpoint (written inside validation) does not
when `max_steps` is set.

The run's state is kept in `status.json` (`running`, `interrupted`, `failed`, `finished`), which
`mrl-aggregate` reports.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig, OmegaConf

from mrl.core.errors import ConfigError, NonFiniteError, RunInterrupted, one_line
from mrl.data.base import ResumableTraining
from mrl.runs.checkpoints import (
    CHECKPOINT_DIR,
    INTERRUPTED,
    LAST,
    check_compatible,
    check_finite_state,
    load_checkpoint,
    resumable_checkpoints,
)
from mrl.runs.directory import (
    RunLock,
    check_run_id,
    check_writable,
    is_rank_zero_process,
    remove_stale_temporaries,
)
from mrl.runs.files import atomic_write_json, read_status, write_status
from mrl.runs.format import RESULTS_FILE, config_changes
from mrl.training.quiet import resume_warnings_silenced
from mrl.training.resumable import RunLifecycle

log = logging.getLogger("mrl.training.lifecycle")


@dataclass
class Built:
    """What a trainer builds for one run."""

    datamodule: pl.LightningDataModule
    model: pl.LightningModule
    callbacks: list[pl.Callback] = field(default_factory=list)
    # False where the data has no Lightning test loaders (its sets are evaluated by `results`).
    lightning_test: bool = True


@dataclass
class TrainerSpec:
    """A trainer: its command name and what it builds; the lifecycle does the rest.

    `build(cfg)` returns the data module and model (cheap checks first, no training);
    `results(cfg, trainer, built)` the per-dim results dict after the test; `finish(cfg,
    run_dir, built, results)`, run on rank 0 before `results.json` is written, may add to it
    (e.g. an exported model's path); `evaluate(cfg, run_dir)`, run on rank 0 once the run has
    finished but before its loggers close, evaluates it and returns a summary (or None) that
    goes to the loggers that take one (`log_evaluation`: the wandb run).
    """

    prog: str
    check: Callable[[DictConfig], None]
    build: Callable[[DictConfig], Built]
    results: Callable[[DictConfig, pl.Trainer, Built], dict[str, Any]]
    finish: Callable[[DictConfig, Path, Built, dict[str, Any]], None] | None = None
    evaluate: Callable[[DictConfig, Path], dict[str, Any] | None] | None = None
    trainer_overrides: dict[str, Any] = field(default_factory=dict)
    test: bool = True


@dataclass
class Resume:
    """The checkpoint a run resumes from, and what changed since it was written."""

    path: Path
    step: int
    changes: list[str]


def choose_resume(
    run_dir: Path, ckpt_path: str | None, model: torch.nn.Module, current: dict
) -> Resume | None:
    """`ckpt_path=` when given (it must load, be finite and fit), else the newest of the run's
    own checkpoints that does; unusable ones are named and skipped."""
    candidates = [Path(ckpt_path)] if ckpt_path else resumable_checkpoints(run_dir)
    for path in candidates:
        try:
            ckpt = load_checkpoint(path)
            check_finite_state(ckpt["state_dict"], f"checkpoint {path}")
        except (ConfigError, NonFiniteError) as err:
            if ckpt_path:
                raise ConfigError(str(err)) from err
            log.warning("not resuming from %s: %s", path, err)
            continue
        check_compatible(model, ckpt, path)
        saved_cfg = (ckpt.get("hyper_parameters") or {}).get("config")
        return Resume(path, int(ckpt.get("global_step", 0)), config_changes(saved_cfg, current))
    return None


def finish_wandb(trainer: pl.Trainer | None) -> None:
    """Close the wandb run, so the next run of a multirun sweep (same process) gets its own."""
    from lightning.pytorch.loggers import WandbLogger

    if trainer is not None and any(isinstance(lg, WandbLogger) for lg in trainer.loggers):
        import wandb

        wandb.finish()


def _seed(cfg: DictConfig) -> None:
    seed = cfg.get("seed")
    if seed is not None:
        pl.seed_everything(int(seed), workers=True, verbose=False)


def run_training(
    cfg: DictConfig,
    spec: TrainerSpec,
    build_trainer: Callable[..., pl.Trainer],
) -> dict[str, Any]:
    """Run one training job through the lifecycle (see the module docstring)."""
    from mrl.runs.provenance import current_provenance

    started = time.time()
    spec.check(cfg)
    check_run_id(cfg.get("run_id"))
    run_dir = Path(cfg.paths.run_dir)
    rank_zero = is_rank_zero_process()
    if (run_dir / RESULTS_FILE).exists():
        return finished_results(cfg, spec.prog, run_dir)
    check_writable(run_dir)
    lock = RunLock(run_dir)
    if rank_zero:
        lock.acquire()
    trainer = None
    try:
        if rank_zero:
            remove_stale_temporaries(run_dir)
        previous = read_status(run_dir)
        _seed(cfg)
        built = spec.build(cfg)
        current = OmegaConf.to_container(cfg, resolve=True)
        resume = choose_resume(run_dir, cfg.get("ckpt_path"), built.model, current)
        _announce(spec.prog, run_dir, previous, resume)
        reapply = bool(resume) and any(
            c.startswith(("optimizer.", "scheduler.")) for c in resume.changes
        )
        lifecycle = RunLifecycle(run_dir, reapply_optimizer=reapply)
        trainer = build_trainer(
            cfg, run_dir, extra_callbacks=[lifecycle, *built.callbacks], **spec.trainer_overrides
        )
        for logger in trainer.loggers:
            if hasattr(logger, "set_resume_step"):
                logger.set_resume_step(resume.step if resume else 0)
        if rank_zero:
            write_status(run_dir, "running", pid=os.getpid(), host=socket.gethostname())
        with lifecycle.signals():
            try:
                with resume_warnings_silenced(
                    run_dir / CHECKPOINT_DIR, isinstance(built.datamodule, ResumableTraining)
                ):
                    trainer.fit(built.model, datamodule=built.datamodule, ckpt_path=_str(resume))
            except RunInterrupted as stop:
                if rank_zero:
                    write_status(run_dir, "interrupted", signal=signal.Signals(stop.signum).name,
                                 step=trainer.global_step, saved=_str(stop.saved))  # fmt: skip
                raise
            except NonFiniteError as err:
                if rank_zero:
                    write_status(run_dir, "failed", reason=str(err), step=trainer.global_step)
                raise
            except SystemExit as err:  # Lightning's exit after a second Ctrl-C
                if rank_zero:
                    write_status(run_dir, "interrupted", signal="SIGINT", step=trainer.global_step)
                raise RunInterrupted(signal.SIGINT, None) from err
            except Exception as err:
                if rank_zero:
                    reason = f"{type(err).__name__}: {one_line(err)}"
                    write_status(run_dir, "failed", reason=reason, step=trainer.global_step)
                raise
            save_final(trainer, run_dir)
            if lifecycle.signal is not None:  # arrived after the last batch: weights are saved
                raise RunInterrupted(lifecycle.signal, run_dir / CHECKPOINT_DIR / LAST)
            if spec.test and built.lightning_test:
                trainer.test(built.model, datamodule=built.datamodule, verbose=False)
            if lifecycle.signal is not None:
                raise RunInterrupted(lifecycle.signal, run_dir / CHECKPOINT_DIR / LAST)
        results = spec.results(cfg, trainer, built)
        results.update(
            seed=cfg.get("seed"),
            wall_time_s=round(time.time() - started, 1),
            run_dir=str(run_dir),
            resumed_from=_str(resume),
            provenance=current_provenance(),
            config=current,
        )
        if trainer.is_global_zero:
            if spec.finish is not None:
                spec.finish(cfg, run_dir, built, results)
            atomic_write_json(run_dir / RESULTS_FILE, results)
            write_status(run_dir, "finished", step=trainer.global_step)
            if spec.evaluate is not None and (summary := spec.evaluate(cfg, run_dir)):
                for logger in trainer.loggers:
                    if hasattr(logger, "log_evaluation"):
                        logger.log_evaluation(summary)
        return results
    finally:
        finish_wandb(trainer)
        lock.release()


def debug_settings(trainer_cfg: Any) -> list[str]:
    """The trainer settings that cut a run short (`conf/debug/`): `fast_dev_run: 1 batch`, or
    the training and test limits (`limit_train_batches: 10`); empty for a full run."""
    fast = trainer_cfg.get("fast_dev_run") or False
    if fast:
        batches = 1 if fast is True else int(fast)
        return [f"fast_dev_run: {batches} batch{'es' if batches != 1 else ''}"]
    limits = []
    for key in ("limit_train_batches", "limit_test_batches"):
        value = trainer_cfg.get(key)
        if value is not None and not (isinstance(value, float) and value >= 1.0):
            limits.append(f"{key}: {value}")
    return limits


def table_title(cfg: DictConfig, title: str) -> str:
    """`title` of the printed per-dim table, saying so where the run was a debug run:
    `... — debug (fast_dev_run: 1 batch), not a result`."""
    settings = debug_settings(cfg.get("trainer") or {})
    return f"{title} — debug ({', '.join(settings)}), not a result" if settings else title


def finished_results(cfg: DictConfig, prog: str, run_dir: Path) -> dict[str, Any]:
    """A run directory that already holds `results.json`: with `if_finished=skip` (a study
    continuing where it stopped) its recorded results, if they were made with this config;
    else refused, so a run never overwrites another's results."""
    if cfg.get("if_finished", "error") != "skip":
        raise ConfigError(
            f"{run_dir} already holds the results of a finished run: choose another run_id= "
            f"(or hydra.run.dir=), or remove that directory (a study skips it: if_finished=skip)"
        )
    try:
        recorded = json.loads((run_dir / RESULTS_FILE).read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{run_dir / RESULTS_FILE} is unreadable ({err}): remove it") from err
    changes = config_changes(recorded.get("config"), OmegaConf.to_container(cfg, resolve=True))
    if changes:
        raise ConfigError(
            f"{run_dir} finished with other settings ({'; '.join(changes[:3])}): it is not "
            f"this run; choose another sweep directory (hydra.sweep.dir=) or remove it"
        )
    print(f"{prog}: {run_dir} has finished already: skipped", file=sys.stderr)
    return {**recorded, "skipped": True}


def _str(value: Any) -> str | None:
    if value is None:
        return None
    return str(value.path if isinstance(value, Resume) else value)


def _announce(prog: str, run_dir: Path, previous: dict, resume: Resume | None) -> None:
    """One line on what this run starts from, and after a failure what to expect."""
    failed = previous.get("state") == "failed"
    if failed:
        print(f"{prog}: the previous run in {run_dir} failed: {previous.get('reason')}",
              file=sys.stderr)  # fmt: skip
    if resume is None:
        if failed:
            print(f"{prog}: no finite checkpoint to resume from: starting from scratch",
                  file=sys.stderr)  # fmt: skip
        return
    changed = "; ".join(resume.changes) if resume.changes else "none"
    print(f"{prog}: resuming from {resume.path} (step {resume.step}); config changes: {changed}",
          file=sys.stderr)  # fmt: skip
    if failed and not resume.changes:
        print(f"{prog}: the config is unchanged, so it will likely fail the same way: lower "
              f"optimizer.lr (or fix the data), or remove {run_dir} to start over",
              file=sys.stderr)  # fmt: skip


def save_final(trainer: pl.Trainer, run_dir: Path) -> None:
    """Save the weights the fit ended with as `last.ckpt` (also when `max_steps` ends
    mid-epoch), then drop the requeue and interrupt checkpoints that are now older."""
    if trainer.fast_dev_run:
        return
    trainer.save_checkpoint(run_dir / CHECKPOINT_DIR / LAST, weights_only=False)
    if trainer.is_global_zero:
        # Lightning would load the newest hpc checkpoint into the model for `test` under SLURM.
        for stale in [*run_dir.glob("hpc_ckpt_*.ckpt"), run_dir / CHECKPOINT_DIR / INTERRUPTED]:
            stale.unlink(missing_ok=True)
    trainer.strategy.barrier()
