"""`PairsDataModule`: training rows from the researcher's files, batches of one set each without
repeated texts, prompts and per-side lengths, exact resume and DDP shares, one-line errors."""

import csv
import json
from pathlib import Path

import lightning.pytorch as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import CONFIG_DIR
from hydra import compose, initialize_config_dir

from mrl.core.errors import ConfigError, DataError
from mrl.text.encoders import tokenize
from mrl.text.multiset import MultiSetBatchSampler, distinct_text_batches
from mrl.text.pairs import PairsDataModule
from mrl.training.builders import checked_datamodule

NAMES = ("question", "answer", "wrong")
# Texts a careless reader would mangle: commas and quotes (CSV), numbers (`007`), `NA`, accents.
ROWS = [
    (f'question {i}, said "she"', f"answer {i:03d}", "NA" if i == 3 else f"wrong café {i}")
    for i in range(12)
]


def write_rows(path: Path, rows, names=NAMES) -> Path:
    """`rows` written at `path` in the format its suffix (or `/` for a saved folder) says."""
    columns = {n: [r[j] for r in rows] for j, n in enumerate(names)}
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(dict(zip(names, r))) + "\n" for r in rows))
    elif path.suffix == ".csv":
        with path.open("w", newline="") as f:
            csv.writer(f).writerows([names, *rows])
    elif path.suffix == ".tsv":
        path.write_text("".join("\t".join(r) + "\n" for r in [names, *rows]))
    elif path.suffix == ".parquet":
        pq.write_table(pa.table(columns), path)
    else:
        from datasets import Dataset, DatasetDict

        data = Dataset.from_dict(columns)
        (DatasetDict({"train": data, "dev": data}) if path.name == "dict" else data).save_to_disk(
            str(path)
        )
    return path


def module(train, **kwargs) -> PairsDataModule:
    kwargs.setdefault("batch_size", 4)
    return PairsDataModule(train=train, **kwargs)


def batches(dm: PairsDataModule) -> list[dict]:
    return list(dm.train_dataloader())


def same_batches(a: list[dict], b: list[dict]) -> bool:
    def equal(x, y) -> bool:
        if isinstance(x, dict):
            return x.keys() == y.keys() and all(equal(x[k], y[k]) for k in x)
        return torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y

    return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))


def batch_texts(dm: PairsDataModule, key) -> list[tuple[str, ...]]:
    index, rows = key
    return [dm.training_sets()[index].row(i) for i in rows]


def test_every_format_reads_to_identical_batches(tmp_path: Path):
    paths = [write_rows(tmp_path / name, ROWS) for name in
             ("rows.jsonl", "rows.csv", "rows.tsv", "rows.parquet", "saved", "dict")]  # fmt: skip
    reference = batches(module(str(paths[0])))
    assert len(reference) == 3 and reference[0]["num_negatives"] == 1
    for path in paths[1:]:
        dm = module(str(path))
        assert dm.training_sets()[0].columns == [list(c) for c in zip(*ROWS)], path
        assert same_batches(batches(dm), reference), path


def test_a_saved_dataset_dict_without_train_names_its_splits(tmp_path: Path):
    from datasets import Dataset, DatasetDict

    data = Dataset.from_dict({"a": ["x", "y"], "b": ["p", "q"]})
    DatasetDict({"dev": data, "extra": data}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match=r"dd: .*no 'train' split \(splits: dev, extra\)"):
        module(str(tmp_path / "dd"), batch_size=2).check()


def test_columns_are_picked_and_ordered_by_name(tmp_path: Path):
    names = ("id", "wrong", "answer", "question")
    path = write_rows(tmp_path / "r.jsonl", [(str(i), *r[::-1]) for i, r in enumerate(ROWS)], names)
    dm = module(str(path), columns=["question", "answer", "wrong"])
    assert dm.training_sets()[0].column_names == list(NAMES)
    assert [dm.training_sets()[0].row(i) for i in range(12)] == ROWS
    # Per entry, overriding the module's columns: answer -> question pairs, no negatives.
    dm = module([{"path": str(path), "columns": ["answer", "question"]}], columns=["x", "y"])
    assert dm.training_sets()[0].row(5) == (ROWS[5][1], ROWS[5][0])
    assert "negatives" not in next(iter(dm.train_dataloader()))


@pytest.mark.parametrize("negatives", [1, 2])
def test_negatives_are_row_major_with_their_count(tmp_path: Path, negatives: int):
    rows = [(f"q{i}", f"p{i}", *(f"n{i}-{j}" for j in range(negatives))) for i in range(10)]
    names = ("a", "b", "c", "d")[: 2 + negatives]
    dm = module(str(write_rows(tmp_path / "r.jsonl", rows, names)), batch_size=3)
    tokenizer, keys = dm.tokenizer, dm.train_sampler().batches(0)
    for key, batch in zip(keys, batches(dm), strict=True):
        texts = batch_texts(dm, key)
        assert batch["num_negatives"] == negatives
        wanted = [t for row in texts for t in row[2:]]  # row i's at i*N .. i*N+N-1
        assert batch["negatives"]["input_ids"].shape[0] == 3 * negatives
        for side, got in (("negatives", wanted), ("anchors", [r[0] for r in texts])):
            assert torch.equal(batch[side]["input_ids"], tokenize(tokenizer, got, 128)["input_ids"])


def test_prompts_and_the_max_length_of_each_side(tmp_path: Path):
    long = " ".join(["word"] * 40)
    rows = [(f"q{i} {long}", f"p{i} {long}", f"n{i} {long}") for i in range(6)]
    dm = module(str(write_rows(tmp_path / "r.csv", rows)), batch_size=3,
                prompts={"query": "query: ", "document": "passage: "},
                max_length={"query": 6, "document": 9})  # fmt: skip
    batch = next(iter(dm.train_dataloader()))
    texts = batch_texts(dm, dm.train_sampler().batches(0)[0])
    assert batch["anchors"]["input_ids"].shape == (3, 6)
    assert batch["positives"]["input_ids"].shape == batch["negatives"]["input_ids"].shape == (3, 9)
    for side, column, prompt, length in (("anchors", 0, "query: ", 6),
                                         ("positives", 1, "passage: ", 9),
                                         ("negatives", 2, "passage: ", 9)):  # fmt: skip
        wanted = tokenize(dm.tokenizer, [prompt + r[column] for r in texts], length)
        assert torch.equal(batch[side]["input_ids"], wanted["input_ids"])
        assert dm.tokenizer.decode(batch[side]["input_ids"][0]).startswith(f"[CLS] {prompt[:-2]} :")
    # One number sets both sides; prompts default to none.
    dm = module(str(tmp_path / "r.csv"), batch_size=3, max_length=5)
    assert dm.max_lengths == {"query": 5, "document": 5} and dm.prompts["query"] == ""
    assert next(iter(dm.train_dataloader()))["positives"]["input_ids"].shape == (3, 5)


def two_sets(tmp_path: Path) -> list:
    """Set `big` (30 rows, one negative) and set `small` (13 rows, none)."""
    big = write_rows(tmp_path / "big.jsonl", [(f"a{i}", f"b{i}", f"c{i}") for i in range(30)])
    small = [(f"s{i}", f"t{i}") for i in range(13)]
    write_rows(tmp_path / "small.parquet", small, ("x", "y"))
    return [str(big), {"path": str(tmp_path / "small.parquet"), "name": "small"}]


def sentence_transformers_sets(dm: PairsDataModule, sampling: str) -> list[int]:
    """The set of every batch that sentence-transformers' samplers give for `dm`'s sets."""
    from datasets import Dataset
    from sentence_transformers.base.sampler import (
        NoDuplicatesBatchSampler,
        ProportionalBatchSampler,
        RoundRobinBatchSampler,
    )
    from torch.utils.data import ConcatDataset

    sets = [Dataset.from_dict(dict(zip(s.column_names, s.columns))) for s in dm.training_sets()]
    samplers = [
        NoDuplicatesBatchSampler(s, dm.batch_size, drop_last=True, generator=torch.Generator())
        for s in sets
    ]
    cls = RoundRobinBatchSampler if sampling == "round_robin" else ProportionalBatchSampler
    sampler = cls(ConcatDataset(sets), samplers, generator=torch.Generator(), seed=0)
    return [int(batch[0] >= len(sets[0])) for batch in sampler]


@pytest.mark.parametrize("sampling", ["round_robin", "proportional"])
def test_each_batch_comes_from_one_set_in_sentence_transformers_order(tmp_path, sampling):
    dm = module(two_sets(tmp_path), sampling=sampling)
    assert [s.name for s in dm.training_sets()] == ["big", "small"]
    keys = dm.train_sampler().batches(0)
    theirs = sentence_transformers_sets(dm, sampling)
    ours = [index for index, _ in keys]
    assert sorted(ours) == sorted(theirs)  # the batches of each set
    if sampling == "round_robin":
        assert ours == theirs == [0, 1] * 3  # in turn, until the small set is used up
    else:
        assert ours.count(0) == 7 and ours.count(1) == 3  # every batch: 30 // 4, 13 // 4
        assert ours != sorted(ours)  # mixed, not one set after the other
    for (index, _), batch in zip(keys, batches(dm), strict=True):
        assert ("negatives" in batch) == (index == 0)
        assert batch["anchors"]["input_ids"].shape[0] == 4


def test_no_text_twice_in_a_batch_as_sentence_transformers(tmp_path: Path):
    # Anchors repeat every 5 rows; a negative is often another row's positive.
    rows = [(f"q{i % 5}", f"p{i}", f"p{(i + 1) % 24}") for i in range(24)]
    dm = module(str(write_rows(tmp_path / "r.jsonl", rows)), batch_size=4)
    keys = dm.train_sampler().batches(0)
    assert len(keys) == 6  # refilled by further passes, as sentence-transformers
    for key in keys:
        texts = [t for row in batch_texts(dm, key) for t in row]
        assert len(texts) == len(set(texts))
    # One pass takes rows exactly as sentence-transformers' `NoDuplicatesBatchSampler` does.
    from datasets import Dataset
    from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

    data = Dataset.from_dict({n: [r[j] for r in rows] for j, n in enumerate(NAMES)})
    theirs = list(NoDuplicatesBatchSampler(data, 4, drop_last=True,
                                           generator=torch.Generator(), seed=0))  # fmt: skip
    order = torch.randperm(24, generator=torch.Generator().manual_seed(0), dtype=torch.int32)
    ours = list(distinct_text_batches(list(zip(*rows)), order.tolist(), 4))
    assert 0 < len(ours) and theirs[: len(ours)] == ours


def test_a_resumed_epoch_continues_with_the_identical_batches(tmp_path: Path):
    train = two_sets(tmp_path)
    for epoch in (0, 1):
        whole = module(train, sampling="proportional")
        sampler = whole.train_sampler()
        sampler.set_epoch(epoch)
        loader = whole.train_dataloader()
        loader.sampler.set_epoch(epoch)
        uninterrupted = list(loader)
        assert len(uninterrupted) == len(sampler) == 10
        for k in (0, 3, 9):
            resumed = module(train, sampling="proportional")
            resumed.load_state_dict({"epoch": epoch, "batches": k})  # as a resumed fit does
            assert same_batches(batches(resumed), uninterrupted[k:]), (epoch, k)
    # The order depends on the epoch, and only once is the position used.
    dm = module(train)
    assert dm.train_sampler().batches(0) != dm.train_sampler().batches(1)
    dm.load_state_dict({"epoch": 0, "batches": 4})
    loader = dm.train_dataloader()
    assert len(list(loader)) == 6 and len(list(loader)) == 10


@pytest.mark.parametrize("sampling", ["round_robin", "proportional"])
def test_ddp_ranks_share_the_epoch_each_step_from_one_set(tmp_path, sampling):
    dm = module(two_sets(tmp_path), sampling=sampling)
    single = {(i, tuple(rows)) for i, rows in dm.train_sampler(1, 0).batches(0)}
    ranks = [dm.train_sampler(num_replicas=2, rank=r).batches(0) for r in (0, 1)]
    # Steps of 2 batches: round robin 3 // 2 of each set; proportional 7 // 2 + 3 // 2.
    assert len(ranks[0]) == len(ranks[1]) == (2 if sampling == "round_robin" else 4)
    keys = [{(i, tuple(rows)) for i, rows in batches} for batches in ranks]
    assert not keys[0] & keys[1] and keys[0] | keys[1] <= single
    # Every step, both processes encode rows of the same set (same number of negatives).
    assert [i for i, _ in ranks[0]] == [i for i, _ in ranks[1]]
    # A resumed epoch skips each process's own trained batches.
    dm.load_state_dict({"epoch": 0, "batches": 2})
    assert list(dm.train_sampler(num_replicas=2, rank=1)) == ranks[1][2:]


class Recorder(pl.LightningModule):
    """Records the anchors of every training batch."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch["anchors"]["input_ids"])
        return self.weight.sum() * 0

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class SaveAtStep(pl.Callback):
    """Writes a checkpoint when training step `step` has ended, as a run cut there would."""

    def __init__(self, step: int, path: Path) -> None:
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)


def fit(dm: PairsDataModule, root: Path, ckpt_path=None, **trainer_args) -> pl.Trainer:
    quiet = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False}
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, default_root_dir=root, **quiet, **trainer_args
    )
    trainer.fit(Recorder(), datamodule=dm, ckpt_path=ckpt_path)
    return trainer


def test_lightning_keeps_the_sampler_and_resumes_mid_epoch(tmp_path: Path):
    train = two_sets(tmp_path)
    expected = [b["anchors"]["input_ids"] for b in batches(module(train))]
    trainer = fit(module(train), tmp_path / "whole", max_epochs=2, enable_checkpointing=False)
    assert isinstance(trainer.train_dataloader.sampler, MultiSetBatchSampler)
    seen = trainer.lightning_module.seen
    assert len(seen) == 20 and all(torch.equal(a, b) for a, b in zip(seen, expected))
    assert not torch.equal(seen[10], expected[0])  # epoch 1 has its own order
    saver = SaveAtStep(3, tmp_path / "cut.ckpt")
    fit(
        module(train), tmp_path / "cut", max_epochs=1, enable_checkpointing=False, callbacks=[saver]
    )
    resumed = fit(module(train), tmp_path / "resumed", max_epochs=1, enable_checkpointing=False,
                  ckpt_path=tmp_path / "cut.ckpt")  # fmt: skip
    tail = resumed.lightning_module.seen
    assert len(tail) == 7 and all(torch.equal(a, b) for a, b in zip(tail, expected[3:]))
    # Under DDP, Lightning would replace a loader's sampler that is not a DistributedSampler.
    from lightning.pytorch.trainer.states import RunningStage

    ddp = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)
    loader = module(train).train_dataloader()
    prepared = ddp._data_connector._prepare_dataloader(loader, True, RunningStage.TRAINING)
    assert ddp._accelerator_connector.is_distributed and prepared is loader


def bad_case(tmp_path: Path, case: str) -> tuple[PairsDataModule, Path, str]:
    """A module whose `check()` must fail, the file it must name, and a pattern of the line."""
    rows = tmp_path / "rows.jsonl"
    if case == "missing":
        return module(str(tmp_path / "nope.jsonl")), tmp_path / "nope.jsonl", "no such file"
    if case == "empty":
        rows.write_text("")
        return module(str(rows)), rows, "the file is empty"
    if case == "header only":
        path = tmp_path / "rows.csv"
        path.write_text("a,b\n")
        return module(str(path)), path, "has no rows"
    if case == "unreadable":
        rows.write_text('{"a": "x", "b": "y"}\nnot json\n')
        return module(str(rows)), rows, "cannot read it as json"
    if case == "unknown format":
        path = tmp_path / "rows.txt"
        path.write_text("a b\n")
        return module(str(path)), path, "unknown format '.txt'"
    if case == "not a saved folder":
        (tmp_path / "folder").mkdir()
        return module(str(tmp_path / "folder")), tmp_path / "folder", "cannot read it as"
    if case == "misnamed column":
        write_rows(rows, ROWS)
        dm = module(str(rows), columns=["question", "answr"])
        return dm, rows, "no column 'answr'; columns found: question, answer, wrong"
    if case == "one column":
        write_rows(rows, [(f"q{i}",) for i in range(6)], ("only",))
        return module(str(rows)), rows, r"at least 2 columns .*; columns found: only"
    if case == "number cell":
        rows.write_text("".join(json.dumps({"a": f"q{i}", "b": i or "p"}) + "\n" for i in range(6)))
        return module(str(rows)), rows, "column 'b' row 2 holds int 1, not text"
    if case == "null cell":
        write_rows(rows, [*ROWS[:4], (ROWS[4][0], None, "x"), *ROWS[5:]])
        return module(str(rows)), rows, "column 'answer' row 5 holds NoneType None"
    if case == "empty cell":
        path = tmp_path / "rows.tsv"
        write_rows(path, [*ROWS[:6], (ROWS[6][0], ROWS[6][1], "  "), *ROWS[7:]])
        return module(str(path)), path, "column 'wrong' row 7 is empty"
    if case == "batch too big":
        write_rows(rows, ROWS)
        return module(str(rows), batch_size=13), rows, "batch_size=13 exceeds its 12 rows"
    if case == "batch of one, no negatives":
        write_rows(rows, [r[:2] for r in ROWS], NAMES[:2])
        return module(str(rows), batch_size=1), rows, "batch_size=1 .* nothing to contrast with"
    assert case == "second set bad"
    write_rows(rows, ROWS)
    other = tmp_path / "other.jsonl"
    other.write_text('{"a": "x"}\n')
    return module([str(rows), str(other)]), other, "columns found: a"


BAD = ["missing", "empty", "header only", "unreadable", "unknown format", "not a saved folder",
       "misnamed column", "one column", "number cell", "null cell", "empty cell", "batch too big",
       "batch of one, no negatives", "second set bad"]  # fmt: skip


@pytest.mark.parametrize("case", BAD)
def test_a_bad_file_is_one_line_from_check_before_any_model(tmp_path: Path, case: str):
    dm, path, pattern = bad_case(tmp_path, case)
    with pytest.raises(ConfigError, match=pattern) as caught:
        dm.check()
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(path)), message
    assert dm._tokenizer is None  # nothing of the model was loaded


def test_a_batch_of_one_is_fine_with_hard_negatives(tmp_path: Path):
    dm = module(str(write_rows(tmp_path / "r.jsonl", ROWS[:3])), batch_size=1)
    assert [b["negatives"]["input_ids"].shape[0] for b in batches(dm)] == [1, 1, 1]


@pytest.mark.parametrize(
    "kwargs, pattern",
    [({"train": []}, "data.train must be a path"),
     ({"train": [{"path": "x.jsonl", "cols": ["a"]}]}, r"data.train\[0\]: unknown keys \['cols'\]"),
     ({"train": [{"name": "x"}]}, r"data.train\[0\] needs a path"),
     ({"columns": "anchor"}, "data.columns must be a list"),
     ({"sampling": "random"}, "data.sampling='random' is not one of"),
     ({"prompts": {"queries": "q: "}}, r"data.prompts: unknown keys \['queries'\]"),
     ({"max_length": {"query": 0}}, "data.max_length.query must be a positive integer"),
     ({"val": [{"kind": "beir"}]}, r"data.val\[0\] needs a path"),
     ({"test": [{"path": "sts.csv", "kind": "nli"}]}, r"data.test\[0\].kind='nli' is not one of")],
)  # fmt: skip
def test_bad_options_are_one_line_at_construction(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        PairsDataModule(**{"train": "rows.jsonl", **kwargs})


def test_evaluation_sets_are_kept_for_the_evaluation_loaders():
    val = [{"path": "beir/scifact", "kind": "beir", "split": "test", "name": "scifact"}]
    dm = PairsDataModule(train="rows.jsonl", val=val, test=None)
    assert dm.eval_specs == {"val": val, "test": []}


def test_the_config_composes_and_checks(tmp_path: Path):
    path = write_rows(tmp_path / "rows.jsonl", ROWS)
    overrides = [
        "text/data=pairs",
        f"data.train=[{path},{{path:{path},name:again}}]",
        "data.batch_size=4",
        "data.prompts.query='query: '",
        "encoder.max_length=64",
        "seed=3",
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("text", overrides=overrides)
    dm = checked_datamodule(cfg.data)
    assert isinstance(dm, PairsDataModule) and dm.seed == 3 and dm.sampling == "proportional"
    assert dm.max_lengths == {"query": 64, "document": 64} and dm.prompts["query"] == "query: "
    assert [s.name for s in dm.training_sets()] == ["rows", "again"]
    assert dm.model_name_or_path is None and dm.eval_specs == {"val": [], "test": []}
