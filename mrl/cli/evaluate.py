"""`mrl-eval`: encode a checkpoint's database and query splits once, then evaluate every dim.

The checks are `mrl.eval.checks`, the checkpoint and its data `mrl.saved.eval_target`, the
evaluation and the tables it writes `mrl.eval.pipeline`, the printed summary
`mrl.eval.summary`.
"""

import time
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

import mrl.training.resolvers  # noqa: F401  (registers the config resolvers before Hydra composes)
from mrl.commands import hydra_cli, run_command
from mrl.conf import CONFIG_DIR
from mrl.core.errors import ConfigError
from mrl.eval.checks import check_eval_config
from mrl.eval.pipeline import run_evaluation
from mrl.eval.summary import format_summary
from mrl.saved import eval_target, saved_for_eval
from mrl.saved.text_eval import evaluate_text_run


def compose_eval_config(overrides: list[str]) -> DictConfig:
    """`conf/eval.yaml` with `overrides`, from inside another Hydra app or from plain Python."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # e.g. mrl-train's app, same config dir
        return compose("eval", overrides=overrides)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("eval", overrides=overrides)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Check the config, load the checkpoint, run every enabled evaluation, write the tables
    and print the summary; returns the summary dict (empty on non-zero distributed ranks)."""
    started = time.time()
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
        raise ConfigError("no checkpoint given: pass ckpt_path=<run dir>/checkpoints/last.ckpt")
    check_eval_config(cfg)
    saved = saved_for_eval(cfg)
    if saved.kind == "text":
        return evaluate_text_run(cfg, saved)
    target = eval_target(cfg, saved)
    summary, rows = run_evaluation(cfg, target, started)
    if summary:
        print(format_summary(summary, rows, target.out_dir / "eval"))
    return summary


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
def main(cfg: DictConfig) -> None:
    """Console entry point: bad input is one line and exit status 2 (see `run_command`)."""
    run_command("mrl-eval", lambda: evaluate(cfg))


cli = hydra_cli(main, "mrl-eval")

if __name__ == "__main__":
    cli()
