"""Every bad input of `mrl-train` and `mrl-eval` ends with one line naming the value, exit status
2, and nothing expensive done first (no fit, no encoding)."""

import gzip
import shutil
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from conftest import FAST, compose_eval, compose_train

import mrl.core.errors
import mrl.eval.inputs
from mrl.cli.evaluate import evaluate
from mrl.cli.train import train
from mrl.commands import condense_hydra_error, run_command
from mrl.eval.checks import faiss_gpus

TINY = [*FAST, "trainer.max_steps=3", "trainer.max_epochs=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny finished run; its `last.ckpt`."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    train(compose_train(run_dir, *TINY))
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture
def no_heavy_work(monkeypatch):
    """Fail the test if training or encoding starts."""

    def refuse(*args, **kwargs):
        raise AssertionError("expensive work started before the bad input was reported")

    monkeypatch.setattr(pl.Trainer, "fit", refuse)
    monkeypatch.setattr(mrl.eval.inputs, "encode_to_disk", refuse)


def one_line_exit_2(fn, capsys, prog: str, *expected: str) -> str:
    with pytest.raises(SystemExit) as info:
        run_command(prog, fn)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no message"
    line = err[-1]
    assert line.startswith(f"{prog}: error: "), err
    for text in expected:
        assert text in line, line
    return line


def _files(tmp_path: Path) -> dict[str, Path]:
    """Four small, valid Fashion-MNIST-shaped IDX files (gzip)."""

    def idx(path: Path, array: np.ndarray, code: int) -> None:
        header = bytes([0, 0, code, array.ndim]) + b"".join(
            int(d).to_bytes(4, "big") for d in array.shape
        )
        path.write_bytes(gzip.compress(header + array.tobytes()))

    rng = np.random.default_rng(0)
    files = {}
    for split, n in (("train", 64), ("t10k", 20)):
        images = tmp_path / f"{split}-images-idx3-ubyte.gz"
        labels = tmp_path / f"{split}-labels-idx1-ubyte.gz"
        idx(images, rng.integers(0, 255, (n, 28, 28), dtype=np.uint8), 0x08)
        idx(labels, rng.integers(0, 10, n, dtype=np.uint8), 0x08)
        files[f"{split}_images"], files[f"{split}_labels"] = images, labels
    return files


def _truncate(path: Path) -> None:
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))


def _wrong_length(path: Path) -> None:
    raw = gzip.decompress(path.read_bytes())
    header = bytes([0, 0, 8, 1]) + (19).to_bytes(4, "big")
    path.write_bytes(gzip.compress(header + raw[8:27]))


def _not_gzip(path: Path) -> None:
    path.write_bytes(b"\x1f\x8b" + b"garbage" * 10)


@pytest.mark.parametrize(
    ("damage", "stem", "expected"),
    [
        (_truncate, "train_images", "truncated or padded IDX file"),
        (_wrong_length, "t10k_labels", "do not belong together"),
        (_not_gzip, "t10k_images", "corrupt or truncated gzip"),
    ],
)
def test_damaged_data_files(tmp_path, capsys, no_heavy_work, damage, stem, expected):
    files = _files(tmp_path)
    damage(files[stem])
    cfg = compose_train(tmp_path / "run", *TINY, "data=fashion_mnist", f"data.root={tmp_path}",
                        "data.val_size=8")  # fmt: skip
    one_line_exit_2(lambda: train(cfg), capsys, "mrl-train", str(files[stem]), expected)


BAD_TRAIN = {
    "nesting=abc": ["nesting='abc' is not a list"],
    "nesting=8": ["nesting=8 is not a list"],
    "nesting=[4,2]": ["strictly increasing"],
    "nesting=[]": ["nesting is empty"],
    "optimizer.lr=-1": ["optimizer.lr=-1"],
    "optimizer.lr=nan": ["optimizer.lr=nan"],
    "optimizer.lr=0": ["optimizer.lr=0"],
    "seed=-1": ["seed=-1"],
    "run_id=a/b": ["run_id='a/b' is not a plain name"],
    "method=ff_16": ["method=ff_16 is not a method: use mrl, mrl_e, ff or ffM"],
    "method=ff0": ["method's dim must be a positive integer, got 0"],
    "nesting=[2,4,8,16,64]": ["dim 64 exceeds the representation size 32"],
    "trainer.max_steps=0": ["trainer.max_steps=0 must be a positive integer (-1 for no limit)"],
    "trainer.max_epochs=0": ["trainer.max_epochs=0 must be a positive integer"],
    "trainer.max_epochs=-3": ["trainer.max_epochs=-3"],
    # the evaluation after training is checked before training, not after it
    "eval_after=['retrieval.backend=annoy']": ["eval_after: retrieval.backend='annoy'"],
    "eval_after=['retrieval.ks=[0]']": ["eval_after: retrieval.ks entry 0"],
    "eval_after=['nope=1']": ["eval_after: Could not override 'nope'"],
    "eval_after=['data=nope']": ["eval_after: ", "data/nope"],
    "eval_after=3": ["eval_after=3 must be a list of mrl-eval overrides"],
}


@pytest.mark.parametrize("override", list(BAD_TRAIN))
def test_bad_training_options(tmp_path, capsys, no_heavy_work, override):
    cfg = compose_train(tmp_path / "run", *TINY, override)
    one_line_exit_2(lambda: train(cfg), capsys, "mrl-train", *BAD_TRAIN[override])
    assert not (tmp_path / "run" / "checkpoints").exists()


def _text_file(tmp_path: Path, _: Path) -> Path:
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    return tmp_path / "notes.ckpt"


def _empty_file(tmp_path: Path, _: Path) -> Path:
    (tmp_path / "empty.ckpt").write_bytes(b"")
    return tmp_path / "empty.ckpt"


def _truncated_ckpt(tmp_path: Path, good: Path) -> Path:
    (tmp_path / "cut.ckpt").write_bytes(good.read_bytes()[:5000])
    return tmp_path / "cut.ckpt"


def _non_finite_ckpt(tmp_path: Path, good: Path) -> Path:
    ckpt = torch.load(good, weights_only=False)
    name = next(k for k in ckpt["state_dict"] if k.endswith("running_var"))
    ckpt["state_dict"][name].fill_(float("inf"))
    torch.save(ckpt, tmp_path / "inf.ckpt")
    return tmp_path / "inf.ckpt"


BAD_CKPT = {
    "text file": (_text_file, [], "not a readable checkpoint"),
    "empty file": (_empty_file, [], "is an empty file"),
    "truncated": (_truncated_ckpt, [], "not a readable checkpoint"),
    "missing": (lambda tmp, good: tmp / "absent.ckpt", [], "does not exist"),
    "non-finite": (_non_finite_ckpt, [], "non-finite tensor"),
    "another nesting": (lambda tmp, good: good, ["nesting=[2,4,8,16]"], "does not fit the model"),
    "another head": (lambda tmp, good: good, ["method=mrl_e"], "does not fit the model"),
    "another class count": (lambda tmp, good: good, ["data.num_classes=7"], "does not fit"),
    "another channel count": (lambda tmp, good: good, ["data.in_channels=3"], "does not fit"),
}


@pytest.mark.parametrize("case", list(BAD_CKPT))
def test_bad_checkpoints_to_resume_from(tmp_path, capsys, trained, no_heavy_work, case):
    make, overrides, expected = BAD_CKPT[case]
    path = make(tmp_path, trained)
    cfg = compose_train(tmp_path / "run", *TINY, f"ckpt_path={path}", *overrides)
    one_line_exit_2(lambda: train(cfg), capsys, "mrl-train", expected)


BAD_EVAL = {
    "retrieval.ks=[0]": "retrieval.ks entry 0",
    "retrieval.knn_ks=[0]": "retrieval.knn_ks entry 0",
    "retrieval.backend=annoy": "retrieval.backend='annoy'",
    "adaptive_retrieval.funnel_dims=[4,8]": "funnel_dims is set without the other",
    "adaptive_retrieval.shortlist_k=5": "shortlist_k=5 is below the largest retrieval k 100",
    "dims=[2,64]": "exceeds the representation size 32",
    "dims=[8,4]": "dims must be strictly increasing",
    "dims=[]": "dims is empty",
    "device=tpu": "device='tpu' is not",
    "adaptive_retrieval.shortlist_k=0": "adaptive_retrieval.shortlist_k=0 must be a positive",
    "probe.max_iter=0": "probe.max_iter=0 must be a positive integer",
    "heads_batch_size=0": "heads_batch_size=0 must be a positive integer",
    "robustness.ks=[0]": "robustness.ks entry 0",
    "baseline_retrieval.knn_ks=[]": "baseline_retrieval.knn_ks is empty",
    "adaptive_classification.tolerance=-0.1": "adaptive_classification.tolerance=-0.1 must be",
    "retrieval.knn_ks=[1,1000]": "the database has only 512 items",
    "dtype=float64": "dtype='float64'",
    "adaptive_retrieval.first_stage=annoy": "adaptive_retrieval.first_stage='annoy'",
    "retrieval.tie_aware_max_dim=-1": "retrieval.tie_aware_max_dim=-1 must be an integer >= 0",
    "retrieval.index.nprobe=0": "retrieval.index.nprobe=0 must be a positive",
    "retrieval.use_gpu=maybe": "retrieval.use_gpu='maybe' must be auto, true or false",
    "database.augmented_copies=-3": "database.augmented_copies=-3 must be a positive",
    "database.shift=-1": "database.shift=-1 must be an integer >= 0",
}
if not torch.cuda.is_available():
    BAD_EVAL["device=cuda:0"] = "no CUDA GPU"
if faiss_gpus() == 0:
    BAD_EVAL["retrieval.use_gpu=true"] = "retrieval.use_gpu=true but FAISS sees no GPU"
FUNNELS = {
    "different lengths": (["adaptive_retrieval.funnel_dims=[4,8,32]",
                           "adaptive_retrieval.funnel_shortlists=[200,100]"], "differ in length"),
    "not increasing": (["adaptive_retrieval.funnel_dims=[8,4]",
                        "adaptive_retrieval.funnel_shortlists=[200,100]"], "strictly increasing"),
    "growing shortlists": (["adaptive_retrieval.funnel_dims=[4,8]",
                            "adaptive_retrieval.funnel_shortlists=[100,200]"], "must not increase"),
}  # fmt: skip


@pytest.mark.parametrize("override", list(BAD_EVAL))
def test_bad_eval_options(tmp_path, capsys, trained, no_heavy_work, override):
    cfg = compose_eval(f"ckpt_path={trained}", f"out_dir={tmp_path}", override)
    one_line_exit_2(lambda: evaluate(cfg), capsys, "mrl-eval", BAD_EVAL[override])


@pytest.mark.parametrize("case", list(FUNNELS))
def test_bad_funnels(tmp_path, capsys, trained, no_heavy_work, case):
    overrides, expected = FUNNELS[case]
    cfg = compose_eval(f"ckpt_path={trained}", f"out_dir={tmp_path}", *overrides)
    one_line_exit_2(lambda: evaluate(cfg), capsys, "mrl-eval", expected)


@pytest.mark.parametrize("case", ["text file", "empty file", "truncated", "non-finite"])
def test_bad_checkpoints_to_evaluate(tmp_path, capsys, trained, no_heavy_work, case):
    path = BAD_CKPT[case][0](tmp_path, trained)
    cfg = compose_eval(f"ckpt_path={path}", f"out_dir={tmp_path}")
    one_line_exit_2(lambda: evaluate(cfg), capsys, "mrl-eval", str(path))


def test_eval_into_an_unwritable_folder(trained, capsys, no_heavy_work):
    cfg = compose_eval(f"ckpt_path={trained}", "out_dir=/proc/mrl-eval")
    one_line_exit_2(lambda: evaluate(cfg), capsys, "mrl-eval", "cannot write", "out_dir=<dir>")


def test_eval_without_a_checkpoint(capsys, no_heavy_work):
    cfg = compose_eval()
    one_line_exit_2(lambda: evaluate(cfg), capsys, "mrl-eval", "pass ckpt_path=")


def test_collapsed_embeddings_are_refused(tmp_path, capsys, trained):
    ckpt = torch.load(trained, weights_only=False)
    for name, value in ckpt["state_dict"].items():
        if name.startswith("encoder.") and value.is_floating_point() and "running" not in name:
            value.zero_()
    torch.save(ckpt, tmp_path / "dead.ckpt")
    cfg = compose_eval(f"ckpt_path={tmp_path / 'dead.ckpt'}", f"out_dir={tmp_path / 'out'}",
                       "robustness.corruptions=[]")  # fmt: skip
    one_line_exit_2(lambda: evaluate(cfg), capsys, "mrl-eval", "all identical")
    assert not (tmp_path / "out" / "eval" / "metrics.csv").exists()


def test_debug_switch_shows_the_traceback(tmp_path, monkeypatch, no_heavy_work):
    monkeypatch.setenv("MRL_DEBUG", "1")
    cfg = compose_train(tmp_path / "run", *TINY, "optimizer.lr=-1")
    with pytest.raises(mrl.core.errors.ConfigError, match="optimizer.lr=-1"):
        run_command("mrl-train", lambda: train(cfg))


def test_partial_embeddings_of_a_killed_eval_are_removed(tmp_path, trained):
    out = tmp_path / "out"
    partial = out / "embeddings" / ".database.partial"
    partial.mkdir(parents=True)
    (partial / "features.npy").write_bytes(b"half")
    cfg = compose_eval(f"ckpt_path={trained}", f"out_dir={out}", "robustness.corruptions=[]",
                       "probe.enabled=false", "adaptive_classification.enabled=false",
                       "adaptive_retrieval.enabled=false")  # fmt: skip
    evaluate(cfg)
    assert not partial.exists() and (out / "embeddings" / "database" / "features.npy").is_file()
    shutil.rmtree(out)


def test_eval_of_last_ckpt_reproduces_the_runs_own_table(tmp_path, trained):
    """`max_steps` ended mid-epoch: `last.ckpt` still holds the weights `results.json` reports."""
    import json

    off = ["probe", "retrieval", "adaptive_classification", "adaptive_retrieval"]
    cfg = compose_eval(f"ckpt_path={trained}", f"out_dir={tmp_path}", "robustness.corruptions=[]",
                       *(f"{name}.enabled=false" for name in off))  # fmt: skip
    summary = evaluate(cfg)
    results = json.loads((trained.parents[1] / "results.json").read_text())
    assert torch.load(trained, weights_only=False)["global_step"] == 3
    for row in results["per_dim"]:
        assert summary["per_dim"][str(row["dim"])]["head_top1"] == pytest.approx(
            row["top1"], abs=1e-6
        )


def test_eval_on_a_full_disk_is_one_line_and_leaves_no_partial_file(small_disk, trained, capsys):
    cfg = compose_eval(f"ckpt_path={trained}", f"out_dir={small_disk}")  # corrupted sets too
    with pytest.raises(SystemExit) as info:
        run_command("mrl-eval", lambda: evaluate(cfg))
    assert info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mrl-eval: error: ") and "No space left" in err[-1], err
    assert not list(small_disk.glob("**/*.partial"))


def test_hydra_reports_are_condensed_to_one_line():
    report = (
        "In 'train': Could not find 'data/imagenet22k'\n\n"
        "Available options in 'data':\n\tcifar10\n\tmnist\n"
        "Config search path:\n\tprovider=hydra, path=pkg://hydra.conf\n\n"
        "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.\n"
    )
    assert condense_hydra_error(report) == (
        "In 'train': Could not find 'data/imagenet22k'; Available options in 'data': cifar10, mnist"
    )
    override = "Could not override 'data.x'.\nTo append to your config use +data.x=0\n"
    assert condense_hydra_error(override) == (
        "Could not override 'data.x'; To append to your config use +data.x=0"
    )


def test_the_default_wandb_logger_without_wandb_is_one_line(tmp_path, capsys, monkeypatch,
                                                             no_heavy_work):  # fmt: skip
    import mrl.extras

    real = mrl.extras._installed
    monkeypatch.setattr(mrl.extras, "_installed", lambda m: m != "wandb" and real(m))
    cfg = compose_train(tmp_path / "run", *[o for o in TINY if not o.startswith("logger=")])
    line = one_line_exit_2(lambda: train(cfg), capsys, "mrl-train", "pip install 'mrl[tracking]'",
                           "logger=csv")  # fmt: skip
    assert "logger.wandb needs the 'tracking' extra (missing: wandb)" in line
    assert not (tmp_path / "run" / "results.json").exists()
    train_csv = compose_train(tmp_path / "csv", *TINY)  # logger=csv needs no wandb
    from mrl.training.checks import check_train_config

    check_train_config(train_csv)
