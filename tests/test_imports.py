"""The package's import graph, read from the source: no cycle among module-level imports, and
the core maths (heads, losses, nesting, metrics, retrieval, cascades) reaching neither
Lightning nor Hydra, directly or through another module of the package."""

import ast
from pathlib import Path

import mrl

ROOT = Path(mrl.__file__).resolve().parent
CORE = [
    "mrl.core.heads", "mrl.core.losses", "mrl.core.nesting", "mrl.core.contrastive",
    "mrl.core.fused", "mrl.core.naive", "mrl.core.matryoshka_2d", "mrl.core.adaptor",
    "mrl.eval.search", "mrl.eval.retrieval", "mrl.eval.funnel", "mrl.eval.ties",
    "mrl.eval.quantize", "mrl.eval.cascade", "mrl.eval.index_cache",
]  # fmt: skip
FRAMEWORKS = ("lightning", "pytorch_lightning", "hydra", "omegaconf")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_imports() -> dict[str, set[str]]:
    """Module -> the absolute names it imports at module level (function-level imports are the
    package's deliberate lazy ones and are left out)."""
    graph = {}
    for path in ROOT.rglob("*.py"):
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
    "core": 0, "conf": 0,
    "runs": 1,
    "data": 2, "encoders": 2, "reference": 2,
    "eval": 3, "training": 3,
    "text": 4, "report": 4,
    "export": 5,
    "inference": 6,
    "cli": 7,
}  # fmt: skip


def layer_of(module: str) -> str | None:
    """The layer (subpackage) a module of the package belongs to; None for `mrl` itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def all_imports() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its source (lazy imports too)."""
    graph = {}
    for path in ROOT.rglob("*.py"):
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
