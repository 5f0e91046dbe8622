"""`experiments/bench/gpu_check.py`: its CPU dry run end to end (the same tests and timing code
the GPU run uses), its refusal without a GPU, and a broken section reported as a failure."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "bench" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("_gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_dry_run_runs_every_check_and_timing_on_the_cpu(tmp_path: Path):
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert results["dry_run"] is True and results["environment"]["device"] == "cpu"
    statuses = {c["name"]: c["status"] for c in results["checks"]}
    # Every gpu-marked test ran (none skipped on the CPU) and passed.
    tests = {name: s for name, s in statuses.items() if name.startswith("test_")}
    assert len(tests) >= 15 and set(tests.values()) == {"passed"}, tests
    assert any("compile" in name for name in tests) and any("16" in name for name in tests)
    sections = {t["section"] for t in results["timings"]}
    assert sections == {"training", "input pipeline", "fused heads", "retrieval"}
    settings = {t["setting"] for t in results["timings"]}
    for head in ("mrl", "mrl_e", "single head"):
        assert f"resnet18 {head}" in settings and f"resnet18 {head} compiled" in settings
    for row in results["timings"]:
        assert row.get("ms", 1) > 0 and row.get("images_per_s", 1) > 0, row
    assert "| training | resnet18 mrl |" in (tmp_path / "gpu_check.md").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_without_a_gpu_it_refuses_in_one_line(tmp_path: Path, capsys):
    assert _load().main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no CUDA GPU" in err and "--dry-run" in err
    assert not any(tmp_path.iterdir())


def test_a_broken_section_is_a_failed_check_and_the_others_still_run(tmp_path, monkeypatch):
    module = _load()

    def broken(device, size):
        raise RuntimeError("CUDA error: an illegal memory access")

    monkeypatch.setattr(module, "time_fused_heads", broken)
    monkeypatch.setattr(
        module,
        "time_training",
        lambda device, size, compiled: [
            dict(section="training", setting="x compiled" if compiled else "x", ms=1.0)
        ],
    )
    monkeypatch.setattr(module, "time_input_pipeline", lambda device, size: [])
    monkeypatch.setattr(module, "time_retrieval", lambda device, size: [])
    assert module.main(["--dry-run", "--skip-tests", "--out", str(tmp_path)]) == 1
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    status = {c["name"]: (c["status"], c["detail"]) for c in results["checks"]}
    assert status["timing: fused heads"] == ("failed", "RuntimeError: CUDA error: an illegal "
                                             "memory access")  # fmt: skip
    assert status["timing: training, compiled"][0] == "passed"
    assert [t["setting"] for t in results["timings"]] == ["x", "x compiled"]
    assert "**1 failed**: timing: fused heads" in (tmp_path / "gpu_check.md").read_text()
