"""The package's import graph, read from the source: no cycle among module-level imports, and
the core maths (heads, losses, nesting, metrics, retrieval, cascades) reaching neither
Lightning nor Hydra, directly or through another module of the package. Then the same promise
kept at run time (`import mrl`, a head and a loss trained one step with every extra's packages
hidden), every third-party import declared in pyproject.toml, and `mrl.extras`' check."""

import ast
import functools
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mrl
import mrl.conf
from mrl import extras

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(mrl.__file__).resolve().parent
CONF = Path(mrl.conf.__file__).resolve().parent
CORE = [
    "mrl.core.heads", "mrl.core.losses", "mrl.core.nesting", "mrl.core.contrastive",
    "mrl.core.fused", "mrl.core.naive", "mrl.core.matryoshka_2d", "mrl.core.adaptor",
    "mrl.eval.search", "mrl.eval.retrieval", "mrl.eval.funnel", "mrl.eval.ties",
    "mrl.eval.quantize", "mrl.eval.cascade", "mrl.eval.index_cache",
]  # fmt: skip
FRAMEWORKS = ("lightning", "pytorch_lightning", "hydra", "omegaconf")


def module_name(path: Path) -> str:
    if path.parent == CONF:
        return "mrl.conf"
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_files() -> list[Path]:
    """The package's source files: `mrl/` and its config directory (the top-level `conf/`)."""
    return [*ROOT.rglob("*.py"), *CONF.glob("*.py")]


def module_imports() -> dict[str, set[str]]:
    """Module -> the absolute names it imports at module level (function-level imports are the
    package's deliberate lazy ones and are left out)."""
    graph = {}
    for path in package_files():
        names = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        graph[module_name(path)] = names
    return graph


def test_no_import_cycle_in_the_package():
    graph = module_imports()
    inner = {m: {n for n in names if n in graph and n != m} for m, names in graph.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for other in sorted(inner[module]):
            assert state.get(other) != 1, "import cycle: " + " -> ".join([*path, other])
            if other not in state:
                visit(other)
        path.pop()
        state[module] = 2

    for module in sorted(inner):
        if module not in state:
            visit(module)


def reached(graph: dict[str, set[str]], start: str) -> dict[str, str]:
    """Top-level packages outside `mrl` that `start` imports directly or through the package's
    modules, each with the module that imports it."""
    out, seen, todo = {}, set(), [start]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for name in graph.get(module, ()):
            if name in graph:
                todo.append(name)
            elif name.split(".")[0] != "mrl":
                out.setdefault(name.split(".")[0], module)
    return out


def test_core_maths_reach_no_lightning_or_hydra():
    graph = module_imports()
    for core in CORE:
        assert core in graph, core
        found = {p: m for p, m in reached(graph, core).items() if p in FRAMEWORKS}
        assert not found, f"{core} reaches {found}"
    # The walk does find frameworks where they are: the Lightning module reaches Lightning.
    assert "lightning" in reached(graph, "mrl.training.module")
    assert "hydra" in reached(graph, "mrl.cli.train")


# The layers of the package, bottom (0) to top: a module imports only modules of its own
# package or of a lower layer, never one beside or above it (lazy imports included).
LAYERS = {
    "core": 0, "conf": 0, "extras": 0,
    "runs": 1, "commands": 1, "config": 1, "checks": 1,
    "data": 2, "encoders": 2, "reference": 2,
    "eval": 3, "training": 3,
    "text": 4, "report": 4,
    "saved": 5,
    "export": 6,
    "inference": 7,
    "cli": 8,
}  # fmt: skip


def layer_of(module: str) -> str | None:
    """The layer (subpackage) a module of the package belongs to; None for `mrl` itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def all_imports() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its source (lazy imports too)."""
    graph = {}
    for path in package_files():
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        graph[module_name(path)] = {n for n in names if n.split(".")[0] == "mrl"}
    return graph


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """`importer -> imported` pairs that break the layering."""
    bad = []
    for module, names in sorted(graph.items()):
        here = layer_of(module)
        if here is None:
            continue  # the package's face hands the core's names on
        for name in sorted(names):
            there = layer_of(name)
            if there is None or there == here or there not in LAYERS:
                continue
            if LAYERS[there] >= LAYERS[here]:
                bad.append(f"{module} -> {name}")
    return bad


def test_every_module_sits_in_a_layer():
    assert {layer_of(m) for m in all_imports()} - {None} == set(LAYERS)


def test_nothing_imports_upward_or_sideways():
    graph = all_imports()
    assert upward_imports(graph) == []
    # The check does catch a breach: training importing the report would be one.
    breach = {**graph, "mrl.training.lifecycle": graph["mrl.training.lifecycle"] | {"mrl.report"}}
    assert upward_imports(breach) == ["mrl.training.lifecycle -> mrl.report"]


# -- what `pip install mrl` (no extras) brings -------------------------------------------------

# The packages of the extras (and their usual companions): none may be imported by `import mrl`,
# `mrl.core` or a head and loss at work.
EXTRA_PACKAGES = (
    "lightning", "pytorch_lightning", "hydra", "omegaconf", "faiss", "wandb", "torchvision",
    "torchmetrics", "matplotlib", "pandas", "transformers", "sentence_transformers", "rich",
    "tqdm",
)  # fmt: skip

# Run in a fresh interpreter: hides the top-level packages named in argv[1] from every import
# finder (so they are as absent as if never installed, `importlib.util.find_spec` included),
# runs argv[2], and prints which hidden modules were asked for by the package's own code (the
# nearest importing frame is a module of `mrl`), as the last line of stdout.
HARNESS = r"""
import json, sys, traceback

hidden = set(json.loads(sys.argv[1]))
asked = []

def importer():
    frame = sys._getframe(2)
    while frame is not None and (frame.f_code.co_filename.startswith("<frozen")
                                 or "importlib" in frame.f_code.co_filename):
        frame = frame.f_back
    return frame.f_globals.get("__name__", "?") if frame is not None else "?"

class Hide:
    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in hidden:
            asked.append([name, importer()])
            return None
        return self.inner.find_spec(name, path, target)

sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
import torch  # the core's own dependency: what it looks for itself is its own business
try:
    exec(compile(sys.argv[2], "<probe>", "exec"), {"__name__": "__probe__"})
    error = None
except BaseException:
    error = traceback.format_exc()
loaded = sorted(m for m in sys.modules if m.partition(".")[0] in hidden)
by_package = sorted({name for name, by in asked if by == "mrl" or by.startswith("mrl.")})
print(json.dumps({"error": error, "asked_by_mrl": by_package, "loaded": loaded}))
"""

CORE_PROBE = """
import importlib, pkgutil
import torch
import mrl, mrl.core
from mrl import MRLHead, MatryoshkaLoss
for info in pkgutil.iter_modules(mrl.core.__path__):
    importlib.import_module(f"mrl.core.{info.name}")
for name in mrl.__all__:
    if name != "load":
        getattr(mrl, name)
torch.manual_seed(0)
head, loss_fn = MRLHead(16, 5, [2, 4, 8, 16]), MatryoshkaLoss()
z = torch.randn(6, 16, requires_grad=True)
loss = loss_fn(head(z), torch.randint(0, 5, (6,)))
loss.backward()
assert torch.isfinite(loss) and z.grad.abs().sum() > 0
assert all(p.grad is not None for p in head.parameters())
"""


def run_hidden(hidden: tuple[str, ...], probe: str) -> dict:
    """`probe` run by `HARNESS` in a fresh interpreter with `hidden` packages absent."""
    done = subprocess.run(
        [sys.executable, "-c", HARNESS, json.dumps(list(hidden)), probe],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_core_works_with_no_extra_installed():
    out = run_hidden(EXTRA_PACKAGES, CORE_PROBE)
    assert out == {"error": None, "asked_by_mrl": [], "loaded": []}, out.get("error") or out


@pytest.mark.parametrize(
    "breach",
    ["import tqdm", "from lightning.pytorch import Trainer",
     "try:\n    import wandb\nexcept ImportError:\n    pass"],
)  # fmt: skip
def test_the_harness_catches_the_package_importing_an_extra(breach: str):
    # The same import run as if written in a module of the core: a hard import fails the
    # probe, a guarded one is still reported.
    probe = f"exec({breach!r}, {{'__name__': 'mrl.core.breach'}})"
    out = run_hidden(EXTRA_PACKAGES, probe)
    assert out["asked_by_mrl"] and out["loaded"] == [], out
    assert (out["error"] is None) == breach.startswith("try"), out


def pyproject() -> dict:
    return tomllib.loads((ROOT.parent / "pyproject.toml").read_text())


def requirement_name(req: str) -> str:
    """The normalised distribution name of a requirement string (`PyYAML>=5.1` -> `pyyaml`)."""
    name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req.strip())
    assert name, req
    return re.sub(r"[-_.]+", "-", name.group(0)).lower()


def declared() -> dict[str, set[str]]:
    """`core` and each extra -> the distributions it names (self-references expanded)."""
    project = pyproject()["project"]
    raw = {"core": project["dependencies"], **project["optional-dependencies"]}
    out: dict[str, set[str]] = {}

    def expand(group: str) -> set[str]:
        if group not in out:
            names = set()
            for req in raw[group]:
                own = re.fullmatch(r"\s*mrl\[([^\]]+)\]\s*", req)
                if own:
                    names |= {n for g in own.group(1).split(",") for n in expand(g.strip())}
                else:
                    names.add(requirement_name(req))
            out[group] = names
        return out[group]

    for group in raw:
        expand(group)
    return out


@functools.cache
def _top_level_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distributions_of(module: str) -> set[str]:
    """The installed distributions that provide top-level `module`, normalised."""
    found = _top_level_distributions().get(module.partition(".")[0], [])
    return {requirement_name(d) for d in found}


def test_the_core_dependencies_are_small_and_the_extras_hold_the_rest():
    groups = declared()
    assert groups["core"] == {"torch", "numpy", "pyyaml"}
    assert {"lightning", "faiss-cpu", "wandb", "matplotlib"}.isdisjoint(groups["core"])
    extras_only = {g: n for g, n in groups.items() if g not in ("core", "all", "dev")}
    assert groups["all"] == set().union(*extras_only.values())
    assert groups["dev"] >= groups["all"] | {"pytest", "ruff", "nbconvert"}


def test_every_third_party_import_of_the_package_is_declared():
    groups = declared()
    everything = set().union(*groups.values())
    stdlib = set(sys.stdlib_module_names)
    undeclared = {}
    for path in package_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                tops = {a.name.partition(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                tops = {node.module.partition(".")[0]}
            else:
                continue
            for top in tops - stdlib - {"mrl"}:
                if not distributions_of(top) & everything:
                    undeclared.setdefault(top, module_name(path))
    assert undeclared == {}


def test_the_extras_table_matches_pyproject():
    groups = declared()
    assert set(extras.EXTRAS) == set(groups) - {"core", "all", "dev"}
    for extra, modules in extras.EXTRAS.items():
        for module in modules:
            assert distributions_of(module) & groups[extra], f"{module} is not in [{extra}]"
    scripts = pyproject()["project"]["scripts"]
    assert set(extras.COMMANDS) == set(scripts)
    assert all(set(needs) <= set(extras.EXTRAS) for needs in extras.COMMANDS.values())


def test_require_is_silent_when_the_extras_are_installed(capsys):
    for command in extras.COMMANDS:
        extras.require(command)
    assert extras.missing_message("mrl.load", "train") is None
    assert capsys.readouterr().err == ""


def test_require_names_the_extra_to_install_and_exits_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "lightning", None)  # as if not installed
    with pytest.raises(SystemExit) as exit_:
        extras.require("mrl-train")
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "mrl-train needs the 'train' extra (missing: lightning): pip install 'mrl[train]'\n"
    )
    # Several extras are all named, a module under a missing package counts as missing too.
    monkeypatch.setitem(sys.modules, "transformers", None)
    monkeypatch.setitem(sys.modules, "hydra_plugins", None)
    # An earlier test may have imported the plugin itself: hide it by its own name too.
    monkeypatch.setitem(sys.modules, "hydra_plugins.hydra_submitit_launcher", None)
    assert extras.missing_message("mrl-train-text", "train", "text", "slurm") == (
        "mrl-train-text needs the 'train', 'text' and 'slurm' extras (missing: lightning, "
        "transformers, hydra_plugins.hydra_submitit_launcher): "
        "pip install 'mrl[train,text,slurm]'"
    )
    with pytest.raises(KeyError, match="unknown extra 'gpu'"):
        extras.require("mrl-train", "gpu")


def test_require_names_only_the_extras_that_are_missing(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(SystemExit):
        extras.require("mrl-export")
    assert capsys.readouterr().err == (
        "mrl-export needs the 'export' extra (missing: onnxruntime): pip install 'mrl[export]'\n"
    )


def test_mrl_load_without_the_train_extra_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "hydra", None)
    with pytest.raises(ModuleNotFoundError, match=re.escape("pip install 'mrl[train]'")):
        mrl.load  # noqa: B018


@pytest.mark.parametrize(
    "command, module, hidden, expected",
    [("mrl-train", "mrl.cli.train", ("lightning",), "'train' extra (missing: lightning)"),
     ("mrl-report", "mrl.cli.report", ("matplotlib",), "'figures' extra (missing: matplotlib)"),
     ("mrl-export", "mrl.cli.export", ("onnx", "onnxruntime"), "pip install 'mrl[export]'")],
)  # fmt: skip
def test_a_console_command_without_its_extra_is_one_line_and_exit_2(
    command, module, hidden, expected
):
    # As the console script starts it: argv[0] is the command, then its module is imported.
    probe = f"import sys\nsys.argv = ['/venv/bin/{command}']\nimport {module}"
    done = subprocess.run(
        [sys.executable, "-c", HARNESS, json.dumps(list(hidden)), probe],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["error"] and "SystemExit: 2" in out["error"], out
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{command} needs the ") and expected in lines[0]
    assert out["loaded"] == []  # refused before importing anything it lacks


def private_imports_across_packages(sources: list[tuple[str, Path]]) -> list[str]:
    """`importer -> module._name` for every private name imported from another package of
    `mrl` (a module's own package may share its private helpers)."""
    found = []
    for importer, path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.level == 0):
                continue
            if node.module.split(".")[0] != "mrl" or layer_of(node.module) == layer_of(importer):
                continue
            found += [f"{importer} -> {node.module}.{a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]  # fmt: skip
    return found


def test_no_private_helper_is_imported_across_packages(tmp_path: Path):
    sources = [(module_name(p), p) for p in package_files()]
    sources += [(f"experiments.{p.stem}", p) for p in (ROOT.parent / "experiments").rglob("*.py")]
    assert private_imports_across_packages(sources) == []
    # The check does catch one, and lets a package share its own private helpers.
    script = tmp_path / "script.py"
    script.write_text("from mrl.eval.search import _topk_rows, build_index\n")
    assert private_imports_across_packages([("experiments.script", script)]) == [
        "experiments.script -> mrl.eval.search._topk_rows"
    ]
    assert private_imports_across_packages([("mrl.eval.funnel", script)]) == []


def test_the_readme_draws_the_layers_this_test_enforces():
    text = (ROOT.parent / "README.md").read_text()
    diagram = text.split("## Architecture", 1)[1].split("```", 2)[1]
    drawn, layer = {}, None
    for line in diagram.splitlines():
        if match := re.match(r"\s*(\d+)\s", line):
            layer = int(match.group(1))
        for name in re.findall(r"\b([a-z_]+)(?:/|\.py)(?=\s|$)", line):
            drawn[name] = layer
    assert drawn == LAYERS
