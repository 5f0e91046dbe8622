"""Training end to end: fast_dev_run per head, config errors, non-finite loss, resume, real data."""

import csv
import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import FAST, compose_train, requires_fmnist
from torch.utils.data import DataLoader, TensorDataset

from mrl.cli.train import train
from mrl.core.errors import ConfigError, DataNotFoundError
from mrl.training.builders import build_model
from mrl.training.lifecycle import table_title


@pytest.mark.parametrize(
    "head, dims", [("mrl", [2, 4, 8, 16, 32]), ("mrl_e", [2, 4, 8, 16, 32]), ("ff", [32])]
)
def test_fast_dev_run_writes_results(tmp_path: Path, head: str, dims: list[int]):
    cfg = compose_train(tmp_path, *FAST, f"method={head}", "trainer.fast_dev_run=true")
    results = train(cfg)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["nesting"] == dims == results["nesting"]
    assert [row["dim"] for row in on_disk["per_dim"]] == dims
    for row in on_disk["per_dim"]:
        assert 0.0 <= row["top1"] <= row["top5"] <= 1.0
    assert on_disk["config"]["head"]["tied"] == (head == "mrl_e")
    assert on_disk["experiment"] == cfg.name
    assert on_disk["method"] == head
    assert on_disk["provenance"]["git_revision"]  # what made the numbers travels with them


def test_a_debug_runs_table_says_it_is_not_a_result(tmp_path: Path, capsys):
    train(compose_train(tmp_path, *FAST, "debug=fdr"))
    (title,) = [line for line in capsys.readouterr().out.splitlines() if "per dim" in line]
    assert title.endswith(f"({tmp_path}) — debug (fast_dev_run: 1 batch), not a result")
    limited = compose_train(tmp_path, *FAST, "debug=limit")
    assert table_title(limited, "t") == (
        "t — debug (limit_train_batches: 10, limit_test_batches: 3), not a result"
    )
    assert table_title(compose_train(tmp_path, *FAST), "t") == "t"


def test_ff_at_a_chosen_dim(tmp_path: Path):
    cfg = compose_train(tmp_path, *FAST, "method=ff", "head.nesting=[8]", "trainer.fast_dev_run=1")
    assert train(cfg)["nesting"] == [8]


@pytest.mark.parametrize(
    "override, message",
    [
        ("nesting=[8,64]", "largest nesting dim 64 exceeds the representation size 32"),
        ("nesting=[16,8]", "strictly increasing"),
        ("loss.weights=[1,1]", "loss.weights has 2 entries but head.nesting has 5"),
        ("loss.label_smoothing=1.5", "label_smoothing"),
    ],
)
def test_config_errors_fail_before_training_with_one_line(tmp_path, override, message):
    cfg = compose_train(tmp_path, *FAST, override, "trainer.fast_dev_run=true")
    with pytest.raises(ConfigError, match=message) as info:
        train(cfg)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "results.json").exists()


def test_missing_fashion_mnist_names_the_fix(tmp_path: Path):
    cfg = compose_train(tmp_path, "data.root=/nonexistent/fmnist", "logger=csv")
    with pytest.raises(DataNotFoundError) as info:
        train(cfg)
    text = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in text and "data.root=" in text
    assert "\n" not in text


def test_a_finished_run_is_never_overwritten(tmp_path: Path):
    cfg = compose_train(tmp_path, *FAST, "trainer.fast_dev_run=true")
    train(cfg)
    before = (tmp_path / "results.json").read_bytes()
    with pytest.raises(ConfigError, match="already holds the results"):
        train(cfg)
    assert (tmp_path / "results.json").read_bytes() == before


def test_non_finite_loss_stops_with_the_step(tmp_path: Path):
    cfg = compose_train(tmp_path, *FAST)
    model = build_model(cfg, num_classes=10, in_channels=1)
    images = torch.randn(16, 1, 28, 28)
    images[8:] = float("nan")
    loader = DataLoader(TensorDataset(images, torch.zeros(16, dtype=torch.long)), batch_size=8)
    trainer = pl.Trainer(
        max_steps=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    with pytest.raises(FloatingPointError, match="non-finite training loss nan at step 1"):
        trainer.fit(model, train_dataloaders=loader)


@pytest.mark.slow
def test_per_dim_training_losses_add_up_to_the_total(tmp_path: Path):
    steps_per_epoch = 512 // 64
    train(compose_train(tmp_path, *FAST, "trainer.max_epochs=2", "trainer.log_every_n_steps=1"))
    with open(tmp_path / "csv" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    assert len(rows) == 2 * steps_per_epoch
    for r in rows:
        per_dim = sum(float(r[f"train/loss@{m}"]) for m in (2, 4, 8, 16, 32))
        assert per_dim == pytest.approx(float(r["train/loss"]), rel=1e-5)


@requires_fmnist
@pytest.mark.slow
def test_short_real_fashion_mnist_run_beats_chance(tmp_path: Path):
    cfg = compose_train(
        tmp_path,
        "logger=csv",
        "data.limit_train=6000",
        "data.limit_test=2000",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        "callbacks.lr_monitor=null",
    )
    results = train(cfg)
    rows = {row["dim"]: row for row in results["per_dim"]}
    largest = results["nesting"][-1]
    assert rows[largest]["top1"] > 0.7  # chance is 0.1
    assert rows[largest]["top5"] > rows[largest]["top1"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["data.root=/nonexistent/fmnist"], "apt-get install dataset-fashion-mnist"),
        (["nesting=[8,4]"], "strictly increasing"),
    ],
)
def test_cli_reports_bad_input_in_one_line(tmp_path, monkeypatch, capsys, args, message):
    from mrl.cli.train import main

    argv = ["mrl-train", *FAST[1:], *args, f"hydra.run.dir={tmp_path}", "hydra.output_subdir=null"]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mrl-train: error:") and message in err[0]


def test_each_run_of_a_sweep_gets_its_own_wandb_run(tmp_path: Path):
    # Runs of a Hydra multirun share one process: a wandb run left open would swallow the next.
    for name in ("a", "b"):
        cfg = compose_train(tmp_path / name, *FAST, "logger=default", "trainer.max_steps=2",
                            "trainer.max_epochs=1", "callbacks.lr_monitor=null")  # fmt: skip
        train(cfg)
    assert list((tmp_path / "a" / "wandb").glob("offline-run-*"))
    assert list((tmp_path / "b" / "wandb").glob("offline-run-*"))
