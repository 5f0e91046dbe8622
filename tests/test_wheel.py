"""The wheel stands on its own: built from the repository, installed without `-e` into a fresh
virtual environment (reusing the installed dependencies), its commands start from outside the
repository, with the configs it ships and with a user's own config folder."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import FAST

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(*args: str | Path, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the repository."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy, so that building writes nothing into the checkout
    keep = {"mrl", "conf", "pyproject.toml", "README.md"}
    shutil.copytree(
        ROOT, source,
        ignore=lambda d, names: [n for n in names if (Path(d) == ROOT and n not in keep)
                                 or n == "__pycache__"],
    )  # fmt: skip
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", tmp / "dist", source, cwd=tmp)  # fmt: skip
    (wheel,) = (tmp / "dist").glob("mrl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    # The top-level `conf/` ships as the package's config directory, `mrl/conf/`.
    shipped = {"mrl/" + p.relative_to(ROOT).as_posix() for p in (ROOT / "conf").rglob("*.yaml")}
    assert shipped and shipped <= names, sorted(shipped - names)[:5]
    packages = {p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "mrl").rglob("__init__.py")}
    assert {f"{p}/__init__.py" for p in packages} <= names, "a package under mrl/ is not listed"
    assert {"mrl/py.typed", "mrl/conf/__init__.py", "mrl/cli/train.py", "mrl/extras.py"} <= names
    return wheel


@pytest.fixture(scope="module")
def installed(wheel: Path) -> Path:
    """A fresh virtual environment with the wheel installed; returns its `bin` folder."""
    tmp = wheel.parents[1]
    env = tmp / "env"
    _run(sys.executable, "-m", "venv", env, cwd=tmp)
    (site,) = (env / "lib").glob("python*/site-packages")
    # The dependencies come from this environment; its own `mrl` (editable) is not on the path,
    # since the .pth files of a folder named in a .pth file are not run.
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(env / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel,
         cwd=tmp)  # fmt: skip
    return env / "bin"


def test_the_wheel_declares_a_small_core_and_the_extras(wheel: Path):
    with zipfile.ZipFile(wheel) as zf:
        (meta,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        lines = zf.read(meta).decode().splitlines()
    requires = [line.removeprefix("Requires-Dist: ") for line in lines
                if line.startswith("Requires-Dist: ")]  # fmt: skip
    core = {r.split(">")[0].split("<")[0].strip().lower() for r in requires if "extra ==" not in r}
    assert core == {"torch", "numpy", "pyyaml"}
    provided = {line.removeprefix("Provides-Extra: ") for line in lines
                if line.startswith("Provides-Extra: ")}  # fmt: skip
    assert provided == {"train", "eval", "tracking", "figures", "text", "slurm", "export", "all",
                        "dev"}  # fmt: skip
    for req, extra in [
        ("faiss-cpu", "eval"),
        ("lightning", "train"),
        ("wandb", "tracking"),
        ("matplotlib", "figures"),
        ("nbconvert", "figures"),
        ("onnx", "export"),
    ]:
        assert any(r.startswith(req + ">") and f'extra == "{extra}"' in r for r in requires), req


def _outside_env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "MRL_OUTPUT_ROOT": str(tmp_path / "outputs"), "WANDB_MODE": "disabled"}


def test_the_installed_package_is_the_wheel(installed: Path, tmp_path: Path):
    done = _run(installed / "python", "-c", "import mrl, mrl.conf; print(mrl.conf.CONFIG_DIR)",
                cwd=tmp_path, env=_outside_env(tmp_path))  # fmt: skip
    config_dir = Path(done.stdout.strip())
    assert config_dir.is_relative_to(installed.parent) and (config_dir / "train.yaml").is_file()


def test_mrl_train_prints_its_config_and_runs_outside_the_repository(installed, tmp_path: Path):
    env = _outside_env(tmp_path)
    job = _run(installed / "mrl-train", "--cfg", "job", cwd=tmp_path, env=env).stdout
    assert "nesting:" in job and "_target_: mrl.MRLHead" in job

    run_dir = tmp_path / "run"
    _run(installed / "mrl-train", *FAST, f"paths.run_dir={run_dir}", "trainer.fast_dev_run=true",
         cwd=tmp_path, env=env)  # fmt: skip
    assert (run_dir / "results.json").is_file()


def test_a_config_folder_of_ones_own_is_added_without_forking(installed, tmp_path: Path):
    mine = tmp_path / "my_configs" / "experiment"
    mine.mkdir(parents=True)
    (mine / "my_study.yaml").write_text("# @package _global_\nname: my_study\nnesting: [4, 8]\n")
    env = _outside_env(tmp_path)
    for flag in (["--config-dir", str(mine.parent)],
                 [f"hydra.searchpath=[file://{mine.parent}]"]):  # fmt: skip
        job = _run(installed / "mrl-train", *flag, "experiment=my_study", "--cfg", "job",
                   cwd=tmp_path, env=env).stdout  # fmt: skip
        assert "name: my_study" in job and "- 4\n- 8" in job
