"""`mrl-report --claims` on fabricated studies with known values: the paired intervals, the
verdicts, and what is reported as not measured."""

import csv
import json
import math
from pathlib import Path

import pytest

from mrl.report.claims import paired_interval, t95
from mrl.report.cli import main

MRL = {0: {2: 0.80, 8: 0.90}, 1: {2: 0.82, 8: 0.91}, 2: {2: 0.81, 8: 0.905}}
FF = {0: {2: 0.78}, 1: {2: 0.79}, 2: {2: 0.80}}  # FF-2, per seed
FF8 = {0: {8: 0.905}, 1: {8: 0.905}, 2: {8: 0.905}}


def write_run(job: Path, method: str, head: dict, seed: int, top1: dict[int, float]) -> None:
    job.mkdir(parents=True)
    results = {
        "experiment": "toy",
        "method": method,
        "nesting": list(top1),
        "per_dim": [{"dim": d, "top1": v, "top5": 1.0} for d, v in top1.items()],
        "seed": seed,
        "config": {"name": "toy", "seed": seed, "head": head},
    }
    (job / "results.json").write_text(json.dumps(results))


@pytest.fixture
def study(tmp_path: Path) -> Path:
    root = tmp_path / "study"
    for seed in range(3):
        write_run(root / f"mrl-{seed}", "mrl", {"nesting": [2, 8]}, seed, MRL[seed])
        write_run(root / f"ff2-{seed}", "ff", {"nesting": [2]}, seed, FF[seed])
        write_run(root / f"ff8-{seed}", "ff", {"nesting": [8]}, seed, FF8[seed])
    return root


def test_paired_interval_is_the_t_interval():
    diffs = [2.0, 3.0, 1.0]
    got = paired_interval(diffs)
    half = 4.303 * 1.0 / math.sqrt(3)  # sample std of 2,3,1 is 1
    assert got.mean == pytest.approx(2.0)
    assert (got.low, got.high) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert paired_interval([1.5]).low is None and t95(100) == 1.96 and t95(12) == 2.228


def test_claims_table_from_a_study(study: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    main(["--claims", str(study), "--out", str(out), "--text", str(tmp_path / "absent.csv"),
          "--reference", str(tmp_path)])  # fmt: skip
    rows = {r["claim"]: r for r in csv.DictReader((out / "claims.csv").open())}
    every = next(r for c, r in rows.items() if c.startswith("MRL is as accurate as FF"))
    # MRL - FF at 2: +2, +3, +1 points; at 8: -0.5, +0.5, 0.0: both at least -1 -> holds
    # only where the interval says so: at 2 low = 2 - 2.48 = -0.48 >= -1; at 8 the interval is
    # 0 +- 4.303 * 0.5 / sqrt(3) = +-1.24, below -1: inconclusive.
    assert every["verdict"] == "inconclusive"
    assert "2: +2.00 [-0.48, +4.48] (3 seeds)" in every["measured"]
    ahead = next(r for c, r in rows.items() if c.startswith("MRL is ahead of FF"))
    assert ahead["verdict"] == "inconclusive"  # the interval at 2 reaches below 0
    for claim, row in rows.items():
        if "SVD" in claim or "robust" in claim or "text" in claim or "MRL-E" in claim:
            assert row["verdict"] == "not measured", claim
    text = (out / "claims.md").read_text()
    assert text.count("\n| ") == len(rows) + 1  # header + one row per claim
    assert "inconclusive" in capsys.readouterr().out


def test_claims_refuse_a_missing_folder(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--claims", str(tmp_path / "absent"), "--out", str(tmp_path)])
    assert info.value.code == 2
    assert "is not a directory" in capsys.readouterr().err
