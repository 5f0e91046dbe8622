"""A CSV logger whose `metrics.csv` survives a resume: the rows up to the checkpoint a run
resumes from are kept and the new ones appended (Lightning's deletes the file)."""

import csv
import io
import os

from lightning.fabric.loggers.csv_logs import _ExperimentWriter
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from mrl.runs.files import atomic_write_text


def keep_rows_before(path: str, step: int) -> list[str]:
    """Rewrite the CSV at `path` (atomically) keeping only rows logged before `step`; returns
    its columns (empty when there is no file)."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        rows = [r for r in reader if r.get("step", "").isdigit() and int(r["step"]) < step]
    if not rows:
        os.remove(path)
        return []
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
    return columns


class _ResumableWriter(ExperimentWriter):
    def __init__(self, log_dir: str, resume_step: int) -> None:
        self._resume_step = resume_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        self.metrics_keys = keep_rows_before(self.metrics_file_path, self._resume_step)


class ResumableCSVLogger(CSVLogger):
    """`CSVLogger` that keeps the rows of earlier attempts of a run up to `resume_step` (set by
    the run lifecycle before training; 0, the default, starts a fresh file)."""

    resume_step: int = 0

    @property
    @rank_zero_experiment
    def experiment(self) -> _ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumableWriter(self.log_dir, self.resume_step)
        return self._experiment

    def set_resume_step(self, step: int) -> None:
        """Keep the earlier rows logged before `step` (the resumed checkpoint's step)."""
        self.resume_step = int(step)
