"""The README's commands that no other test runs, run as written."""

import os
import re
import shlex
import subprocess
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def readme_line(prefix: str) -> str:
    lines = [line.strip() for line in README.splitlines() if line.strip().startswith(prefix)]
    assert len(lines) == 1, f"the README should show one `{prefix} ...` command, found {lines}"
    return lines[0]


def readme_command(prefix: str) -> list[str]:
    """The words of the one README command starting with `prefix`, its continued lines (`\\`
    at the end) joined."""
    joined = README.replace("\\\n", " ")
    lines = [line.strip() for line in joined.splitlines() if line.strip().startswith(prefix)]
    assert len(lines) == 1, f"the README should show one `{prefix} ...` command, found {lines}"
    return shlex.split(lines[0])


def test_the_readme_claims_command_rewrites_the_committed_tables_unchanged(
    tmp_path: Path, monkeypatch
):
    from mrl.cli.report import main

    words = readme_command(".venv/bin/mrl-report --claims")
    committed = ROOT / words[words.index("--out") + 1]
    assert committed == ROOT / "experiments" / "results"  # the command that made those files
    words[words.index("--out") + 1] = str(tmp_path)
    monkeypatch.chdir(ROOT)  # its paths are relative to the checkout
    main(words[1:])
    written = sorted(p.name for p in tmp_path.iterdir())
    assert {"claims.md", "claims.csv"} <= set(written), written
    for name in written:
        assert (tmp_path / name).read_bytes() == (committed / name).read_bytes(), name


@pytest.mark.slow
def test_the_readme_notebook_command_executes_a_notebook(tmp_path: Path):
    words = shlex.split(readme_line(".venv/bin/jupyter nbconvert"))
    out = Path(words[words.index("--output") + 1])
    words[words.index("--output") + 1] = str(tmp_path / out.name)  # not /tmp of the machine
    words[0] = str(ROOT / words[0])
    env = {**os.environ, "MPLBACKEND": "Agg"}
    done = subprocess.run(words, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    executed = nbformat.read(tmp_path / out.name, as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code)
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "data:image/png;base64," in html  # it drew its figure


def test_the_readme_load_example_names_the_real_signature():
    import inspect

    from mrl.inference import MatryoshkaModel

    block = re.search(r"```python\nimport mrl\n(.*?)```", README, re.S)
    assert block, "the README's mrl.load example is missing"
    assert "mrl.load(" in block.group(1) and ".encode(images, dim=64)" in block.group(1)
    signature = inspect.signature(MatryoshkaModel.encode)
    defaults = {k: p.default for k, p in signature.parameters.items() if p.default is not p.empty}
    for key, value in defaults.items():
        if key in ("normalize", "batch_size", "device", "dim"):
            assert f"{key}={value}" in README, f"the README should say {key}={value}"
