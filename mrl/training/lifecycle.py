"""One run's lifecycle, shared by every trainer (`mrl-train`, `mrl-train-text`, benchmarks).

`run_training(cfg, spec)` does, in order: check the run directory's name and that it can be
written; lock it (one live process per run directory); remove temporary files that killed
processes left; choose the checkpoint to resume from (finite, loadable, and compatible with the
model the config builds); build the trainer (atomic checkpoint writes); fit; save the final
weights as `checkpoints/last.ckpt`; drop the requeue checkpoints; test those final weights; write
`results.json` with provenance; mark the run finished; close wandb; unlock. A trainer only says
what it builds (`TrainerSpec`).

Every checkpoint this module resumes from is written at one kind of moment, the start of a
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
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from mrl.core.errors import ConfigError, NonFiniteError
from mrl.runs.files import atomic_write_json, read_status, write_status

log = logging.getLogger("mrl.training.lifecycle")

CHECKPOINT_DIR = "checkpoints"
LAST, INTERRUPTED = "last.ckpt", "interrupted.ckpt"
LOCK_FILE, RESULTS_FILE = ".lock", "results.json"
SIGNAL_EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGUSR1: 138}
# Config keys that do not change what a run computes, left out of "what changed" on resume.
UNTRACKED_KEYS = ("paths.", "run_id", "ckpt_path", "eval_after", "if_finished",
                  "trainer.enable_progress_bar", "logger.", "callbacks.progress_bar")  # fmt: skip


class RunInterrupted(Exception):
    """The run stopped on a signal after saving what a rerun resumes from."""

    def __init__(self, signum: int, saved: Path | None) -> None:
        self.signum, self.saved = signum, saved
        self.exit_code = SIGNAL_EXIT_CODES.get(signum, 128 + int(signum))
        name = signal.Signals(signum).name
        where = f"saved {saved}" if saved else "nothing new to save"
        super().__init__(f"stopped by {name} ({where})")


@dataclass
class Built:
    """What a trainer builds for one run."""

    datamodule: pl.LightningDataModule
    model: pl.LightningModule
    callbacks: list[pl.Callback] = field(default_factory=list)


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


# -- processes, names and files ---------------------------------------------------------------


def is_rank_zero_process() -> bool:
    """Whether this process is global rank 0 of its job, from the launchers' environment
    (torchrun, SLURM, Lightning's DDP launcher); True for a plain single process."""
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"):
        value = os.environ.get(key)
        if value not in (None, "", "0"):
            return False
    return True


def check_run_id(run_id: Any) -> None:
    """`run_id` must be a plain directory name (no separators, not `.` or `..`)."""
    if run_id in (None, ""):
        return
    text = str(run_id)
    if "/" in text or "\\" in text or text in (".", "..") or text.startswith(".") or "\0" in text:
        raise ConfigError(
            f"run_id={text!r} is not a plain name: use letters, digits, '-', '_' (no '/', no "
            f"leading '.'); to choose a directory elsewhere pass hydra.run.dir=<dir>"
        )


def check_writable(
    run_dir: Path, fix: str = "choose another with paths.output_root=<dir> (or MRL_OUTPUT_ROOT)"
) -> None:
    """Create `run_dir` and check that files can be written into it (one line with `fix` if
    not)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test.{os.getpid()}.tmp"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(
            f"cannot write the run directory {run_dir}: {err.strerror or err}; {fix}"
        ) from err


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """An exclusive lock on a run directory: the file `.lock` holds the owner's pid, host and
    SLURM job. A lock whose process is gone (same host, dead pid) or that belongs to this very
    SLURM job (a requeued job) is stale and taken over; any other is refused in one line."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_FILE
        self.owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "slurm_job": os.environ.get("SLURM_JOB_ID"),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self.held = False

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable or half-written: written by a process killed at once

    def _stale(self, holder: dict) -> bool:
        if not holder:
            return True
        job = holder.get("slurm_job")
        if job and job == self.owner["slurm_job"]:
            return True
        return holder.get("host") == self.owner["host"] and not _pid_alive(int(holder["pid"]))

    def acquire(self) -> None:
        """Take the lock or raise `ConfigError` naming the live process that holds it."""
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue
                if not self._stale(holder):
                    raise ConfigError(
                        f"{self.path.parent} is in use by process {holder.get('pid')} on "
                        f"{holder.get('host')} (since {holder.get('since')}): wait for it, or "
                        f"choose another run_id=; if that process is gone, delete {self.path}"
                    ) from None
                log.info("taking over the stale lock of process %s", holder.get("pid"))
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.owner, f)
            self.held = True
            return
        raise ConfigError(f"could not lock {self.path.parent}: another process keeps taking it")

    def release(self) -> None:
        if self.held and self._holder() == self.owner:
            self.path.unlink(missing_ok=True)
        self.held = False


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the `.<name>.<...>.tmp` files that killed writers left (the run is locked)."""
    removed = []
    for folder in (run_dir, run_dir / CHECKPOINT_DIR, run_dir / "eval"):
        for tmp in folder.glob(".*.tmp") if folder.is_dir() else []:
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    if removed:
        log.info("removed %d temporary file(s) left by killed processes", len(removed))
    return removed


# -- checkpoints ------------------------------------------------------------------------------


def load_checkpoint(
    path: str | Path, where: str = "ckpt_path", lightning: bool = True
) -> dict[str, Any]:
    """Load a checkpoint on the CPU; an absent, empty, truncated or (with `lightning`, the
    default) non-Lightning file is one `ConfigError` line naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{where}={path} does not exist (or is not a file)")
    if path.stat().st_size == 0:
        raise ConfigError(f"{where}={path} is an empty file, not a checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many types for a bad file
        first = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise ConfigError(
            f"{where}={path} is not a readable checkpoint (truncated or corrupt?): {first}"
        ) from err
    if lightning and (not isinstance(ckpt, dict) or "state_dict" not in ckpt):
        raise ConfigError(f"{where}={path} is not a Lightning checkpoint (no state_dict)")
    return ckpt


def non_finite_tensors(state: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors in `state` holding NaN or infinity."""
    return [
        name
        for name, t in state.items()
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]


def check_finite_state(state: dict[str, Any], what: str) -> None:
    """Raise `NonFiniteError` naming the first non-finite tensors of `state`."""
    bad = non_finite_tensors(state)
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise NonFiniteError(f"{what} has {len(bad)} non-finite tensor(s): {shown}")


def resumable_checkpoints(run_dir: Path) -> list[Path]:
    """The run's resumable checkpoints (SLURM requeue, interrupted, last), newest first."""
    found = [
        *run_dir.glob("hpc_ckpt_*.ckpt"),
        run_dir / CHECKPOINT_DIR / INTERRUPTED,
        run_dir / CHECKPOINT_DIR / LAST,
    ]
    return sorted((p for p in found if p.is_file()), key=lambda p: p.stat().st_mtime, reverse=True)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def config_changes(saved: dict | None, current: dict) -> list[str]:
    """`key: old -> new` for every setting that differs between two resolved configs."""
    if not isinstance(saved, dict):
        return []
    old, new = _flatten(saved), _flatten(current)
    changes = []
    for key in sorted(set(old) | set(new)):
        if key.startswith(UNTRACKED_KEYS) or old.get(key) == new.get(key):
            continue
        changes.append(f"{key}: {old.get(key, '(unset)')} -> {new.get(key, '(unset)')}")
    return changes


def check_compatible(model: torch.nn.Module, ckpt: dict[str, Any], path: Path) -> None:
    """The checkpoint's weights must fit the model this config builds (same nesting, head,
    classes, channels, encoder): one line naming the first mismatch otherwise."""
    own = model.state_dict()
    theirs = ckpt["state_dict"]
    missing = [k for k in own if k not in theirs]
    unexpected = [k for k in theirs if k not in own]
    shapes = [
        f"{k} {tuple(theirs[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in theirs and torch.is_tensor(theirs[k]) and theirs[k].shape != own[k].shape
    ]
    problems = (
        [f"shape of {s}" for s in shapes[:2]]
        + [f"missing {k}" for k in missing[:2]]
        + [f"unexpected {k}" for k in unexpected[:2]]
    )
    if problems:
        raise ConfigError(
            f"checkpoint {path} does not fit the model of this config ({'; '.join(problems)}): "
            f"resume with the nesting, head, classes and encoder it was trained with, or start "
            f"a new run (another run_id=)"
        )


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


# -- the callback -----------------------------------------------------------------------------


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


# -- the run ----------------------------------------------------------------------------------


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
            if spec.test:
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


# -- the command line -------------------------------------------------------------------------


def one_line(err: BaseException) -> str:
    """An exception as one line: an OS error names its path and cause."""
    if isinstance(err, OSError) and err.strerror:
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{err.strerror}"
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


_COMMAND_STARTED = False


class _HeldStderr:
    """stderr that holds what is written until the command's body starts (Hydra reports a
    config it cannot compose in several lines before that), then passes everything through."""

    def __init__(self, real: Any) -> None:
        self.real, self.held = real, []

    def write(self, text: str) -> int:
        if _COMMAND_STARTED:
            self.release()
            return self.real.write(text)
        self.held.append(text)
        return len(text)

    def release(self) -> None:
        """Write what was held, unchanged."""
        if self.held:
            self.real.write("".join(self.held))
            self.held = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def condense_hydra_error(text: str) -> str:
    """Hydra's multi-line report of a config it cannot compose, as one line: its indented
    detail lines (available options, the full key) follow their heading after a colon."""
    parts: list[tuple[str, list[str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or "HYDRA_FULL_ERROR" in line:
            continue
        if line.startswith("Config search path"):
            break  # where Hydra looked: the paths of this installation, not the user's error
        if raw[0].isspace() and parts:
            parts[-1][1].append(line)
        else:
            parts.append((line, []))
    return "; ".join(
        f"{head.rstrip(':')}: {', '.join(items)}" if items else head.rstrip(".")
        for head, items in parts
    )


def hydra_cli(hydra_main: Callable[[], None], prog: str) -> Callable[[], None]:
    """The console entry of a Hydra command. Hydra reports a config it cannot compose (an
    unknown group option, a bad override) itself, in several lines, and exits 1; that is bad
    input, so it becomes one line `<prog>: error: ...` and status 2. `MRL_DEBUG=1` (or Hydra's
    own `HYDRA_FULL_ERROR=1`) leaves Hydra's report as it is."""

    def entry() -> None:
        verbose = any(
            os.environ.get(k, "") not in ("", "0") for k in ("MRL_DEBUG", "HYDRA_FULL_ERROR")
        )
        held = None if verbose else _HeldStderr(sys.stderr)
        if held is not None:
            sys.stderr = held
        try:
            hydra_main()
        except SystemExit as stop:
            if stop.code == 1 and not _COMMAND_STARTED:
                if held is not None:
                    report, held.held = "".join(held.held), []
                    sys.stderr = held.real
                    print(f"{prog}: error: {condense_hydra_error(report)}", file=sys.stderr)
                sys.exit(2)
            raise
        finally:
            if held is not None:
                held.release()
                if sys.stderr is held:
                    sys.stderr = held.real

    return entry


def run_command(prog: str, fn: Callable[[], Any]) -> Any:
    """Run a command's body; known failures end with one line on stderr and an exit status:
    2 bad input, 1 a failed run or I/O error, 130/143/138 a signal (the state was saved).
    `MRL_DEBUG=1` shows the traceback instead."""
    from omegaconf.errors import InterpolationResolutionError

    from mrl.core.errors import DataNotFoundError

    global _COMMAND_STARTED
    _COMMAND_STARTED = True
    debug = os.environ.get("MRL_DEBUG", "") not in ("", "0")
    try:
        try:
            return fn()
        except InterpolationResolutionError as err:
            # A resolver's own ConfigError (e.g. an unknown `method`), wrapped by OmegaConf.
            cause = err.__cause__ or err.__context__
            if isinstance(cause, ConfigError):
                raise cause from None
            raise
    except (ConfigError, DataNotFoundError) as err:
        code, message = 2, f"error: {one_line(err)}"
        if debug:
            raise
    except RunInterrupted as err:
        code, message = err.exit_code, f"{err}; rerun the same command to resume"
    except NonFiniteError as err:
        code, message = 1, f"error: {one_line(err)}"
        if debug:
            raise
    except OSError as err:
        if debug:
            raise
        code, message = 1, f"error: {one_line(err)}"
    print(f"{prog}: {message}", file=sys.stderr)
    sys.exit(code)
