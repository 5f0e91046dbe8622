"""What reaches the wandb run: per-dim metrics laid out by dim, per-dim tables and plots against
dim, `eval_after`'s summary, the run's name and group; read back from the offline run's files."""

import csv
import json
import struct
from pathlib import Path

import pytest
from conftest import FAST, compose_train
from wandb.proto import wandb_internal_pb2

from mrl.cli.train import train
from mrl.training.callbacks import HideVersionInProgressBar
from mrl.training.loggers import per_dim_rows, run_name, wandb_key

NESTING = (2, 4, 8, 16, 32)
EVAL_AFTER = (
    "eval_after=['probe.enabled=false','robustness.corruptions=[]','retrieval.ks=[10]',"
    "'retrieval.knn_ks=[1]','adaptive_retrieval.enabled=false']"
)


def wandb_records(path: Path) -> list:
    """The records of a `.wandb` file: a 7-byte header, then LevelDB-log blocks of 32 KiB whose
    chunks (checksum u32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last) hold
    serialized `Record` protobufs."""
    data, block, pos = path.read_bytes(), 32768, 7
    records, pending = [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def item_key(item) -> str:
    return item.key or "/".join(item.nested_key)


class OfflineRun:
    """An offline wandb run as its records and files show it."""

    def __init__(self, run_dir: Path) -> None:
        (self.dir,) = (run_dir / "wandb").glob("offline-run-*")
        self.history, self.summary, self.config = [], {}, {}
        for record in wandb_records(next(self.dir.glob("run-*.wandb"))):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                self.name, self.group = record.run.display_name, record.run.run_group
            elif kind == "history":
                self.history.append({item_key(i): json.loads(i.value_json)
                                     for i in record.history.item})  # fmt: skip
            elif kind == "summary":
                self.summary.update({item_key(i): json.loads(i.value_json)
                                     for i in record.summary.update})  # fmt: skip
            elif kind == "config":
                self.config.update({item_key(i): json.loads(i.value_json)
                                    for i in record.config.update})  # fmt: skip

    def tables(self, key: str) -> list[dict]:
        """Every logged version of the table `key`, as `{columns, data}`, in order."""
        paths = [h[f"{key}/path"] for h in self.history if f"{key}/path" in h]
        return [json.loads((self.dir / "files" / p).read_text()) for p in paths]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, OfflineRun]:
    run_dir = tmp_path_factory.mktemp("run")
    cfg = compose_train(run_dir, *FAST, "logger=default", "method=mrl_e", "seed=3",
                        "trainer.max_epochs=2", "data.num_train=128", "trainer.log_every_n_steps=1",
                        EVAL_AFTER)  # fmt: skip
    train(cfg)
    return run_dir, OfflineRun(run_dir)


def csv_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_run_is_named_and_grouped_from_the_config(trained):
    _, run = trained
    assert (run.group, run.name) == ("synthetic", "mrl_e-seed3")  # named after its data


def test_per_dim_metrics_sort_by_dim_and_keep_their_names_in_the_csv(trained):
    run_dir, run = trained
    keys = sorted(k for k in run.summary if k.startswith("val-top1/dim"))
    assert keys == [f"val-top1/dim{m:04d}" for m in NESTING]  # string order is dim order
    with open(run_dir / "csv" / "metrics.csv") as f:
        header = f.readline().strip().split(",")
    for name in ("train/loss", "val/top1", "test/top5"):  # then each dim, in dim order
        at = header.index(f"{name}@{NESTING[0]}")
        assert header[at : at + len(NESTING)] == [f"{name}@{m}" for m in NESTING]
    assert not any(c.startswith(("val-", "lr-")) for c in header)
    assert "lr/pg1" in header and "lr/pg1" in run.summary  # one name for the learning rate
    assert "train/loss_mean" not in header  # the bar's value, not a logged metric


@pytest.mark.parametrize("stage", ["val", "test"])
def test_per_dim_table_holds_the_csv_values_one_row_per_dim(trained, stage):
    run_dir, run = trained
    tables = run.tables(f"{stage}/per_dim")
    assert len(tables) == (2 if stage == "val" else 1)  # one per validation epoch
    last = tables[-1]
    assert last["columns"] == ["dim", "metric", "value"]
    logged = [r for r in csv_rows(run_dir) if r.get(f"{stage}/top1@2")][-1]
    for metric in ("top1", "top5"):
        rows = [(d, v) for d, m, v in last["data"] if m == metric]
        assert [d for d, _ in rows] == list(NESTING)
        for dim, value in rows:
            assert value == pytest.approx(float(logged[f"{stage}/{metric}@{dim}"]), abs=1e-6)
        spec = run.config[f"_wandb/visualize/{stage}-{metric}/by_dim"]
        assert spec["panel_config"]["panelDefId"] == "wandb/line/v0"
        assert spec["panel_config"]["fieldSettings"] == {"x": "dim", "y": metric, "stroke": None}
        (points,) = run.tables(f"{stage}-{metric}/by_dim_table")[-1:]
        assert points["data"] == [list(r) for r in rows]


def test_eval_after_summary_reaches_the_run(trained):
    run_dir, run = trained
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    (table,) = run.tables("eval/per_dim")
    expected = sorted(((int(d), m, v) for d, vs in summary["per_dim"].items()
                       for m, v in vs.items()), key=lambda r: (r[1], r[0]))  # fmt: skip
    assert [tuple(r) for r in table["data"]] == expected
    assert {m for _, m, _ in expected} >= {"head_top1", "map@10", "1nn"}
    assert run.summary["eval-head_top1/dim0032"] == summary["per_dim"]["32"]["head_top1"]
    largest = summary["adaptive_classification"]["largest_dim_accuracy"]
    assert run.summary["eval/adaptive_classification/largest_dim_accuracy"] == largest
    assert "eval-map@10/by_dim" in {k.removeprefix("_wandb/visualize/") for k in run.config}


def test_wandb_names():
    assert wandb_key("val/top1@16") == "val-top1/dim0016"
    assert wandb_key("test/map10@2048") == "test-map10/dim2048"
    assert wandb_key("train/loss@2") == "train-loss/dim0002"
    assert wandb_key("lr-AdamW/pg2") == "lr/pg2" and wandb_key("lr-SGD") == "lr/pg1"
    assert wandb_key("lr-SGD-momentum/pg1") == "lr-SGD-momentum/pg1"
    assert wandb_key("val/top1") == "val/top1"
    metrics = {"val/top1@8": 0.5, "val/top1@2": 0.25, "val/top1": 0.5, "train/loss@2": 1.0}
    assert per_dim_rows(metrics) == {"val": [(2, "top1", 0.25), (8, "top1", 0.5)]}
    overrides = ["experiment=fmnist/table1", "seed=0", "method=mrl", "nesting=[8,16]",
                 "paths.output_root=/x", "trainer.enable_progress_bar=false"]  # fmt: skip
    assert run_name("mrl-seed0", overrides) == "mrl-seed0-nesting=[8,16]"


def test_progress_bar_hides_the_version():
    class Bar:
        def get_metrics(self, trainer, module):
            return {"v_num": "ab12", "train/loss_mean": 1.0}

    class Trainer:
        progress_bar_callback = Bar()

    trainer = Trainer()
    for _ in range(2):  # a second set-up (fit, then test) wraps it once
        HideVersionInProgressBar().setup(trainer, None, "fit")
    assert trainer.progress_bar_callback.get_metrics(None, None) == {"train/loss_mean": 1.0}
