"""`mrl-train`: train a Matryoshka model from the Hydra config, test it, write `results.json`.

What happens around the fit (locking, resuming, signals, failures, results) is the run
lifecycle of `mrl.training.lifecycle`; this module says what a vision run builds and reports.
"""

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, ListConfig

import mrl.training.resolvers  # noqa: F401  (registers the config resolvers before Hydra composes)
from mrl.commands import condense_hydra_error, hydra_cli, run_command
from mrl.conf import CONFIG_DIR
from mrl.core.errors import ConfigError
from mrl.eval.checks import check_eval_config
from mrl.runs.checkpoints import CHECKPOINT_DIR, LAST
from mrl.runs.files import format_table, per_dim_results
from mrl.training.builders import build_datamodule, build_model, build_trainer
from mrl.training.checks import check_train_config
from mrl.training.lifecycle import Built, TrainerSpec, run_training, table_title

log = logging.getLogger("mrl.cli.train")


def build(cfg: DictConfig) -> Built:
    """The data module (files checked, nothing decoded) and the model of a vision run."""
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule.num_classes, datamodule.in_channels)
    return Built(datamodule, model)


def results(cfg: DictConfig, trainer: pl.Trainer, built: Built) -> dict[str, Any]:
    """The per-dim test accuracies of the final weights, and which split they were tested on
    where the data module says (`test_split`: an ImageFolder's `"val"` when no test folder)."""
    model = built.model
    split = getattr(built.datamodule, "test_split", None)
    return {
        "experiment": str(cfg.name),
        "method": model.head.method,
        "nesting": list(model.nesting),
        **({"test_split": split} if split is not None else {}),
        "per_dim": per_dim_results(trainer.callback_metrics, model.nesting, stage="test"),
    }


def finish(cfg: DictConfig, run_dir: Path, built: Built, results: dict[str, Any]) -> None:
    """Print the table, and say when the test set was the validation folder."""
    title = f"{cfg.name} [{results['method']}]: test accuracy per dim ({run_dir})"
    print(format_table(results["per_dim"], table_title(cfg, title)))
    if results.get("test_split") == "val":
        print(built.datamodule.val_is_test_note())


def check(cfg: DictConfig) -> None:
    """Every `mrl-train` option, `eval_after`'s evaluation options included, before training."""
    check_train_config(cfg)
    if cfg.get("eval_after") is not None:
        check_eval_after(cfg.eval_after)


def check_eval_after(overrides: Any) -> None:
    """`eval_after` composes into a valid `mrl-eval` config (checked without a checkpoint)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from mrl.cli.evaluate import compose_eval_config

    if not isinstance(overrides, ListConfig | list) or not all(
        isinstance(o, str) for o in overrides
    ):
        raise ConfigError(
            f"eval_after={overrides!r} must be a list of mrl-eval overrides, e.g. "
            "\"eval_after=['retrieval.ks=[10]']\""
        )
    try:
        eval_cfg = compose_eval_config(["ckpt_path=checked-before-training", *overrides])
        check_eval_config(eval_cfg)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(f"eval_after: {condense_hydra_error(str(err))}") from err
    except ConfigError as err:
        raise ConfigError(f"eval_after: {err}") from err


def evaluate_after_training(run_dir: Path, overrides: list[str]) -> dict[str, Any] | None:
    """Run `mrl-eval` on the run's last checkpoint and return its summary (None, skipped, when
    no checkpoint was saved)."""
    from mrl.cli.evaluate import compose_eval_config, evaluate

    last = run_dir / CHECKPOINT_DIR / LAST
    if not last.is_file():
        log.warning("eval_after: no %s (fast_dev_run saves none); skipping evaluation", last)
        return None
    # Quoted: a study's run folder is named by its overrides (`method=mrl,seed=0`), which the
    # override grammar would otherwise parse.
    quoted = str(last).replace("\\", "\\\\").replace("'", "\\'")
    return evaluate(compose_eval_config([f"ckpt_path='{quoted}'", *overrides]))


def evaluate_finished(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """`eval_after`'s evaluation of a run that has just finished (its summary reaches the
    run's wandb log); None without `eval_after`."""
    if cfg.get("eval_after") is None:
        return None
    return evaluate_after_training(run_dir, list(cfg.eval_after))


SPEC = TrainerSpec(prog="mrl-train", check=check, build=build, results=results, finish=finish,
                   evaluate=evaluate_finished)  # fmt: skip


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test and record one run; returns the results dict written to `results.json`."""
    run_dir = Path(cfg.paths.run_dir)
    evaluated = (run_dir / "eval" / "summary.json").is_file()
    out = run_training(cfg, SPEC, build_trainer)
    # A skipped run (finished before) killed in its evaluation is evaluated now; a run that
    # finished now was evaluated inside the lifecycle.
    if cfg.get("eval_after") is not None and out.get("skipped") and not evaluated:
        if rank_zero_only.rank == 0:
            evaluate_after_training(run_dir, list(cfg.eval_after))
    return out


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> None:
    """Console entry point: bad input is one line and exit status 2 (see `run_command`)."""
    run_command("mrl-train", lambda: train(cfg))


cli = hydra_cli(main, "mrl-train")

if __name__ == "__main__":
    cli()
