"""`mrl-report --claims` on fabricated studies with known values: the paired intervals, the
verdicts, and what is reported as not measured."""

import csv
import json
import math
from pathlib import Path

import pytest

from mrl.cli.report import main
from mrl.report.claims import paired_interval, t95

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


def _eval_run(job: Path, method: str, seed: int, clean: dict, noisy: dict, summary=None):
    """A run with `eval/metrics.csv`: head top-1 on the clean and a severity-1 noisy test set."""
    write_run(job, method, {"nesting": list(clean)}, seed, clean)
    (job / "eval").mkdir()
    lines = ["dataset,split,method,dim,metric,value"]
    for split, values in (("query", clean), ("query-gaussian_noise-1", noisy)):
        lines += [f"toy,{split},{method},{d},head_top1,{v}" for d, v in values.items()]
    lines.append("toy,query,svd,2,probe_top1,0.5")  # a baseline row: not the model's own head
    (job / "eval" / "metrics.csv").write_text("\n".join(lines) + "\n")
    if summary is not None:
        (job / "eval" / "summary.json").write_text(json.dumps({"method": method, **summary}))


def test_robustness_and_adaptive_claims(tmp_path: Path):
    """Relative drops per severity, FF - MRL paired by seed; the cascade's expected dim against
    the smallest single head as accurate."""
    root = tmp_path / "study"
    mrl_noisy = {0: {2: 0.72, 8: 0.855}, 1: {2: 0.70, 8: 0.85}, 2: {2: 0.73, 8: 0.86}}
    cascade = {"adaptive_classification": {
        "dim_reduction": 3.0, "smallest_expected_dim": 8 / 3, "largest_dim_accuracy": 0.90,
        "per_head_accuracy": {"2": 0.80, "8": 0.90}}}  # fmt: skip
    for seed in range(3):
        _eval_run(root / f"mrl-{seed}", "mrl", seed, {2: 0.80, 8: 0.90}, mrl_noisy[seed], cascade)
        _eval_run(root / f"ff2-{seed}", "ff", seed, {2: 0.78}, {2: 0.702})
        _eval_run(root / f"ff8-{seed}", "ff", seed, {8: 0.905}, {8: 0.86})
    out = tmp_path / "out"
    main(["--claims", str(root), "--out", str(out), "--text", str(tmp_path / "absent.csv"),
          "--reference", str(tmp_path)])  # fmt: skip
    rows = {r["claim"]: r for r in csv.DictReader((out / "claims.csv").open())}
    robust = rows["MRL is as robust as the full representation"]
    ff_drop = (100 * (1 - 0.702 / 0.78) + 100 * (1 - 0.86 / 0.905)) / 2
    diffs = [ff_drop - (100 * (1 - n[2] / 0.80) + 100 * (1 - n[8] / 0.90)) / 2
             for n in mrl_noisy.values()]  # fmt: skip
    expected = paired_interval(diffs)
    assert f"FF - MRL {expected.text()}" in robust["measured"]
    # The interval reaches below -1 pt (MRL's drop may be more than a point larger).
    assert expected.low < -1 < expected.high and robust["verdict"] == "inconclusive"
    table = (out / "robustness.md").read_text()
    assert (
        f"| ff | 1 | {100 * (1 - 0.702 / 0.78):.2f} | {100 * (1 - 0.86 / 0.905):.2f} | 3 |" in table
    )
    assert (
        len((out / "robustness.csv").read_text().splitlines()) == 1 + 6 + 6
    )  # (MRL at 2 and 8, FF-2, FF-8) x 3 seeds
    fixed = rows["Adaptive classification is smaller than the smallest single head as accurate"]
    assert fixed["verdict"] == "holds"  # expected dim 2.67 against the fixed dim 8
    assert "expected dim 2.7 against a fixed dim of 8.0" in fixed["measured"]


def test_claims_carry_the_notes_given(study: Path, tmp_path: Path, capsys):
    notes = tmp_path / "notes.yaml"
    notes.write_text("MRL is ahead of FF: >\n  decreasing loss\n  weights close the gap\n")
    out = tmp_path / "out"
    main(["--claims", str(study), "--out", str(out), "--notes", str(notes),
          "--text", str(tmp_path / "absent.csv"), "--reference", str(tmp_path)])  # fmt: skip
    rows = {r["claim"]: r for r in csv.DictReader((out / "claims.csv").open())}
    assert rows["MRL is ahead of FF at the smallest dims"]["note"] == (
        "decreasing loss weights close the gap"
    )
    assert all(r["note"] == "" for c, r in rows.items() if not c.startswith("MRL is ahead"))
    notes.write_text("- a list, not a mapping\n")
    with pytest.raises(SystemExit) as info:
        main(["--claims", str(study), "--out", str(tmp_path / "out2"), "--notes", str(notes)])
    assert info.value.code == 2 and "expected a mapping" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


def test_adaptive_retrieval_claim_reads_benchmark_tables_and_says_where_it_is_faster(tmp_path):
    """A summary without adaptive retrieval rows takes them from the adaptive_retrieval.csv the
    benchmark writes beside it; measured speed is judged per database."""
    small, large = tmp_path / "study" / "small", tmp_path / "study" / "large"
    columns = "method,first_stage,dims,shortlists,map@10,mflops_per_query,speedup_vs_exact"
    tables = {
        small: ["exact,exact,256,10,0.90,25.6,1.0", "adaptive,exact,8>256,200>10,0.895,0.9,0.8"],
        large: ["exact,exact,2048,10,0.88,2048,1.0", "adaptive,exact,16>2048,200>10,0.875,16.4,8",
                "adaptive,hnsw,64>2048,200>10,0.879,64.4,31"],
    }  # fmt: skip
    for path, lines in tables.items():
        (path / "eval").mkdir(parents=True)
        size = 55_000 if path is small else 1_045_000
        (path / "eval" / "summary.json").write_text(
            json.dumps({"method": "mrl", "database_size": size})
        )
        (path / "eval" / "adaptive_retrieval.csv").write_text("\n".join([columns, *lines]) + "\n")
    out = tmp_path / "out"
    main(["--claims", str(tmp_path / "study"), "--out", str(out), "--text",
          str(tmp_path / "absent.csv"), "--reference", str(tmp_path)])  # fmt: skip
    rows = {r["claim"]: r for r in csv.DictReader((out / "claims.csv").open())}
    claim = rows["Adaptive retrieval keeps mAP@10 at a fraction of the cost"]
    assert claim["verdict"] == (
        "holds for FLOPs; faster in wall-clock time only on the larger database (N_db 1,045,000)"
    )
    # The cheapest by FLOPs (16>2048, 124.9x fewer) and, beside it, the fastest measured.
    assert (
        "adaptive 16>2048: mAP@10 87.50 vs 88.00, 124.9x fewer FLOPs, 8.0x measured"
        in (claim["measured"])
    )
    assert "fastest measured: adaptive 64>2048 on hnsw 31.0x at mAP@10 87.90" in claim["measured"]
    assert "0.8x measured (N_db 55,000)" in claim["measured"]


def test_claims_default_to_the_output_root(study: Path, tmp_path: Path, monkeypatch, capsys):
    """Without --out and --text the claims go under $MRL_OUTPUT_ROOT, and the text benchmark is
    read from there (never from experiments/results)."""
    root = tmp_path / "outputs"
    monkeypatch.setenv("MRL_OUTPUT_ROOT", str(root))
    (root / "text").mkdir(parents=True)
    (root / "text" / "reverse_dictionary.csv").write_text(
        "dataset,split,method,dim,metric,value\n"
        "wn,query,mrl,32,map@10,0.40\nwn,query,zero_shot,32,map@10,0.30\n"
    )
    main(["--claims", str(study), "--reference", str(tmp_path)])
    rows = {r["claim"]: r for r in csv.DictReader((root / "claims" / "claims.csv").open())}
    text = next(r for c, r in rows.items() if c.startswith("Matryoshka text fine-tuning"))
    assert text["measured"].startswith("32: +10.00 pt mAP")
    assert f"wrote {root / 'claims' / 'claims.md'}" in capsys.readouterr().out
