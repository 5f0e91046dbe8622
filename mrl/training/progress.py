"""Training progress as plain lines, for output that is not a terminal (a SLURM `.out` file,
`> log 2>&1`, `nohup`), where a live bar would leave only its last frame.

`ProgressReport` writes a line every `every_n_steps` optimizer steps or `every_s` seconds,
whichever comes first, and one after each validation with its per-dim metrics:

    step 120/1719 | epoch 1/2 | loss 1.234 | loss/dim mean 0.176 | 41.3 it/s | 85.2 img/s
        | ETA 0:12:03   (one line)
    val step 120/1719 | epoch 1/2 | loss 1.101 | top1 % @8 61.2 @16 80.4 | top5 % @8 85.0

The lines go through the `mrl.training.progress` logger, so a Hydra job's console (stdout) and
its log file (`<run>/train.log`) both get them. On a terminal the Trainer's bar shows progress
and the lines go to the log files alone. `progress_callbacks` makes that choice for a Trainer.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, ProgressBar
from torch import Tensor

from mrl.core.errors import ConfigError
from mrl.core.validate import positive_int
from mrl.training.callbacks import HideVersionInProgressBar
from mrl.training.loggers import per_dim_rows

log = logging.getLogger("mrl.training.progress")

MODES = ("auto", "bar", "lines")


def stdout_is_terminal() -> bool:
    """Whether standard output is an interactive terminal."""
    try:
        return bool(sys.stdout.isatty())
    except (AttributeError, ValueError):  # replaced by an object without it, or closed
        return False


def resolve_mode(mode: str, terminal: bool | None = None) -> str:
    """`bar` or `lines`: `auto` is the bar on a terminal (`terminal`, by default stdout's)."""
    if mode not in MODES:
        raise ConfigError(f"callbacks.progress_bar.mode must be one of {MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    return "bar" if (stdout_is_terminal() if terminal is None else terminal) else "lines"


def _positive_seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(
            f"callbacks.progress_bar.every_s must be a positive number or null, got {value!r}"
        )
    return float(value)


def batch_rows(batch: Any) -> tuple[int, str] | None:
    """The number of rows of a training batch and their unit (`img` for a batch of images,
    `rows` otherwise), from its first tensor or list of strings; None when it has neither."""
    if isinstance(batch, Tensor):
        if batch.ndim == 0:
            return None
        return int(batch.shape[0]), "img" if batch.ndim == 4 else "rows"
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, list | tuple):
        if batch and all(isinstance(item, str) for item in batch):
            return len(batch), "rows"
        for item in batch:
            if (found := batch_rows(item)) is not None:
                return found
    return None


def format_duration(seconds: float) -> str:
    """`H:MM:SS` (whole seconds)."""
    return str(timedelta(seconds=round(seconds)))


def format_value(value: float) -> str:
    """A loss: 3 decimals below 10, 4 significant digits above."""
    if not math.isfinite(value) or abs(value) < 10:
        return f"{value:.3f}"
    return f"{value:.4g}"


def format_per_dim(rows: list[tuple[int, str, float]]) -> list[str]:
    """One `metric @dim value ...` field per metric; fractions (all values in [0, 1]) are shown
    in percent, `top1 % @8 61.2 @16 80.4`."""
    fields = []
    for metric in dict.fromkeys(name for _, name, _ in rows):
        values = [(dim, value) for dim, name, value in rows if name == metric]
        if all(0.0 <= value <= 1.0 for _, value in values):
            shown = " ".join(f"@{dim} {100 * value:.1f}" for dim, value in values)
            fields.append(f"{metric} % {shown}")
        else:
            fields.append(f"{metric} " + " ".join(f"@{dim} {value:.4g}" for dim, value in values))
    return fields


def _metric(metrics: Mapping[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None else float(value)


class ProgressReport(HideVersionInProgressBar):
    """Plain progress lines (see the module docstring), every `every_n_steps` optimizer steps or
    `every_s` seconds, whichever comes first (null turns that trigger off); one before and one
    after each validation, and one when training ends. Written on the first process only.

    `mode`: `lines` writes them to the console and the log files, `bar` (the Trainer shows its
    bar) to the log files alone, `auto` picks `bar` when stdout is a terminal. The Trainer's bar
    is left out or kept by `progress_callbacks`, which also sets `console`. Also hides the
    loggers' version number from that bar, as `HideVersionInProgressBar` does.
    """

    def __init__(
        self, mode: str = "auto", every_n_steps: int | None = 50, every_s: float | None = 30.0
    ) -> None:
        self.mode = resolve_mode(mode)
        self.every_n_steps = positive_int(
            every_n_steps, "callbacks.progress_bar.every_n_steps", optional=True
        )
        self.every_s = _positive_seconds(every_s)
        # Whether the lines reach the console too (else the log files alone).
        self.console = self.mode == "lines"
        self._clock = time.monotonic
        self._reset()

    def _reset(self) -> None:
        now = self._clock()
        self._start_time = self._last_time = now
        self._start_step = self._last_step = 0
        self._paused = 0.0
        self._validation_started: float | None = None
        self._rows: tuple[int, str] | None = None
        self._total_steps: float | None = None
        # The epoch of the latest batch: Lightning counts a fit's last epoch as completed (one
        # more) by `on_train_end`, also when `max_steps` stops it part-way.
        self._epoch: int | None = None

    # -- hooks ---------------------------------------------------------------------------------

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the clocks at the (possibly resumed) step."""
        self._reset()
        self._start_step = self._last_step = trainer.global_step
        self._total_steps = _total_steps(trainer)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """A line when one is due (the metrics of the step just done are in place by now)."""
        if self._rows is None:
            self._rows = batch_rows(batch)
        self._epoch = trainer.current_epoch
        if self._due(trainer.global_step, self._clock()):
            self._step_line(trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A line for the steps since the last one; validation's time is not training's."""
        if trainer.sanity_checking:
            return
        if trainer.global_step > self._last_step:
            self._step_line(trainer)
        self._validation_started = self._clock()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The validation's line, with its per-dim metrics."""
        if trainer.sanity_checking or self._validation_started is None:
            return
        self._paused += self._clock() - self._validation_started
        self._validation_started = None
        self._write(trainer, self.validation_line(trainer))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A last line for the steps since the last one."""
        if trainer.global_step > self._last_step:
            self._step_line(trainer)

    # -- lines ---------------------------------------------------------------------------------

    def _due(self, step: int, now: float) -> bool:
        """Whether `every_n_steps` steps or `every_s` seconds have passed since the last line."""
        if step <= self._last_step:
            return False
        if self.every_n_steps is not None and step - self._last_step >= self.every_n_steps:
            return True
        return self.every_s is not None and now - self._last_time >= self.every_s

    def _step_line(self, trainer: pl.Trainer) -> None:
        now = self._clock()
        self._write(trainer, self.step_line(trainer, now))
        self._last_step, self._last_time, self._paused = trainer.global_step, now, 0.0

    def _position(self, trainer: pl.Trainer) -> list[str]:
        step, total = trainer.global_step, self._total_steps
        epochs = _total_epochs(trainer, total)
        epoch = trainer.current_epoch if self._epoch is None else self._epoch
        return [
            f"step {step}/{int(total)}" if total is not None else f"step {step}",
            f"epoch {epoch + 1}" + (f"/{epochs}" if epochs else ""),
        ]

    def step_line(self, trainer: pl.Trainer, now: float) -> str:
        """`step 120/1719 | epoch 1/2 | loss 1.234 | loss/dim mean 0.176 | 41.3 it/s |
        85.2 img/s | ETA 0:12:03`: the training losses of the last step, the rates since the
        last line (validation not counted) and the time left at the run's average pace."""
        fields = self._position(trainer)
        metrics = trainer.callback_metrics
        for label, key in (("loss", "train/loss"), ("loss/dim mean", "train/loss_mean")):
            if (value := _metric(metrics, key)) is not None:
                fields.append(f"{label} {format_value(value)}")
        step = trainer.global_step
        seconds = now - self._last_time - self._paused
        if step > self._last_step and seconds > 0:
            rate = (step - self._last_step) / seconds
            fields.append(f"{rate:.1f} it/s")
            if self._rows is not None:
                per_step = self._rows[0] * trainer.accumulate_grad_batches * trainer.world_size
                fields.append(f"{rate * per_step:.1f} {self._rows[1]}/s")
        done, elapsed = step - self._start_step, now - self._start_time
        if self._total_steps is not None and done > 0 and elapsed > 0:
            left = max(self._total_steps - step, 0) * elapsed / done
            fields.append(f"ETA {format_duration(left)}")
        return " | ".join(fields)

    def validation_line(self, trainer: pl.Trainer) -> str:
        """`val step 120/1719 | epoch 1/2 | loss 1.101 | top1 % @8 61.2 @16 80.4`: the
        validation's loss and every per-dim metric (`val/<metric>@<dim>`)."""
        metrics = trainer.callback_metrics
        fields = self._position(trainer)
        if (loss := _metric(metrics, "val/loss")) is not None:
            fields.append(f"loss {format_value(loss)}")
        fields += format_per_dim(per_dim_rows(metrics, ("val",)).get("val", []))
        return "val " + " | ".join(fields)

    def _write(self, trainer: pl.Trainer, text: str) -> None:
        if trainer.is_global_zero:
            write_line(text, console=self.console)


def write_line(text: str, console: bool = True) -> None:
    """`text` through the progress logger: to every handler it reaches (a Hydra job's console
    and `<run>/train.log`), else printed; with `console=False` to its file handlers only."""
    if console:
        if log.hasHandlers():
            log.info(text)
        else:  # logging not set up (outside a Hydra job): stdout, at once
            print(text, flush=True)
        return
    if not log.isEnabledFor(logging.INFO):
        return
    record = log.makeRecord(log.name, logging.INFO, __file__, 0, text, (), None)
    for handler in _file_handlers(log):
        if record.levelno >= handler.level:
            handler.handle(record)


def _file_handlers(logger: logging.Logger) -> list[logging.Handler]:
    """The file handlers that `logger`'s records reach."""
    found: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        found += [h for h in current.handlers if isinstance(h, logging.FileHandler)]
        current = current.parent if current.propagate else None
    return found


def _total_steps(trainer: pl.Trainer) -> float | None:
    """The optimizer steps the fit will end at; None when unknown (no length, no max_steps)."""
    try:
        total = float(trainer.estimated_stepping_batches)
    except Exception:  # any loader Lightning cannot measure: no total
        return None
    return total if math.isfinite(total) else None


def _total_epochs(trainer: pl.Trainer, total_steps: float | None) -> int | None:
    """The epochs the fit will run: those `total_steps` take, else `max_epochs`."""
    batches = trainer.num_training_batches
    if total_steps is not None and isinstance(batches, int | float) and math.isfinite(batches):
        per_epoch = math.ceil(batches / trainer.accumulate_grad_batches)
        if per_epoch > 0:
            return math.ceil(total_steps / per_epoch)
    max_epochs = trainer.max_epochs
    return max_epochs if max_epochs is not None and max_epochs > 0 else None


def progress_callbacks(
    callbacks: list[Callback], show_progress: bool
) -> tuple[list[Callback], bool]:
    """`callbacks` with one `ProgressReport` (a default one when none is given), and whether
    the Trainer shows its own bar. `show_progress=False` puts neither the bar nor the lines on
    the console (the log files still get the lines); a bar among `callbacks` is kept, as asked
    for."""
    reports = [c for c in callbacks if isinstance(c, ProgressReport)]
    if not reports:
        reports = [ProgressReport()]
        callbacks = [*callbacks, *reports]
    bar_given = any(isinstance(c, ProgressBar) for c in callbacks)
    shows_bar = show_progress and (bar_given or any(r.mode == "bar" for r in reports))
    for report in reports:
        report.console = show_progress and not shows_bar
    return callbacks, shows_bar
