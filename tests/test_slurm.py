"""SLURM launch scripts: valid bash, in sync with `mrl-submit`, and the right `srun` line; a
sweep through Hydra's SLURM launcher without SLURM is one line."""

import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mrl import commands
from mrl.cli import submit
from mrl.cli.submit import main, render, sweep_lines

ROOT = Path(__file__).resolve().parents[1]
# This environment's console scripts (the interpreter's folder, not resolved: a venv's python
# is a link to the base interpreter).
VENV_BIN = Path(os.path.abspath(sys.executable)).parent
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
    # The templates run the checkout's own venv, relative to the folder sbatch is run in.
    monkeypatch.setattr(submit, "train_command", lambda: [".venv/bin/mrl-train"])
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


def test_train_command_is_the_running_environments(tmp_path, monkeypatch):
    assert submit.train_command() == [str(VENV_BIN / "mrl-train")]
    python = tmp_path / "bin" / "python"  # an environment whose scripts live elsewhere
    monkeypatch.setattr(sys, "executable", str(python))
    assert submit.train_command() == [str(python), "-m", "mrl.cli.train"]
    assert f"srun {python} -m mrl.cli.train trainer=ddp" in render([])


def fake_slurm(bin_dir: Path, log: Path) -> None:
    """`sbatch` and `srun` that append their arguments to `log`; `sbatch` also keeps a copy of
    the script it is given, beside `log`."""
    bin_dir.mkdir()
    record = f'printf "%s %s\\n" "$(basename "$0")" "$*" >> {shlex.quote(str(log))}\n'
    keep = f'cp "$1" {shlex.quote(str(log.with_name("submitted.sbatch")))}\n'
    for name, body in (("sbatch", record + keep + "echo Submitted batch job 7\n"),
                       ("srun", record)):  # fmt: skip
        path = bin_dir / name
        path.write_text("#!/bin/bash\nset -eu\n" + body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_mrl_submit_runs_its_own_environment_after_the_setup_lines(tmp_path):
    work, log = tmp_path / "work", tmp_path / "calls.log"
    work.mkdir()  # an empty folder: no .venv, no checkout
    fake_slurm(tmp_path / "bin", log)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{VENV_BIN}:/usr/bin:/bin"}
    env.pop("MRL_UNSET", None)
    setup = [f"echo one >> {log}", f'echo "two${{MRL_UNSET}}" >> {log}']  # read while unset
    argv = [str(VENV_BIN / "mrl-submit"), "--setup", setup[0], f"--setup={setup[1]}", "--",
            "method=mrl_e"]  # fmt: skip
    done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    written = sorted((work / "slurm" / "generated").glob("mrl-*.sbatch"))
    assert len(written) == 1 and log.read_text() == f"sbatch {written[0].relative_to(work)}\n"
    script = (tmp_path / "submitted.sbatch").read_text()
    assert script == written[0].read_text()
    lines = script.splitlines()
    command = next(i for i, line in enumerate(lines) if line.startswith("srun "))
    assert lines[command].startswith(f"srun {VENV_BIN / 'mrl-train'} trainer=ddp ")
    assert lines.index(setup[0]) < lines.index(setup[1]) < command
    # The job itself, from another folder: the setup lines run in order, then this mrl-train.
    log.write_text("")
    job_env = {**env, "SLURM_SUBMIT_DIR": str(work), "SLURM_JOB_ID": "7"}
    subprocess.run(["bash", str(written[0])], cwd=tmp_path, env=job_env, check=True, timeout=60)
    calls = log.read_text().splitlines()
    assert calls[:2] == ["one", "two"]
    assert calls[2].startswith(f"srun {VENV_BIN / 'mrl-train'} trainer=ddp ")
    assert calls[2].endswith("run_id=slurm-7 method=mrl_e") and len(calls) == 3


def test_a_slurm_sweep_without_slurm_is_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "PATH": f"{VENV_BIN}:{empty}"}  # no sbatch, no srun
    argv = [str(VENV_BIN / "mrl-train"), "-m", "hydra/launcher=slurm",
            "hydra.launcher.partition=gpu", "data=synthetic", "trainer.fast_dev_run=true",
            "seed=0,1"]  # fmt: skip
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    err = done.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("mrl-train: error: hydra/launcher=slurm needs")
    assert "sbatch and srun on PATH" in err[0] and "login node" in err[0]
    assert not (tmp_path / "outputs").exists()  # stopped before Hydra made the sweep folder


def test_submitits_own_srun_error_is_one_line(tmp_path, monkeypatch, capsys):
    """Where the launcher is not on the command line (an experiment picks it), submitit's
    error after Hydra's traceback is what is left to report."""

    def hydra_main() -> None:
        try:
            raise RuntimeError('Could not detect "srun", are you indeed on a slurm cluster?')
        except RuntimeError:
            print("Traceback (most recent call last):\n  ...\nRuntimeError", file=sys.stderr)
            sys.exit(1)  # what Hydra does with an error it caught

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("MRL_DEBUG", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", ["mrl-train", "-m", "experiment=on_slurm"])
    monkeypatch.setattr(commands, "_COMMAND_STARTED", False)
    with pytest.raises(SystemExit) as info:
        commands.hydra_cli(hydra_main, "mrl-train")()
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "mrl-train: error: hydra/launcher=slurm needs SLURM's sbatch and srun on PATH (not "
        "found): run on a cluster login node, or drop hydra/launcher=slurm to run the sweep here\n"
    )


@pytest.mark.parametrize(
    ("argv", "requested"),
    [
        (["-m", "hydra/launcher=slurm", "seed=0,1"], True),
        (["--multirun", "+hydra/launcher=submitit_slurm"], True),
        (["hydra/launcher=slurm"], False),  # one run: Hydra does not launch it
        (["-m", "hydra/launcher=basic"], False),
    ],
)
def test_slurm_launcher_requested(argv, requested):
    assert commands.slurm_launcher_requested(argv) is requested
