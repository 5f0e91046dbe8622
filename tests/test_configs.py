"""Every config in conf/ composes, and every object it names instantiates."""

from pathlib import Path

import pytest
import torch
from conftest import CONFIG_DIR, FAST, compose_train
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mrl.training.builders import build_model, build_named

GROUPS = [
    "data",
    "encoder",
    "head",
    "loss",
    "optimizer",
    "scheduler",
    "trainer",
    "logger",
]


# Options of a shared group that belong to `text.yaml`'s tasks (composed in test_text.py).
TEXT_ONLY = {("loss", "matryoshka_contrastive")}


def options(group: str) -> list[str]:
    names = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
    return [n for n in names if (group, n) not in TEXT_ONLY]


@pytest.mark.parametrize(
    "group, option", [(g, o) for g in GROUPS + ["callbacks"] for o in options(g)]
)
def test_every_group_option_composes_and_instantiates(tmp_path: Path, group: str, option: str):
    overrides = [f"{group}={option}"]
    if group == "encoder":
        overrides += ["nesting=[8,16]", "data=synthetic", "data.image_size=32"]
        overrides += ["data.in_channels=3"]
    cfg = compose_train(tmp_path, *overrides)
    if group == "data":
        dm = instantiate(cfg.data)
        assert dm.num_classes >= 2 and dm.in_channels in (1, 3)
    elif group in ("logger", "callbacks"):
        assert len(build_named(cfg[group], group)) >= 1
    elif group == "trainer":
        gpu_wanted = cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available()
        cpu_stand_in = {"accelerator": "cpu", "devices": 1} if gpu_wanted else {}
        trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False, **cpu_stand_in)
        assert trainer.max_epochs == cfg.trainer.max_epochs
    else:
        model = build_model(cfg, num_classes=10, in_channels=cfg.data.get("in_channels", 1))
        assert model.head.nesting[-1] <= model.encoder.num_features
        assert len(model.parameter_groups()) in (1, 2)


@pytest.mark.parametrize(
    "method, dims, tied",
    [("mrl", [8, 16, 2048], False), ("mrl_e", [8, 16, 2048], True), ("ff", [2048], False),
     ("ff2", [2], False), ("ff16", [16], False), ("ff2048", [2048], False)],
)  # fmt: skip
def test_every_method_picks_its_head(tmp_path: Path, method: str, dims: list[int], tied: bool):
    cfg = compose_train(
        tmp_path, f"method={method}", "encoder.widths=[8,8,8,2048]", "nesting=[8,16,2048]"
    )
    assert list(cfg.head.nesting) == dims and cfg.head.tied is tied
    model = build_model(cfg, num_classes=10, in_channels=cfg.data.get("in_channels", 1))
    assert model.head.method == ("ff" if method.startswith("ff") else method)


def test_an_unknown_method_is_one_line(tmp_path: Path):
    cfg = compose_train(tmp_path, *FAST, "method=ff_16")
    with pytest.raises(Exception, match="method=ff_16 is not a method: use mrl, mrl_e, ff or ffM"):
        OmegaConf.to_container(cfg.head, resolve=True)


def test_nesting_is_defined_once_and_interpolated(tmp_path: Path):
    cfg = compose_train(tmp_path, *FAST, "nesting=[4,8,32]")
    assert list(cfg.head.nesting) == [4, 8, 32]
    ff = compose_train(tmp_path, *FAST, "nesting=[4,8,32]", "method=ff")
    assert list(ff.head.nesting) == [32]
    ff8 = compose_train(tmp_path, *FAST, "method=ff", "head.nesting=[8]")
    assert list(ff8.head.nesting) == [8]


def test_seed_zero_reaches_the_data(tmp_path: Path):
    cfg = compose_train(tmp_path, *FAST, "seed=0")
    assert cfg.seed == 0 and cfg.data.seed == 0


@pytest.mark.parametrize(
    "experiment",
    sorted(
        str(p.relative_to(CONFIG_DIR / "experiment").with_suffix(""))
        for p in (CONFIG_DIR / "experiment").rglob("*.yaml")
        if not p.name.startswith("_")  # shared parts, included by the experiments
        and "text" not in p.relative_to(CONFIG_DIR / "experiment").parts[:1]  # text.yaml's
    ),
)
def test_every_experiment_composes_and_builds(tmp_path: Path, experiment: str):
    required = {"fmnist/ablation_frozen": ["model.encoder_init=null"]}
    cfg = compose_train(tmp_path, f"experiment={experiment}", *required.get(experiment, []))
    assert cfg.name != "fmnist"  # each experiment names itself
    model = build_model(cfg, num_classes=10, in_channels=cfg.data.get("in_channels", 1))
    assert model.head.nesting[-1] <= model.encoder.num_features


@pytest.mark.parametrize(
    "ablation, default",
    [
        ("ablation_label_smoothing", "loss.label_smoothing=0.0"),
        ("ablation_loss_weights", "weighting=uniform"),
        ("ablation_nesting", "nesting=[2,4,8,16,32,64,128,256]"),
    ],
)
def test_an_ablations_default_setting_is_the_table1_mrl_run(tmp_path: Path, ablation, default):
    """The ablations take their default setting's runs from fmnist/table1 (method=mrl): at that
    setting an ablation must be the same job, so the comparison is fair."""
    from omegaconf import OmegaConf

    def job(*overrides: str) -> dict:
        cfg = OmegaConf.to_container(compose_train(tmp_path, *overrides, "seed=1"), resolve=True)
        cfg.pop("name"), cfg.pop("logger")  # where the run is filed, not what it trains
        weights = cfg["loss"].pop("weights")
        cfg.pop("weighting", None)
        # Uniform weights are the loss's default (null): one per dim, all 1.
        assert weights is None or weights == [1.0] * len(cfg["nesting"])
        return cfg

    assert job(f"experiment=fmnist/{ablation}", default) == job(
        "experiment=fmnist/table1", "method=mrl"
    )


def test_loss_weighting_schemes(tmp_path: Path):
    nesting = "nesting=[2,4,8,16]"
    weights = {}
    for scheme in ("uniform", "increasing", "decreasing"):
        cfg = compose_train(
            tmp_path, "experiment=fmnist/ablation_loss_weights", nesting, f"weighting={scheme}"
        )
        weights[scheme] = list(cfg.loss.weights)
    assert weights["uniform"] == [1.0, 1.0, 1.0, 1.0]
    assert weights["increasing"] == pytest.approx([0.4, 0.8, 1.2, 1.6])
    assert weights["decreasing"] == weights["increasing"][::-1]


def test_slurm_launcher_config_composes():
    from hydra import compose, initialize_config_dir

    overrides = ["hydra/launcher=slurm", "hydra.launcher.nodes=2", "hydra.launcher.partition=gpu"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.nodes == 2 and launcher.partition == "gpu"
    assert launcher.tasks_per_node == launcher.gpus_per_node == 8
    assert launcher.signal_delay_s == 90 and launcher.max_num_timeout >= 1


def test_compile_switch_keeps_checkpoint_keys(tmp_path: Path):
    plain = build_model(compose_train(tmp_path, *FAST), num_classes=10, in_channels=1)
    compiled = build_model(
        compose_train(tmp_path, *FAST, "model.compile=true"), num_classes=10, in_channels=1
    )
    assert compiled.encoder._compiled_call_impl is not None
    assert plain.encoder._compiled_call_impl is None
    assert list(compiled.state_dict()) == list(plain.state_dict())


@pytest.mark.parametrize("option", ["fdr", "limit", "steps"])
def test_every_debug_option_composes_lands_apart_and_sets_the_trainer(tmp_path: Path, option):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"debug={option}", "experiment=fmnist_mrl_e"],
                      return_hydra_config=True)  # fmt: skip
    assert Path(cfg.paths.output_root).parts[-1] == "debug"
    assert cfg.method == "mrl_e"  # the experiment still applies; debug only shortens the run
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    expected = {
        "fdr": lambda t: t.fast_dev_run is True,
        "limit": lambda t: t.max_epochs == 2 and t.limit_train_batches == 10,
        "steps": lambda t: t.max_steps == 30 and t.val_check_interval == 10,
    }
    assert expected[option](trainer)
    text = OmegaConf.to_container(
        _compose_text(f"debug={option}"), resolve=False
    )  # the text trainer takes the same group
    assert text["paths"]["output_root"].endswith("/debug")


def _compose_text(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("text", overrides=list(overrides))


def test_the_trainer_limits_are_keys_and_default_to_lightning_s(tmp_path: Path):
    cfg = compose_train(tmp_path, "trainer.limit_val_batches=2", "trainer.limit_test_batches=0.5")
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert (trainer.limit_val_batches, trainer.limit_test_batches) == (2, 0.5)
    plain = instantiate(compose_train(tmp_path).trainer, logger=False, enable_checkpointing=False)
    assert (plain.limit_train_batches, plain.limit_val_batches, plain.num_sanity_val_steps) == (
        1.0, 1.0, 2,
    )  # fmt: skip


def test_a_trainer_is_built_without_lightning_s_advertisements(tmp_path: Path, caplog):
    import logging
    import warnings

    from mrl.training.builders import build_trainer

    with caplog.at_level(logging.INFO):
        build_trainer(compose_train(tmp_path, *FAST), tmp_path)
    assert caplog.records, "Lightning logged nothing: the check below would be empty"
    assert not [r for r in caplog.records if "Tip:" in r.getMessage()]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        from mrl.training.quiet import silence_library_noise

        silence_library_noise()
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning, stacklevel=1)
        warnings.warn("a real warning", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["a real warning"]
