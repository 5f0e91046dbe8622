"""The run's loggers: a CSV logger whose `metrics.csv` survives a resume (the rows up to the
checkpoint a run resumes from are kept and the new ones appended; Lightning's deletes the file),
lists per-dim columns in dim order and names learning rates as wandb does, and a wandb logger
laid out for per-dim metrics (`MatryoshkaWandbLogger`)."""

import csv
import io
import os
import re
from collections.abc import Mapping
from typing import Any

from lightning.fabric.loggers.csv_logs import _ExperimentWriter
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from mrl.runs.files import atomic_write_text
from mrl.runs.format import UNTRACKED_KEYS

# LearningRateMonitor's names: `lr-<Optimizer>` (one group) or `lr-<Optimizer>/<group>`.
LR_KEY = re.compile(r"^lr-[A-Za-z0-9_]+(?:/(?P<group>[^/]+))?$")


def lr_key(name: str) -> str | None:
    """`lr/<param group>` for a learning rate's logged name (`lr-AdamW/pg2` -> `lr/pg2`,
    `lr-SGD` -> `lr/pg1`); None for any other name."""
    match = LR_KEY.match(name)
    return f"lr/{match['group'] or 'pg1'}" if match else None


def csv_key(name: str) -> str:
    """The `metrics.csv` column of a logged metric: learning rates as `lr_key`, others as
    logged."""
    return lr_key(name) or name


def column_order(name: str) -> tuple[str, int]:
    """Sort key of a `metrics.csv` column: a per-dim column (`<name>@<dim>`) after `<name>`,
    by its dim as a number (`top1@2` before `top1@16`); the others by name."""
    base, at, dim = name.rpartition("@")
    return (base, int(dim)) if at and dim.isdigit() else (name, -1)


def keep_rows_before(path: str, step: int) -> list[str]:
    """Rewrite the CSV at `path` (atomically) keeping only rows logged before `step`, its
    columns named and ordered as this logger writes them; returns those columns (empty when
    there is no file)."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = sorted(dict.fromkeys(map(csv_key, reader.fieldnames or [])), key=column_order)
        rows = [
            {csv_key(k): v for k, v in r.items() if k is not None}
            for r in reader
            if r.get("step", "").isdigit() and int(r["step"]) < step
        ]
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

    def _record_new_keys(self) -> set[str]:
        new_keys = super()._record_new_keys()
        self.metrics_keys.sort(key=column_order)
        return new_keys


class ResumableCSVLogger(CSVLogger):
    """`CSVLogger` that keeps the rows of earlier attempts of a run up to `resume_step` (set by
    the run lifecycle before training; 0, the default, starts a fresh file), orders per-dim
    columns by dim (`column_order`) and names learning rates `lr/<group>` (`csv_key`)."""

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

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log `metrics` under their `metrics.csv` names (`csv_key`)."""
        super().log_metrics({csv_key(k): v for k, v in metrics.items()}, step)


# -- wandb ------------------------------------------------------------------------------------

PER_DIM_KEY = re.compile(r"^(?P<stage>[^/@]+)/(?P<metric>[^/@]+)@(?P<dim>\d+)$")
# wandb's workspace puts every key into the section named by its first `/` segment and orders
# the panels of a section by their names as strings (so `@128` came before `@16` and `@2`):
# one section per stage and metric, with zero-padded dims, lists them smallest dim first.
DIM_DIGITS = 4
TABLE_STAGES = ("val", "test")
# Shown by the name template already (method, seed) or not a setting of the run.
UNNAMED_OVERRIDES = ("method", "seed", *UNTRACKED_KEYS, "hydra.", "experiment")


def dim_key(stage: str, metric: str, dim: int) -> str:
    """The wandb key of one stage's metric at one dim: `val-top1/dim0016`."""
    return f"{stage}-{metric}/dim{int(dim):0{DIM_DIGITS}d}"


def wandb_key(name: str) -> str:
    """The wandb name of a logged metric: per-dim ones by `dim_key`, learning rates as
    `lr/<param group>` (`lr-AdamW/pg1` -> `lr/pg1`, `lr-SGD` -> `lr/pg1`), others unchanged."""
    if match := PER_DIM_KEY.match(name):
        return dim_key(match["stage"], match["metric"], int(match["dim"]))
    return lr_key(name) or name


def per_dim_rows(metrics: Mapping[str, Any], stages: tuple[str, ...] = TABLE_STAGES) -> dict:
    """`{stage: [(dim, metric, value), ...]}` of the per-dim metrics (`{stage}/{metric}@{dim}`)
    among `metrics`, for the given stages, ordered by metric then dim."""
    rows: dict[str, list[tuple[int, str, float]]] = {}
    for name, value in metrics.items():
        match = PER_DIM_KEY.match(name)
        if match and match["stage"] in stages:
            rows.setdefault(match["stage"], []).append(
                (int(match["dim"]), match["metric"], float(value))
            )
    return {stage: sorted(r, key=lambda row: (row[1], row[0])) for stage, r in rows.items()}


def run_name(template: str, overrides: list[str]) -> str:
    """A run's wandb name: `template` (e.g. `mrl-seed0`) then the command line's other
    settings (`mrl-seed0-nesting=[8,16]`), so the runs of a sweep differ."""
    shown = [
        o for o in overrides if not o.split("=", 1)[0].lstrip("+~").startswith(UNNAMED_OVERRIDES)
    ]
    return "-".join([template, *shown])


def hydra_overrides() -> list[str]:
    """The running Hydra job's overrides (a sweep's included); empty outside a Hydra job."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _numbers(node: Any, prefix: str) -> dict[str, float]:
    """The numeric leaves of nested dicts as `prefix/key/...` (lists and strings left out)."""
    if isinstance(node, bool) or not isinstance(node, int | float | Mapping):
        return {}
    if not isinstance(node, Mapping):
        return {prefix: float(node)}
    out: dict[str, float] = {}
    for key, value in node.items():
        out.update(_numbers(value, f"{prefix}/{key}"))
    return out


class MatryoshkaWandbLogger(WandbLogger):
    """`WandbLogger` whose workspace reads by dim: per-dim metrics under one section per stage
    and metric (`val-top1/dim0002` ... `val-top1/dim0256`, see `wandb_key`), learning rates as
    `lr/<group>`, and at each validation and test end a `{stage}/per_dim` table (dim, metric,
    value) with a line plot of each metric against dim (`{stage}-{metric}/by_dim`).

    `name` gets the Hydra job's other overrides appended (`run_name`). The per-dim names are
    wandb's alone: the CSV log keeps `val/top1@16` (and names learning rates as here).
    """

    def __init__(self, name: str | None = None, **kwargs: Any) -> None:
        if name is not None:
            name = run_name(str(name), hydra_overrides())
        super().__init__(name=name, **kwargs)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics({wandb_key(k): v for k, v in metrics.items()}, step)
        for stage, rows in per_dim_rows(metrics).items():
            self.log_per_dim(stage, rows, step)

    @rank_zero_only
    def log_per_dim(
        self, stage: str, rows: list[tuple[int, str, float]], step: int | None = None
    ) -> None:
        """Log `rows` (dim, metric, value) as the `{stage}/per_dim` table and one line plot of
        each metric against dim."""
        import wandb

        payload: dict[str, Any] = {
            f"{stage}/per_dim": wandb.Table(
                columns=["dim", "metric", "value"], data=[list(r) for r in rows]
            )
        }
        for metric in dict.fromkeys(r[1] for r in rows):
            points = wandb.Table(
                columns=["dim", metric], data=[[d, v] for d, m, v in rows if m == metric]
            )
            payload[f"{stage}-{metric}/by_dim"] = wandb.plot.line(
                points, "dim", metric, title=f"{stage} {metric} against dim"
            )
        if step is not None:
            payload["trainer/global_step"] = step
        self.experiment.log(payload)

    @rank_zero_only
    def log_evaluation(self, summary: Mapping[str, Any]) -> None:
        """Add an `mrl-eval` summary to the run: its per-dim table and plots (`eval/per_dim`,
        `eval-{metric}/by_dim`), each per-dim value (`eval-{metric}/dim0016`) and the other
        headline numbers (`eval/...`) in the run's summary, the adaptive retrieval rows as the
        `eval/adaptive_retrieval` table."""
        import wandb

        rows = sorted(
            (
                (int(dim), metric, float(value))
                for dim, values in summary.get("per_dim", {}).items()
                for metric, value in values.items()
            ),
            key=lambda row: (row[1], row[0]),
        )
        if rows:
            self.log_per_dim("eval", rows)
        headline = {dim_key("eval", m, d): v for d, m, v in rows}
        for key, value in summary.items():
            if key != "per_dim":
                headline.update(_numbers(value, f"eval/{key}"))
        self.experiment.summary.update(headline)
        retrieval = summary.get("adaptive_retrieval") or []
        if retrieval:
            columns = list(retrieval[0])
            data = [[str(r.get(c)) if isinstance(r.get(c), list) else r.get(c) for c in columns]
                    for r in retrieval]  # fmt: skip
            self.experiment.log(
                {"eval/adaptive_retrieval": wandb.Table(columns=columns, data=data)}
            )
