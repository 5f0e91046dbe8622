"""SLURM launch scripts: valid bash, in sync with `mrl-submit`, and the right `srun` line."""

import os
import stat
import subprocess
from pathlib import Path

import pytest

from mrl.cli.submit import main, render, sweep_lines

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = {
    "train.sbatch": [],
    "train_multinode.sbatch": ["--nodes", "4", "--job-name", "mrl-multinode"],
    "sweep_array.sbatch": ["--sweep", "slurm/example_sweep.txt", "--job-name", "mrl-sweep"],
}


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_templates_parse_and_match_mrl_submit(name, capsys, monkeypatch):
    path = ROOT / "slurm" / name
    subprocess.run(["bash", "-n", str(path)], check=True)
    monkeypatch.chdir(ROOT)
    main(["--dry-run", *TEMPLATES[name]])
    assert capsys.readouterr().out == path.read_text(), f"regenerate {path} with mrl-submit"
    text = path.read_text()
    assert "#SBATCH --signal=SIGUSR1@90" in text and "#SBATCH --requeue" in text
    assert "#SBATCH --ntasks-per-node=8" in text and "#SBATCH --gpus-per-node=8" in text


def fake_srun(tmp_path: Path) -> dict:
    """An `srun` on PATH that prints the command it was given, one argument per line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text('#!/bin/bash\nprintf "%s\\n" "$@"\n')
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_SUBMIT_DIR": str(ROOT)}


def test_multinode_script_launches_ddp_over_all_nodes(tmp_path):
    env = {**fake_srun(tmp_path), "SLURM_JOB_ID": "4242", "SLURM_NNODES": "4",
           "SLURM_NTASKS_PER_NODE": "8"}  # fmt: skip
    out = subprocess.run(
        ["bash", str(ROOT / "slurm" / "train_multinode.sbatch"), "method=mrl_e"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.split("\n")  # fmt: skip
    assert out[:6] == [
        ".venv/bin/mrl-train", "trainer=ddp", "trainer.devices=8", "trainer.num_nodes=4",
        "run_id=slurm-4242", "method=mrl_e",
    ]  # fmt: skip


def test_array_task_runs_its_line_of_the_sweep(tmp_path):
    env = {**fake_srun(tmp_path), "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "2"}
    out = subprocess.run(
        ["bash", str(ROOT / "slurm" / "sweep_array.sbatch")],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    expected = sweep_lines(ROOT / "slurm" / "example_sweep.txt")[2].split()
    assert "run_id=slurm-77_2" in out
    assert out[-len(expected) :] == expected
    assert "#SBATCH --array=0-4" in (ROOT / "slurm" / "sweep_array.sbatch").read_text()


def test_render_options_and_bad_input(tmp_path, capsys):
    text = render(["a=1"], nodes=2, gpus_per_node=4, partition="gpu", account="lab")
    assert "#SBATCH --partition=gpu" in text and "#SBATCH --account=lab" in text
    assert "#SBATCH --ntasks-per-node=4" in text and "--constraint" not in text
    with pytest.raises(SystemExit) as info:
        main(["--dry-run", "--sweep", str(tmp_path / "missing.txt")])
    assert info.value.code == 2
    assert "sweep file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--nodse", "2", "--dry-run"], "unknown option --nodse"),
        # a shortened option is not taken for the long one it starts
        (["--gpus-per-nod", "4", "--dry-run"], "unknown option --gpus-per-nod"),
        (["method=mrl_e"], "sbatch not found"),
    ],
)
def test_unknown_options_and_a_missing_sbatch_are_one_line(argv, message, capsys, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_overrides_after_the_separator_reach_mrl_train(capsys):
    main(["--dry-run", "--", "-m", "seed=1,2"])
    assert "-m seed=1,2" in capsys.readouterr().out
