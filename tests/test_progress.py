"""Training progress as plain lines (`mrl.training.progress`): the lines' format and cadence on a
stand-in trainer, the choice between them and the Trainer's bar, and one real `mrl-train`
process whose output goes to a file, as under SLURM or `nohup`."""

import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import FAST, compose_train
from lightning.pytorch.callbacks import TQDMProgressBar

from mrl.core.errors import ConfigError
from mrl.training.builders import build_trainer
from mrl.training.progress import (
    ProgressReport,
    batch_rows,
    format_per_dim,
    progress_callbacks,
    resolve_mode,
    write_line,
)

LOGGER = "mrl.training.progress"
# The tests' tiny run, with progress shown.
SHOWN = [*(o for o in FAST if not o.startswith("trainer.enable_progress_bar")),
         "trainer.enable_progress_bar=true"]  # fmt: skip
IMAGES = (torch.zeros(64, 3, 8, 8), torch.zeros(64, dtype=torch.long))


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_trainer(**fields) -> SimpleNamespace:
    """What the report reads of a Trainer: 1719 steps, 860 batches an epoch."""
    defaults = dict(global_step=0, current_epoch=0, sanity_checking=False, is_global_zero=True,
                    callback_metrics={}, accumulate_grad_batches=1, world_size=1, max_epochs=2,
                    estimated_stepping_batches=1719, num_training_batches=860)  # fmt: skip
    return SimpleNamespace(**{**defaults, **fields})


def started(report: ProgressReport, trainer: SimpleNamespace) -> Clock:
    clock = Clock()
    report._clock = clock
    report.on_train_start(trainer, None)
    return clock


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def run_steps(report, trainer, clock, steps: int, seconds_each: float) -> None:
    """`steps` training batches of `seconds_each` seconds, one optimizer step each."""
    for _ in range(steps):
        report.on_train_batch_start(trainer, None, IMAGES, 0)
        clock.now += seconds_each
        trainer.global_step += 1


def test_a_step_line_has_position_losses_rates_and_time_left(caplog):
    report = ProgressReport(mode="lines", every_n_steps=120, every_s=None)
    trainer = fake_trainer()
    clock = started(report, trainer)
    trainer.callback_metrics = {"train/loss": torch.tensor(1.2344),
                                "train/loss_mean": torch.tensor(0.1764)}  # fmt: skip
    with caplog.at_level(logging.INFO, LOGGER):
        run_steps(report, trainer, clock, 120, 1 / 40)
        report.on_train_batch_start(trainer, None, IMAGES, 120)
    assert lines(caplog) == [
        "step 120/1719 | epoch 1/2 | loss 1.234 | loss/dim mean 0.176 | 40.0 it/s | "
        "2560.0 img/s | ETA 0:00:40"
    ]


def test_lines_come_every_n_steps_or_every_s_seconds_whichever_first(caplog):
    by_steps = ProgressReport(mode="lines", every_n_steps=3, every_s=100)
    trainer = fake_trainer()
    clock = started(by_steps, trainer)
    with caplog.at_level(logging.INFO, LOGGER):
        run_steps(by_steps, trainer, clock, 8, 1.0)
    assert [line.split(" | ")[0] for line in lines(caplog)] == ["step 3/1719", "step 6/1719"]

    caplog.clear()
    by_time = ProgressReport(mode="lines", every_n_steps=100, every_s=2.5)
    trainer = fake_trainer()
    clock = started(by_time, trainer)
    with caplog.at_level(logging.INFO, LOGGER):
        run_steps(by_time, trainer, clock, 8, 1.0)
    assert [line.split(" | ")[0] for line in lines(caplog)] == ["step 3/1719", "step 6/1719"]


def test_validation_has_a_line_with_its_per_dim_metrics_and_does_not_count_as_training(caplog):
    report = ProgressReport(mode="lines", every_n_steps=50, every_s=None)
    trainer = fake_trainer()
    clock = started(report, trainer)
    trainer.sanity_checking = True  # before training: no line
    report.on_validation_start(trainer, None)
    report.on_validation_end(trainer, None)
    trainer.sanity_checking = False
    with caplog.at_level(logging.INFO, LOGGER):
        run_steps(report, trainer, clock, 10, 0.1)
        report.on_validation_start(trainer, None)  # the steps since the last line first
        clock.now += 60.0
        trainer.callback_metrics = {"val/loss": torch.tensor(1.1012), "val/top1": 0.925,
                                    "val/top1@8": 0.612, "val/top1@16": 0.804,
                                    "val/top5@8": 0.85, "train/loss@8": 2.0}  # fmt: skip
        report.on_validation_end(trainer, None)
        run_steps(report, trainer, clock, 50, 0.1)
        report.on_train_batch_start(trainer, None, IMAGES, 60)
        report.on_train_end(trainer, None)  # nothing new since the last line
    step_10, validation, step_60 = lines(caplog)
    assert step_10.startswith("step 10/1719 | epoch 1/2 |") and "| 10.0 it/s |" in step_10
    assert validation == (
        "val step 10/1719 | epoch 1/2 | loss 1.101 | top1 % @8 61.2 @16 80.4 | top5 % @8 85.0"
    )
    assert "| 10.0 it/s | 640.0 img/s |" in step_60  # the validation's minute left out


def test_the_last_line_names_the_epoch_of_the_last_step(caplog):
    report = ProgressReport(mode="lines", every_n_steps=None, every_s=None)
    trainer = fake_trainer(estimated_stepping_batches=5, num_training_batches=6, max_epochs=12)
    clock = started(report, trainer)
    with caplog.at_level(logging.INFO, LOGGER):
        run_steps(report, trainer, clock, 5, 0.5)
        trainer.current_epoch = 1  # Lightning's count once the fit has stopped
        report.on_train_end(trainer, None)
    assert lines(caplog) == ["step 5/5 | epoch 1/1 | 2.0 it/s | 128.0 img/s | ETA 0:00:00"]


def test_only_the_first_process_writes(caplog):
    report = ProgressReport(mode="lines", every_n_steps=1, every_s=None)
    trainer = fake_trainer(is_global_zero=False)
    clock = started(report, trainer)
    with caplog.at_level(logging.INFO, LOGGER):
        run_steps(report, trainer, clock, 3, 0.1)
    assert lines(caplog) == []


def test_the_mode_follows_the_terminal_unless_forced():
    assert resolve_mode("auto", terminal=True) == "bar"
    assert resolve_mode("auto", terminal=False) == "lines"
    assert resolve_mode("lines", terminal=True) == "lines"
    assert resolve_mode("bar", terminal=False) == "bar"
    with pytest.raises(ConfigError, match="progress_bar.mode must be one of"):
        ProgressReport(mode="plain")
    with pytest.raises(ConfigError, match="every_n_steps must be a positive integer or null"):
        ProgressReport(every_n_steps=0)
    with pytest.raises(ConfigError, match="every_s must be a positive number or null"):
        ProgressReport(every_s=-1)


def test_rows_and_their_unit_come_from_the_batch():
    assert batch_rows(IMAGES) == (64, "img")
    text = {"anchors": {"input_ids": torch.zeros(16, 12, dtype=torch.long)}, "num_negatives": 0}
    assert batch_rows(text) == (16, "rows")
    assert batch_rows((["a", "b", "c"], torch.zeros(3))) == (3, "rows")
    assert batch_rows({"n": 3}) is None
    assert format_per_dim([(8, "map10", 1.5), (16, "map10", 2.25)]) == ["map10 @8 1.5 @16 2.25"]


def test_in_bar_mode_the_lines_reach_the_log_files_only(tmp_path: Path, capsys):
    logger = logging.getLogger(LOGGER)
    file_handler = logging.FileHandler(tmp_path / "train.log")
    console = logging.StreamHandler(sys.stdout)
    for handler in (file_handler, console):
        logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        write_line("beside the bar", console=False)
        write_line("on its own")
    finally:
        for handler in (file_handler, console):
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(level)
    assert (tmp_path / "train.log").read_text() == "beside the bar\non its own\n"
    assert capsys.readouterr().out == "on its own\n"


def test_the_trainer_shows_its_bar_or_the_lines(tmp_path: Path):
    def built(*overrides: str):
        trainer = build_trainer(compose_train(tmp_path, *SHOWN, *overrides), tmp_path)
        (report,) = [c for c in trainer.callbacks if isinstance(c, ProgressReport)]
        return trainer, report

    trainer, report = built("callbacks.progress_bar.mode=lines", "callbacks.progress_bar.every_s=5")
    assert trainer.progress_bar_callback is None and report.console and report.every_s == 5.0
    trainer, report = built("callbacks.progress_bar.mode=bar")
    assert trainer.progress_bar_callback is not None and not report.console
    trainer, report = built("callbacks.progress_bar=null")  # as a text run: the defaults
    assert report.every_n_steps == 50 and report.every_s == 30.0
    trainer, report = built(
        "callbacks.progress_bar.mode=lines", "trainer.enable_progress_bar=false"
    )
    assert trainer.progress_bar_callback is None and not report.console

    bar = TQDMProgressBar()
    callbacks, shows_bar = progress_callbacks([bar, ProgressReport(mode="lines")], True)
    assert shows_bar and not callbacks[1].console  # a bar asked for by name is kept


@pytest.mark.slow
def test_a_run_writing_to_a_file_has_progress_lines_there_and_in_train_log(tmp_path: Path):
    run_dir, out = tmp_path / "run", tmp_path / "run.out"
    command = [str(Path(sys.executable).with_name("mrl-train")), f"hydra.run.dir={run_dir}",
               *SHOWN, "trainer.max_steps=6", "trainer.val_check_interval=3",
               "trainer.limit_test_batches=1", "callbacks.progress_bar.every_n_steps=2",
               "callbacks.progress_bar.every_s=null"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    with open(out, "w") as sink:
        subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, env=env, check=True)
    text = out.read_text()
    ours = [line.split(" - ", 1)[1] for line in text.splitlines() if f"[{LOGGER}]" in line]
    steps = [line for line in ours if line.startswith("step ")]
    validations = [line for line in ours if line.startswith("val ")]
    assert [line.split(" | ")[0] for line in steps] == ["step 2/6", "step 3/6", "step 5/6",
                                                        "step 6/6"], text  # fmt: skip
    assert all(re.search(r"\| loss \d.* \| [\d.]+ it/s \| [\d.]+ img/s \| ETA ", s) for s in steps)
    assert [v.split(" | ")[0] for v in validations] == ["val step 3/6", "val step 6/6"], text
    per_dim = r"top1 % @2 [\d.]+ @4 [\d.]+ @8 [\d.]+ @16 [\d.]+ @32 [\d.]+ \| top5 % @2 "
    assert all(re.search(per_dim, v) for v in validations), validations
    assert "Epoch 0/" not in text and "\r" not in text  # no frame of a bar
    log = (run_dir / "train.log").read_text()
    assert [line.split(" - ", 1)[1] for line in log.splitlines() if f"[{LOGGER}]" in line] == ours
