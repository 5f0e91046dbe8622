"""`mrl-train`: train a Matryoshka model from the Hydra config, test it, write `results.json`."""

import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

import mrl.config  # noqa: F401  (registers the config resolvers before Hydra composes)
from mrl.builders import build_datamodule, build_model, build_trainer
from mrl.errors import ConfigError, DataNotFoundError
from mrl.report.provenance import current_provenance
from mrl.results import atomic_write_json, format_table, per_dim_results

log = logging.getLogger("mrl.train")
CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"
CHECKPOINT_PATTERNS = ("hpc_ckpt_*.ckpt", "checkpoints/last*.ckpt", "checkpoints/interrupted*.ckpt")


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The most recent resumable checkpoint of a run (SLURM, last, or on-interrupt), if any."""
    found = [p for pattern in CHECKPOINT_PATTERNS for p in run_dir.glob(pattern)]
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


def resolve_resume(run_dir: Path, ckpt_path: str | None) -> str | None:
    """The checkpoint to resume from: `ckpt_path=` if given, else the run's newest checkpoint.

    Refuses a directory that already holds a finished run's `results.json`, so a run never
    overwrites another's results.
    """
    if (run_dir / "results.json").exists():
        raise ConfigError(
            f"{run_dir} already holds the results of a finished run: choose another run_id= "
            f"(or hydra.run.dir=), or remove that directory"
        )
    if ckpt_path:
        if not Path(ckpt_path).is_file():
            raise ConfigError(f"ckpt_path={ckpt_path} does not exist")
        return str(ckpt_path)
    newest = newest_checkpoint(run_dir)
    if newest is not None:
        log.info("resuming from %s", newest)
    return None if newest is None else str(newest)


def evaluate_after_training(run_dir: Path, overrides: list[str]) -> None:
    """Run `mrl-eval` on the run's last checkpoint (skipped when none was saved)."""
    from mrl.evaluate import compose_eval_config, evaluate

    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        log.warning("eval_after: no %s (fast_dev_run saves none); skipping evaluation", last)
        return
    evaluate(compose_eval_config([f"ckpt_path={last}", *overrides]))


def finish_loggers(trainer: pl.Trainer) -> None:
    """Close the wandb run, so the next run of a multirun sweep (same process) gets its own."""
    if any(isinstance(lg, WandbLogger) for lg in trainer.loggers):
        import wandb

        wandb.finish()


def fit_and_test(
    trainer: pl.Trainer, model: Any, datamodule: Any, run_dir: Path, ckpt_path: str | None
) -> None:
    """Fit (resuming from `ckpt_path` when given), then test the final weights."""
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except SystemExit:  # Lightning exits after saving checkpoints on Ctrl-C
        print(
            f"mrl-train: interrupted; rerun with hydra.run.dir={run_dir} to resume", file=sys.stderr
        )
        raise
    # A finished fit no longer needs SLURM's requeue checkpoints, and Lightning would load the
    # newest of them into the model for `test` (its SLURM default), not the final weights.
    for stale in run_dir.glob("hpc_ckpt_*.ckpt"):
        if trainer.is_global_zero:
            stale.unlink()
    trainer.strategy.barrier()
    trainer.test(model, datamodule=datamodule, verbose=False)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test and record one run; returns the results dict written to `results.json`."""
    started = time.time()
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.run_dir)
    ckpt_path = resolve_resume(run_dir, cfg.get("ckpt_path"))
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule.num_classes, datamodule.in_channels)
    trainer = build_trainer(cfg, run_dir)
    try:
        fit_and_test(trainer, model, datamodule, run_dir, ckpt_path)
    finally:
        finish_loggers(trainer)

    rows = per_dim_results(trainer.callback_metrics, model.nesting, stage="test")
    results = {
        "experiment": str(cfg.name),
        "method": model.head.method,
        "nesting": list(model.nesting),
        "per_dim": rows,
        "seed": cfg.get("seed"),
        "wall_time_s": round(time.time() - started, 1),
        "run_dir": str(run_dir),
        "provenance": current_provenance(),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    if trainer.is_global_zero:
        atomic_write_json(run_dir / "results.json", results)
        print(
            format_table(
                rows, f"{cfg.name} [{model.head.method}]: test accuracy per dim ({run_dir})"
            )
        )
        if cfg.get("eval_after") is not None:
            evaluate_after_training(run_dir, list(cfg.eval_after))
    return results


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> None:
    """Console entry point; bad config or missing data ends with one line and exit status 2."""
    try:
        train(cfg)
    except (ConfigError, DataNotFoundError) as err:
        print(f"mrl-train: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
