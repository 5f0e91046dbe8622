"""The study table (`mrl-aggregate --by`) from fabricated runs: means, standard deviations and
paired differences; its figure (`mrl-report --studies`); the prefix diagnostics."""

import csv
import importlib.util
import json
import math
import statistics
from pathlib import Path

import pytest

import mrl.cli.aggregate
from mrl.cli.report import main as report_main
from mrl.report.study_table import read_study_csvs

ROOT = Path(__file__).resolve().parents[1]


def _module():
    """The study table is `mrl-aggregate --by`: `main` of that command."""
    return mrl.cli.aggregate


def _run(root: Path, name: str, seed: int, top1: dict[int, float], config: dict, method="mrl"):
    job = root / name
    job.mkdir(parents=True)
    nesting = sorted(top1)
    (job / "results.json").write_text(json.dumps({
        "method": method, "nesting": nesting, "seed": seed, "config": config,
        "per_dim": [{"dim": d, "top1": v, "top5": 1.0} for d, v in top1.items()],
    }))  # fmt: skip


def test_means_over_seeds_and_group_names(tmp_path: Path):
    sgd = {"optimizer": {"_target_": "torch.optim.SGD", "lr": 0.1}}
    for seed, top1 in ((0, 0.80), (1, 0.84)):
        _run(tmp_path, f"ff2_{seed}", seed, {2: top1}, sgd, method="ff")
    table = _module()
    table.main([str(tmp_path), "--by", "optimizer,optimizer.lr,method", "--dims", "2,256",
                "--out", str(tmp_path / "out"), "--name", "recipe"])  # fmt: skip
    text = (tmp_path / "out" / "recipe.md").read_text()
    assert "| SGD | 0.1 | ff | 82.00 ± 2.83 |  | 2 |" in text  # std of 80, 84 is 2.83


def test_baseline_from_another_study_paired_by_seed(tmp_path: Path):
    """Runs without the ablated key stand for its default; differences pair seeds and carry
    a t interval computed here independently."""
    ablation, table1 = tmp_path / "ablation", tmp_path / "table1"
    base = {0: 0.850, 1: 0.860, 2: 0.870}
    smooth = {0: 0.860, 1: 0.880, 2: 0.875}
    for seed in base:
        _run(table1, f"mrl_{seed}", seed, {2: base[seed]}, {"loss": {"weights": None}})
        _run(table1, f"ff2_{seed}", seed, {2: 0.5}, {"loss": {}}, method="ff")  # filtered out
        config = {"loss": {"label_smoothing": 0.1}}
        _run(ablation, f"ls_{seed}", seed, {2: smooth[seed]}, config)
    table = _module()
    table.main([str(ablation), str(table1), "--by", "loss.label_smoothing", "--where",
                "method=mrl", "--baseline", "default", "--dims", "2", "--out",
                str(tmp_path / "out"), "--name", "ls"])  # fmt: skip
    text = (tmp_path / "out" / "ls.md").read_text()
    diffs = [100 * (smooth[s] - base[s]) for s in base]  # 1.0, 2.0, 0.5
    mean = statistics.fmean(diffs)
    half = 4.303 * statistics.stdev(diffs) / math.sqrt(3)  # t(0.975, df=2) = 4.303
    assert f"| 0.1 | {mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}] | 3 |" in text
    assert "| default | 86.00 ± 1.00 | 3 |" in text  # the FF runs were left out
    rows = (tmp_path / "out" / "ls.csv").read_text().splitlines()
    assert len(rows) == 1 + 6
    table.main([str(ablation), str(table1), "--by", "method", "--where", "seed=0|2", "--dims",
                "2", "--out", str(tmp_path / "out"), "--name", "two"])  # fmt: skip
    text = (tmp_path / "out" / "two.md").read_text()
    assert "| ff | 50.00 ± 0.00 | 2 |" in text and "| mrl |" in text  # seeds 0 and 2 only


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--where", "method"], "is not KEY=VALUE"),
        (["--dims", "2,x"], "not a comma-separated list"),
        (["--baseline", "0.3"], "no run has the baseline setting"),
        (["--where", "method=ff8"], "no finished run"),
    ],
)
def test_bad_input_is_one_line_and_status_2(tmp_path: Path, capsys, extra, message):
    _run(tmp_path / "s", "r0", 0, {2: 0.8}, {"loss": {"label_smoothing": 0.1}})
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        _module().main([str(tmp_path / "s"), "--by", "loss.label_smoothing", "--out", str(out),
                        "--name", "t", *extra])  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()


def test_probe_metric_at_dims_without_a_head(tmp_path: Path):
    """A model nested from 8 has no head at 2; its evaluation's probe at 2 is the value shown."""
    _run(tmp_path / "s", "r0", 0, {8: 0.90}, {"nesting": [8]})
    (tmp_path / "s" / "r0" / "eval").mkdir()
    (tmp_path / "s" / "r0" / "eval" / "metrics.csv").write_text(
        "dataset,split,method,dim,metric,value\n"
        "fmnist,query,mrl,2,probe_top1,0.4280\n"
        "fmnist,query,mrl,8,probe_top1,0.8870\n"
        "fmnist,query,mrl,8,head_top1,0.9000\n"
        "fmnist,query,svd,2,probe_top1,0.6\n"
    )
    out = tmp_path / "out"
    _module().main([str(tmp_path / "s"), "--by", "nesting", "--metric", "probe_top1", "--dims",
                    "2,8", "--out", str(out), "--name", "n"])  # fmt: skip
    text = (out / "n.md").read_text()
    assert "Test probe_top1" in text and "| 8 | 42.80 | 88.70 | 1 |" in text
    assert (out / "n.csv").read_text().splitlines()[0] == "nesting,dim,seed,probe_top1"


def test_prefix_diagnostics_against_a_hand_made_model(tmp_path: Path):
    """A tied head on hand-made features: dim-2 logits use the first 2 columns; a zero prefix
    gets the bias alone; the statistics match a direct computation."""
    import numpy as np
    import torch

    spec = importlib.util.spec_from_file_location(
        "prefix_diagnostics", ROOT / "experiments" / "studies" / "prefix_diagnostics.py"
    )
    diag = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(diag)

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "embeddings" / "query").mkdir(parents=True)
    config = {"optimizer": {"_target_": "torch.optim.AdamW", "lr": 0.003}, "head": {"tied": True}}
    results = {"method": "mrl_e", "nesting": [2, 4], "seed": 0, "config": config, "per_dim": []}
    (run / "results.json").write_text(json.dumps(results))
    weight = torch.tensor([[1.0, 0.0, 5.0, 0.0], [0.0, 1.0, 0.0, 5.0], [0.0, 0.0, 0.0, 0.0]])
    bias = torch.tensor([0.0, 0.0, 0.5])
    torch.save({"state_dict": {"head.linear.weight": weight, "head.linear.bias": bias}},
               run / "checkpoints" / "last.ckpt")  # fmt: skip
    features = np.array([[2, 0, 0, 1], [0, 2, 1, 0], [0, 0, 1, 0], [0, 0, 0, 1]], np.float32)
    np.save(run / "embeddings" / "query" / "features.npy", features)
    np.save(run / "embeddings" / "query" / "labels.npy", np.array([0, 1, 0, 1]))
    diag.main([str(run), "--dims", "2,4", "--out", str(tmp_path / "d.csv")])
    rows = {int(r["dim"]): r for r in csv.DictReader((tmp_path / "d.csv").open())}
    # dim 2: rows 0, 1 correct; rows 2, 3 have a zero prefix and get class 2 from the bias.
    assert float(rows[2]["head_top1"]) == 0.5 and float(rows[2]["zero_prefix"]) == 0.5
    assert float(rows[2]["top_class_share"]) == 0.5
    signal = features[:, :2].astype(np.float64) @ weight[:, :2].double().numpy().T
    expected = bias.double().numpy().std() / signal.std(axis=1).mean()
    assert float(rows[2]["bias_to_signal"]) == pytest.approx(expected)
    # dim 4: the last two columns decide: rows 0 and 3 -> class 1, rows 1 and 2 -> class 0,
    # so rows 2 and 3 are right now and rows 0 and 1 wrong.
    assert float(rows[4]["head_top1"]) == 0.5 and float(rows[4]["zero_prefix"]) == 0.0
    assert float(rows[4]["weight_norm"]) == pytest.approx((1 + 1 + 5 + 5) / 4)


def test_ablation_figure_from_a_study_table(tmp_path: Path, capsys):
    table = tmp_path / "ls.csv"
    table.write_text("loss.label_smoothing,dim,seed,top1\n0,2,0,88.0\n0,2,1,88.2\n0.1,2,0,86.5\n")
    (name, keys, metric, lines) = read_study_csvs([table])[0]
    assert (name, keys, metric) == ("ls", "loss.label_smoothing", "top1")
    assert lines["0"][2] == [88.0, 88.2] and lines["0.1"][2] == [86.5]
    report_main(["--studies", str(table), "--out", str(tmp_path), "--name", "f"])
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SystemExit) as info:
        report_main(["--studies", str(tmp_path / "bad.csv"), "--out", str(tmp_path), "--name", "g"])
    assert info.value.code == 2 and "not a study_table CSV" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()


def test_study_table_and_figure_default_to_the_output_root(tmp_path: Path, monkeypatch):
    """`--by` without --out and --name writes `$MRL_OUTPUT_ROOT/studies/<keys>.{csv,md}`, and
    `mrl-report --studies` draws it into the same folder."""
    monkeypatch.setenv("MRL_OUTPUT_ROOT", str(tmp_path / "outputs"))
    for seed, top1 in ((0, 0.80), (1, 0.84)):
        _run(tmp_path / "s", f"r{seed}", seed, {2: top1}, {"loss": {"label_smoothing": 0.1}})
    _module().main([str(tmp_path / "s"), "--by", "loss.label_smoothing", "--dims", "2"])
    studies = tmp_path / "outputs" / "studies"
    assert "| 0.1 | 82.00 ± 2.83 | 2 |" in (studies / "loss.label_smoothing.md").read_text()
    report_main(["--studies", str(studies / "loss.label_smoothing.csv")])
    assert (studies / "studies.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["mrl-aggregate", "a", "b"], "several only with --by"),
        (["mrl-report", "a", "b"], "several only with --claims or --studies"),
        (["mrl-report", "--claims", "--studies", "a"], "not allowed with argument"),
    ],
)
def test_several_folders_need_their_mode(tmp_path: Path, capsys, argv, message):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    main = mrl.cli.aggregate.main if argv[0] == "mrl-aggregate" else report_main
    args = [str(tmp_path / a) if a in ("a", "b") else a for a in argv[1:]]
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"{argv[0]}: error: ") and message in err[-1]
