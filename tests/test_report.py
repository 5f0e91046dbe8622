"""`mrl.report`: loading the tidy tables, the figures, `mrl-report`, the notebooks, provenance.

Everything runs on small fabricated tables in tmp_path: an `mrl-aggregate` sweep (several
methods, two seeds, a corrupted split) and one fully evaluated run folder.
"""

import asyncio
import csv
import json
import math
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from mrl.cli import report as cli
from mrl.report import load, plots
from mrl.runs import provenance
from mrl.runs.format import EVAL_METRIC_COLUMNS

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
DIMS = [2, 4, 8, 16, 32]
GROUPS = list(plots.GROUPS)


def _acc(method: str, dim: int, seed: int = 0, drop: float = 0.0) -> float:
    """A plausible accuracy: rises with dim, baselines worse at small dims."""
    penalty = {"mrl": 0.0, "mrl_e": 0.01, "ff": 0.005, "svd": 0.2, "random": 0.3}.get(method, 0.1)
    return round(0.9 - 0.3 / dim - penalty / math.sqrt(dim) - drop + 0.002 * seed, 4)


def write_aggregate(
    folder: Path, methods=("mrl", "mrl_e", "ff", "svd", "random"), dims=DIMS, skip=()
) -> Path:
    """An `mrl-aggregate` results.csv under folder/aggregate; `skip` holds (method, dim)."""
    rows = []
    run = 0
    for seed in (0, 1):
        for method in methods:
            run_dims = [[d] for d in dims] if method == "ff" else [dims]
            for head_dims in run_dims:
                name = str(run)
                run += 1
                base = {"study": "toy_table1", "run": name, "status": "ok", "seed": seed}
                for dim in head_dims if method not in ("svd", "random") else dims:
                    if (method, dim) in skip:
                        continue
                    value = _acc(method, dim, seed)
                    if method in ("svd", "random"):
                        rows.append({**base, "method": method, "dim": dim, "source": "eval",
                                     "metric": "probe_top1", "value": value})  # fmt: skip
                    else:
                        rows.append({**base, "method": method, "dim": dim, "source": "train",
                                     "metric": "top1", "value": value})  # fmt: skip
                        rows.append({**base, "method": method, "dim": dim, "source": "eval",
                                     "metric": "head_top1", "value": value})  # fmt: skip
                    for metric, shift in (("1nn", 0.01), ("map@10", 0.05)):
                        rows.append({**base, "method": method, "dim": dim, "source": "eval",
                                     "metric": metric, "value": value - shift})  # fmt: skip
                    rows.append(
                        {**base, "method": method, "dim": dim, "source": "eval",
                         "metric": "query-gaussian_noise-3/head_top1", "value": value - 0.2}
                    )  # fmt: skip
    # A failed run: listed, not drawn.
    rows.append(
        {
            "study": "toy_table1",
            "run": str(run),
            "status": "failed",
            "seed": 2,
            "method": "mrl",
            "dim": None,
            "source": None,
            "metric": None,
            "value": None,
        }
    )
    path = folder / "aggregate" / "results.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=load.AGGREGATE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_run(folder: Path, dims=DIMS, seed: int = 0) -> Path:
    """One fully evaluated MRL run: results.json and eval/ with every table mrl-eval writes."""
    eval_dir = folder / "eval"
    eval_dir.mkdir(parents=True)
    results = {
        "experiment": "toy",
        "nesting": dims,
        "per_dim": [{"dim": d, "top1": _acc("mrl", d, seed), "top5": 0.99} for d in dims],
        "seed": seed,
        "wall_time_s": 12.5,
        "config": {
            "name": "toy", "seed": seed, "nesting": dims,
            "data": {"_target_": "mrl.data.SyntheticDataModule"},
            "head": {"nesting": dims, "tied": False},
        },
        "provenance": {"git_revision": "abc1234", "git_dirty": False, "hostname": "node1",
                       "python": "3.11.2", "torch": "2.5.0", "cuda_device": "Fake GPU 80GB"},
    }  # fmt: skip
    (folder / "results.json").write_text(json.dumps(results))
    rows = []
    splits = ["query", "query-gaussian_noise-1", "query-gaussian_noise-3", "query-contrast-1"]
    for split in splits:
        drop = 0.0 if split == "query" else 0.05 * int(split[-1])
        for dim in dims:
            value = _acc("mrl", dim, seed, drop)
            for metric, v in (("head_top1", value), ("probe_top1", value - 0.01),
                              ("1nn", value - 0.01), ("map@10", value - 0.05),
                              ("search_seconds", 0.01)):  # fmt: skip
                rows.append(["Synthetic", split, "mrl", dim, metric, v])
            if split == "query":
                rows.append(["Synthetic", split, "svd", dim, "probe_top1", _acc("svd", dim)])
    with (eval_dir / "metrics.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(EVAL_METRIC_COLUMNS)
        writer.writerows(rows)
    exit_cols = [f"exit@{d}" for d in dims]
    thr_cols = [f"threshold@{d}" for d in dims]
    with (eval_dir / "adaptive_classification.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["target", "accuracy", "expected_dim", *exit_cols, *thr_cols])
        for i, target in enumerate([0.5, 0.7, 0.8, 0.85, 0.88, 0.9]):
            exits = [0.0] * len(dims)
            exits[min(i, len(dims) - 1)] = 1.0
            writer.writerow([target, 0.6 + 0.05 * i, 2 + 5 * i, *exits,
                             *(["inf"] * (len(dims) - 1)), 0.0])  # fmt: skip
    summary = {
        "method": "mrl",
        "nesting": dims,
        "adaptive_classification": {
            "per_head_accuracy": {str(d): _acc("mrl", d, seed) for d in dims},
            "oracle": {"accuracy": 0.95, "expected_dim": 3.1},
            "matching_row": {"target": 0.9, "accuracy": 0.85, "expected_dim": 27.0},
        },
    }
    (eval_dir / "summary.json").write_text(json.dumps(summary))
    with (eval_dir / "adaptive_retrieval.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "method",
                "dims",
                "shortlists",
                "map@10",
                "1nn",
                "mflops_per_query",
                "flops_ratio_vs_exact",
                "ms_per_query",
                "speedup_vs_exact",
            ]
        )
        writer.writerow(["exact", "32", "10", 0.85, 0.88, 3.2, 1.0, 0.2, 1.0])
        for i, d in enumerate(dims[:-1]):
            writer.writerow(["adaptive", f"{d}>32", "200>10", 0.8 + 0.01 * i, 0.85,
                             0.1 * 2**i, 3.2 / (0.1 * 2**i), 0.1, 2.0])  # fmt: skip
        writer.writerow(["funnel", "2>4>8>32", "200>100>50>10", 0.83, 0.86, 0.15, 21.3, 0.1, 2])
    return folder


def write_sweep_file(path: Path, methods: str) -> Path:
    """A Hydra sweep file (`multirun.yaml` or `.hydra/hydra.yaml`) sweeping `method=methods`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "hydra:\n  mode: MULTIRUN\n  sweeper:\n    params:\n"
        f"      seed: 0,1\n      method: {methods}\n"
    )
    return path


def write_reference(folder: Path) -> Path:
    """A small reference folder in the format of the paper's numbers."""
    folder.mkdir(parents=True)
    (folder / "paper_resnet50_imagenet1k.csv").write_text(
        "metric,method,8,16,32,64\n"
        "top1,MRL,66.6,73.5,75.0,75.8\n"
        "top1,FF,65.3,72.9,74.6,75.3\n"
        "top1,SVD,2.3,7.2,20.5,\n"
        "1nn,MRL,62.2,67.9,69.5,70.2\n"
        "map@10,MRL,56.7,62.9,64.2,64.7\n"
        "map@10,FF,53.4,61.6,63.4,63.3\n"
    )
    (folder / "paper_adaptive.csv").write_text(
        "study,setting,value_name,value,cost_name,cost\n"
        "adaptive_classification,MRL cascade,top1,73.79,expected_dim,13.6\n"
        "adaptive_classification,MRL cascade,top1,75.23,expected_dim,18.9\n"
        "adaptive_classification,FF,top1,76.30,expected_dim,512\n"
        "adaptive_retrieval_1k,Ds=8 Dr=2048 shortlist=200,map@10,64.90,mflops_per_query,10.66\n"
        "adaptive_retrieval_1k,funnel from 16,map@10,65.19,mflops_per_query,20.54\n"
        "adaptive_retrieval_1k,exact 2048,map@10,65.20,mflops_per_query,2624\n"
    )
    return folder


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A results folder holding an aggregate sweep and one evaluated run, as committed."""
    root = tmp_path / "results"
    write_aggregate(root / "toy_table1")
    write_run(root / "toy_default")
    return root


@pytest.fixture
def reference(tmp_path: Path) -> Path:
    return write_reference(tmp_path / "reference")


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}
        self.images: list[str] = []
        self.missing_items = 0
        self._in_missing = False

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "ul" and attrs.get("class") == "missing":
            self._in_missing = True
        if tag == "li" and self._in_missing:
            self.missing_items += 1

    def handle_endtag(self, tag):
        if tag == "ul":
            self._in_missing = False


# ---------------------------------------------------------------------------------------------
# Loading


def test_load_normalises_aggregate_and_run(results: Path) -> None:
    tables = load.load_results(results)
    c = tables.classification
    assert set(c["study"]) == {"toy_table1", "toy"}
    sweep = c[c["study"] == "toy_table1"]
    assert set(sweep["method"]) == {"mrl", "mrl_e", "ff", "svd", "random"}
    # Two seeds per (method, dim); FF has one run per dim, each standing for its own dim only.
    assert (sweep.groupby(["method", "dim"]).size() == 2).all()
    # head_top1 is preferred over the train-time top1 and the probe.
    run = c[c["study"] == "toy"]
    assert set(run["metric"]) == {"head_top1", "probe_top1"}  # probe only for svd
    assert set(run.loc[run["method"] == "svd", "metric"]) == {"probe_top1"}
    assert set(run["dataset"]) == {"Synthetic"}
    assert set(tables.retrieval["metric"]) == {"1nn", "map@10"}
    robust = tables.robustness
    assert {"clean", "gaussian_noise", "contrast"} <= set(robust["corruption"])
    assert set(robust.loc[robust["corruption"] == "gaussian_noise", "severity"]) == {1, 3}
    ac = tables.adaptive_classification
    assert set(ac["kind"]) == {"sweep", "head", "oracle", "match"}
    assert set(tables.adaptive_retrieval["method"]) == {"exact", "adaptive", "funnel"}
    assert any("failed" in note for note in tables.notes)
    assert tables.runs["toy_default"]["git_revision"] == "abc1234"


def test_aggregate_wins_over_the_runs_it_covers(tmp_path: Path) -> None:
    """A sweep folder with runs and their aggregate: each run's numbers are counted once."""
    root = tmp_path / "sweep"
    write_run(root / "0")
    rows = load.load_results(root).classification
    # The aggregate of the same folder names run "0" and holds the same numbers.
    path = root / "aggregate" / "results.csv"
    path.parent.mkdir()
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(load.AGGREGATE_COLUMNS)
        for d in DIMS:
            writer.writerow(["toy", "0", "ok", 0, "mrl", d, "eval", "head_top1", _acc("mrl", d)])
    both = load.load_results(root).classification
    assert len(both[both["method"] == "mrl"]) == len(DIMS) == len(rows[rows["method"] == "mrl"])


def test_reference_absent_or_present(tmp_path: Path, reference: Path) -> None:
    assert load.load_reference(tmp_path / "nowhere") is None
    ref = load.load_reference(reference)
    assert ref is not None
    assert set(ref.curves["method"]) == {"mrl", "ff", "svd"}
    assert ref.curves["value"].max() < 1.0  # fractions, not percent


# ---------------------------------------------------------------------------------------------
# Figures


def test_plots_draw_what_exists_and_report_what_is_missing(tmp_path: Path, reference: Path):
    root = tmp_path / "partial"
    write_aggregate(root, methods=("mrl", "ff", "random"), skip={("ff", 16)})
    # The sweep declared MRL-E too: its absence is flagged; SVD was never asked for.
    write_sweep_file(root / "multirun.yaml", "mrl,mrl_e,ff2,ff4")
    tables = load.load_results(root)
    ref = load.load_reference(reference)
    (drawn,) = plots.classification_figures(tables, ref)
    assert drawn.figure is not None
    assert any(note.startswith("no MRL-E rows") for note in drawn.missing)
    assert not any(note.startswith("no SVD rows") for note in drawn.missing)
    assert "dim 16 missing for ff" in drawn.missing
    labels = {t.get_text() for ax in drawn.figure.axes if ax.get_legend()
              for t in ax.get_legend().get_texts()}  # fmt: skip
    assert {"MRL", "FF", "random features"} <= labels
    assert list(drawn.table.index) == ["MRL", "FF", "random features"]
    assert drawn.table.loc["FF", "16"] == "–"
    assert "±" in drawn.table.loc["MRL", "2"]  # two seeds: mean ± std
    assert drawn.png()[:8] == b"\x89PNG\r\n\x1a\n"

    # No reference: drawn without the overlay, and said so.
    (bare,) = plots.classification_figures(tables, None)
    assert bare.figure is not None and plots.NO_REFERENCE in bare.missing

    # Groups without rows: no figure, a note.
    for group in ("adaptive_classification", "adaptive_retrieval"):
        (empty,) = plots.figures_for(group, tables, ref)
        assert empty.figure is None and empty.missing
    robust = tables.robustness[tables.robustness["corruption"] != "clean"]
    (only_corrupted,) = plots.figures_for(
        "robustness", load.Tables(root, *[pd.DataFrame()] * 4, robust), ref
    )
    assert only_corrupted.figure is not None
    assert any("no clean" in note for note in only_corrupted.missing)


def test_adaptive_figures_without_summary(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    (run / "eval" / "summary.json").unlink()
    tables = load.load_results(run)
    (drawn,) = plots.adaptive_classification_figures(tables, None)
    assert drawn.figure is not None
    assert any("head" in note for note in drawn.missing)
    assert any("oracle" in note for note in drawn.missing)


def test_palette_gives_each_method_one_colour_across_figures(results: Path, reference: Path):
    tables = load.load_results(results)
    ref = load.load_reference(reference)
    seen: dict[str, set[str]] = {}
    for drawn in plots.classification_figures(tables, ref) + plots.retrieval_figures(tables, ref):
        for ax in drawn.figure.axes:
            for handle, name in zip(*ax.get_legend_handles_labels()):
                method = {plots.label(m): m for m in plots.PALETTE}.get(name)
                line = handle.lines[0] if hasattr(handle, "lines") else handle  # error bars
                if method:
                    seen.setdefault(method, set()).add(matplotlib_colour(line.get_color()))
    assert {"mrl", "ff", "svd"} <= set(seen)
    for method, colours in seen.items():
        assert colours == {matplotlib_colour(plots.PALETTE[method])}, method
    assert len(set(plots.PALETTE.values())) == len(plots.PALETTE)
    assert plots.color("something_new") == plots.color("something_new")


def matplotlib_colour(value) -> str:
    from matplotlib.colors import to_hex

    return to_hex(value)


# ---------------------------------------------------------------------------------------------
# The command


def test_cli_writes_every_figure_and_one_html_page(
    results: Path, reference: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "report"
    cli.main([str(results), "--out", str(out), "--reference", str(reference)])
    studies = {
        "classification": ["toy", "toy_table1"],
        "retrieval": ["toy", "toy_table1"],
        "robustness": ["toy", "toy_table1"],
        "adaptive_classification": [None],
        "adaptive_retrieval": [None],
        "retrieval_time": [None],
    }
    names = [g if s is None else f"{g}__{s}" for g, ss in studies.items() for s in ss]
    for name in names:
        for fmt in ("png", "svg"):
            assert (out / f"{name}.{fmt}").stat().st_size > 1000, name
    assert (out / "classification__toy.png").read_bytes()[:4] == b"\x89PNG"
    assert "<svg" in (out / "retrieval__toy.svg").read_text()
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries

    page = (out / "index.html").read_text()
    parser = _Collector()
    parser.feed(page)
    assert len(parser.images) == len(names)
    assert all(src.startswith("data:image/png;base64,") for src in parser.images)
    assert parser.tags.get("table", 0) >= len(names) + 1  # each figure's table, and the runs
    assert parser.missing_items >= 1
    assert "abc1234" in page and "Fake GPU 80GB" in page  # the run's provenance
    printed = capsys.readouterr().out
    assert "missing: no SVD rows" not in printed.split("classification__toy_table1")[1][:200]
    assert "missing:" in printed


def test_cli_svg_only_and_no_reference(tmp_path: Path, capsys, monkeypatch) -> None:
    run = write_run(tmp_path / "run")
    # Only the train-time results: one figure, inline SVG in the page.
    for name in ("metrics.csv", "adaptive_classification.csv", "adaptive_retrieval.csv"):
        (run / "eval" / name).unlink()
    monkeypatch.setenv("MRL_REFERENCE_DIR", str(tmp_path / "absent"))
    monkeypatch.setenv("MRL_OUTPUT_ROOT", str(tmp_path / "outputs"))
    cli.main([str(run), "--formats", "svg"])
    # The default output folder lies outside the results read, named after them.
    assert not (run / "report").exists()
    out = tmp_path / "outputs" / "report" / "run"
    assert sorted(p.name for p in out.iterdir()) == ["classification.svg", "index.html"]
    page = (out / "index.html").read_text()
    assert "<svg" in page and "<img" not in page
    assert "no paper reference" in capsys.readouterr().out


@pytest.mark.parametrize("make", ["empty", "junk", "missing"])
def test_cli_error_exit_for_nothing_recognisable(tmp_path: Path, capsys, make: str) -> None:
    target = tmp_path / "d"
    if make != "missing":
        target.mkdir()
    if make == "junk":
        (target / "notes.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SystemExit) as exc:
        cli.main([str(target)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mrl-report: error: ")


def test_console_script_is_declared() -> None:
    text = (REPO / "pyproject.toml").read_text()
    assert 'mrl-report = "mrl.cli.report:main"' in text


# ---------------------------------------------------------------------------------------------
# Provenance


def test_collect_provenance_reads_what_travels_with_a_run(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    prov = provenance.collect_provenance(run)
    assert prov["seed"] == 0 and prov["wall_time_s"] == 12.5
    assert prov["git_revision"] == "abc1234" and prov["hardware"] == "Fake GPU 80GB"
    assert prov["config"]["name"] == "toy"
    # A run without results.json: the Hydra config, and unknowns.
    bare = tmp_path / "bare"
    (bare / ".hydra").mkdir(parents=True)
    (bare / ".hydra" / "config.yaml").write_text("name: x\nseed: 3\n")
    prov = provenance.collect_provenance(bare)
    assert prov["seed"] == 3 and prov["git_revision"] == "unknown"
    assert prov["hardware"] == "unknown"
    line = provenance.summarize([provenance.collect_provenance(run)] * 2)
    assert line == "made from 2 runs, git abc1234, Fake GPU 80GB"


def test_current_provenance(monkeypatch) -> None:
    prov = provenance.current_provenance()
    assert set(prov) >= {"git_revision", "git_dirty", "hostname", "platform", "python", "torch"}
    assert prov["python"].count(".") == 2 and prov["git_revision"]
    json.dumps(prov)  # stored in results.json

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    prov = provenance.current_provenance()
    assert prov["git_revision"] == "unknown" and prov["git_dirty"] is None


# ---------------------------------------------------------------------------------------------
# Notebooks


def test_notebooks_are_stored_without_outputs() -> None:
    import nbformat

    assert [p.stem[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.cells[0].cell_type == "markdown"
        params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1 and "RESULTS = Path(" in params[0].source
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path.name
                assert "matplotlib" not in cell.source and "plt." not in cell.source


def execute_notebooks() -> list:
    """Run every notebook in its own fresh python3 kernel (this interpreter), side by side."""
    import nbformat
    from nbclient import NotebookClient

    notebooks = [nbformat.read(path, as_version=4) for path in NOTEBOOKS]
    clients = [
        NotebookClient(
            nb,
            timeout=120,
            kernel_name="python3",
            resources={"metadata": {"path": str(REPO / "notebooks")}},
        )  # fmt: skip
        for nb in notebooks
    ]

    async def run_all() -> None:
        # One kernel per notebook, run side by side: kernel start-up dominates.
        await asyncio.gather(*(client.async_execute() for client in clients))

    asyncio.run(run_all())
    found = []
    for path, nb in zip(NOTEBOOKS, notebooks):
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"], path.name
        html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
        assert "data:image/png;base64," in html, path.name  # the figure was displayed
        assert "<table" in html, path.name  # and its table
        found.append("".join(o.get("text", "") for o in outputs if o.output_type == "stream"))
    return found


def test_notebooks_execute_top_to_bottom(results: Path, reference: Path, monkeypatch) -> None:
    """Each notebook runs in a fresh python3 kernel (this interpreter) on fabricated results."""
    monkeypatch.setenv("MRL_RESULTS", str(results))
    monkeypatch.setenv("MRL_REFERENCE_DIR", str(reference))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for printed in execute_notebooks():
        assert str(results) in printed and str(reference) in printed


def test_notebooks_run_on_the_committed_results(monkeypatch) -> None:
    """With no override, the notebooks draw the committed small-scale results."""
    monkeypatch.delenv("MRL_RESULTS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for printed in execute_notebooks():
        assert "experiments/results" in printed


def test_python3_kernel_is_this_interpreter() -> None:
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    km = KernelManager(kernel_name="python3")
    cmd = km.format_kernel_cmd()
    assert cmd[0] == sys.executable or os.path.realpath(cmd[0]) == os.path.realpath(
        sys.executable
    ), (spec.argv, cmd)


def test_retrieval_time_figure_and_table() -> None:
    from mrl.report.plots import plot_retrieval_time

    frame = pd.DataFrame(
        [
            {"method": "exact", "first_stage": "exact", "dims": "2048", "shortlists": "10",
             "map@10": 0.88, "ms_per_query": 24.0, "recall_vs_exact@10": 1.0},
            {"method": "adaptive", "first_stage": "ivf", "dims": "64>2048",
             "shortlists": "200>10", "map@10": 0.878, "ms_per_query": 0.6,
             "recall_vs_exact@10": 0.84},
            {"method": "adaptive", "first_stage": "hnsw", "dims": "32>2048",
             "shortlists": "200>10", "map@10": 0.876, "ms_per_query": 0.5,
             "recall_vs_exact@10": 0.74},
        ]
    ).assign(study="toy", dataset="Toy", run="r0", seed=0)  # fmt: skip
    drawn = plot_retrieval_time(frame)
    assert drawn.figure is not None and not drawn.missing
    table = drawn.table.set_index("dims")
    assert table.loc["64>2048", "speed-up vs exact"] == 40.0
    assert table.loc["32>2048", "map@10"] == 87.6
    assert table.loc["32>2048", "recall_vs_exact@10"] == 74.0
    # Without measured times there is nothing to draw, and the note says so.
    empty = plot_retrieval_time(frame.drop(columns=["ms_per_query"]))
    assert empty.figure is None and "times" in empty.missing[0]


# ---------------------------------------------------------------------------------------------
# The page


class _Sections(HTMLParser):
    """Per `<section>` of the page: its `<h2>` count, and whether a table lies in `<details>`."""

    def __init__(self) -> None:
        super().__init__()
        self.h2: dict[str, int] = {}
        self.folded_tables: dict[str, int] = {}
        self.footers = 0
        self._section = ""
        self._details = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self._section = attrs.get("id", "")
        elif tag == "h2":
            self.h2[self._section] = self.h2.get(self._section, 0) + 1
        elif tag == "details":
            self._details += 1
        elif tag == "table" and self._details:
            self.folded_tables[self._section] = self.folded_tables.get(self._section, 0) + 1
        elif tag == "footer" or (tag == "p" and attrs.get("class") == "footer"):
            self.footers += 1

    def handle_endtag(self, tag):
        if tag == "details":
            self._details -= 1


def _page(results: Path, reference: Path, tmp_path: Path) -> str:
    out = tmp_path / "page"
    cli.main([str(results), "--out", str(out), "--reference", str(reference), "--formats", "png"])
    return (out / "index.html").read_text()


def test_page_has_one_heading_per_section_one_footer_and_readable_contents(
    results: Path, reference: Path, tmp_path: Path
) -> None:
    page = _page(results, reference, tmp_path)
    parser = _Sections()
    parser.feed(page)
    assert parser.h2 and set(parser.h2.values()) == {1}
    assert parser.footers == 1
    assert "Classification — toy_table1" in page and "Adaptive classification" in page
    assert ">classification__toy<" not in page


def test_page_image_leaves_out_the_figure_title_and_footer(results: Path) -> None:
    (drawn, *_) = plots.classification_figures(load.load_results(results), None)
    import io

    from PIL import Image

    full = Image.open(io.BytesIO(drawn.png()))
    bare = Image.open(io.BytesIO(drawn.png(bare=True)))
    assert bare.height < full.height  # title and footer gone
    assert drawn.figure.get_suptitle()  # the file keeps them
    assert drawn.png() == drawn.png()  # and the cache still returns the titled one


def test_long_tables_are_folded_behind_their_key_rows() -> None:
    from mrl.report.figure import LONG_TABLE_ROWS, table_html

    long = pd.DataFrame({"x": range(LONG_TABLE_ROWS + 1)})
    folded = table_html(long, long.head(2))
    assert folded.index("<details>") > folded.index("<table")  # key rows shown first
    assert "<details>" not in table_html(long.head(LONG_TABLE_ROWS))
    from mrl.report.figure import Drawn, figure_block

    block = figure_block(Drawn("toy", "toy", None, long, summary=long.head(2)))
    parser = _Sections()
    parser.feed(block)
    assert parser.folded_tables == {"toy": 1}


def test_adaptive_retrieval_dims_in_numeric_order_and_measured_speedup() -> None:
    rows = [
        {"method": "exact", "dims": "256", "shortlists": "10", "map@10": 0.9,
         "mflops_per_query": 14.0, "ms_per_query": 0.4},
    ] + [
        {"method": "adaptive", "dims": f"{d}>256", "shortlists": "200>10", "map@10": 0.85,
         "mflops_per_query": d / 10, "ms_per_query": 0.1}
        for d in (128, 16, 2, 32)
    ]  # fmt: skip
    frame = pd.DataFrame(rows).assign(study="toy", dataset="Toy", run="r0", seed=0)
    drawn = plots.plot_adaptive_retrieval(frame)
    assert list(drawn.table["dims"]) == ["256", "2>256", "16>256", "32>256", "128>256"]
    assert list(drawn.table["measured speed-up"]) == [1.0, 4.0, 4.0, 4.0, 4.0]
    assert len(drawn.figure.axes) == 3  # the measured speed-up panel
    # Without times: no third panel.
    bare = plots.plot_adaptive_retrieval(frame.drop(columns=["ms_per_query"]))
    assert len([ax for ax in bare.figure.axes if ax.get_visible()]) == 2


def test_absent_methods_flagged_only_where_declared(tmp_path: Path) -> None:
    single = write_run(tmp_path / "single")
    (drawn,) = plots.classification_figures(load.load_results(single), None)
    assert not any(n.startswith("no ") and "rows" in n for n in drawn.missing)
    declared = write_run(tmp_path / "declared")
    write_sweep_file(declared / ".hydra" / "hydra.yaml", "mrl,mrl_e")
    (drawn,) = plots.classification_figures(load.load_results(declared), None)
    assert any(n.startswith("no MRL-E rows") for n in drawn.missing)
    assert not any(n.startswith("no FF rows") for n in drawn.missing)


def test_adaptive_classification_labels_each_marker(results: Path) -> None:
    tables = load.load_results(results)
    (drawn,) = plots.adaptive_classification_figures(tables, None)
    texts = [t.get_text() for t in drawn.figure.axes[0].texts]
    assert any("oracle: 3.1 dims" in t for t in texts)
    assert any("27.0 dims" in t for t in texts)
    assert set(drawn.summary["point"]) >= {"oracle", "matches the largest head"}


def test_robustness_panels_share_the_y_axis(results: Path) -> None:
    tables = load.load_results(results)
    drawn = plots.robustness_figures(tables, None)[0]
    visible = [ax for ax in drawn.figure.axes if ax.get_visible()]
    first, second = visible[:2]  # two corruptions of the first metric
    assert first.get_shared_y_axes().joined(first, second)
    assert first.get_ylim() == second.get_ylim()
    assert not any(t.get_visible() and t.get_text() for t in second.get_yticklabels())


def test_provenance_shown_for_recorded_runs_one_line_for_others(tmp_path: Path) -> None:
    from mrl.report.html import provenance_html

    run = write_run(tmp_path / "run")
    results = json.loads((run / "results.json").read_text())
    results["provenance"].update(
        mrl_version="0.1.0", command="mrl-train seed=0", date="2026-12-04T10:00:00+00:00"
    )
    (run / "results.json").write_text(json.dumps(results))
    old = tmp_path / "old"
    (old / ".hydra").mkdir(parents=True)
    (old / ".hydra" / "overrides.yaml").write_text("- seed=3\n- method=mrl\n")
    recorded = provenance.collect_provenance(run)
    legacy = provenance.collect_provenance(old)
    assert legacy["command"] == "mrl-train seed=3 method=mrl"
    assert provenance.is_recorded(recorded) and not provenance.is_recorded(legacy)
    text = provenance_html({"run": recorded, "old": legacy})
    assert "abc1234" in text and "mrl-train seed=0" in text and "2026-12-04" in text
    assert "not recorded for this run: old" in text
    assert "unknown" not in text
    now = provenance.current_provenance()
    assert now["mrl_version"] and now["date"] and now["command"]


def _screenshot_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "report_screenshot", REPO / "experiments" / "report_screenshot.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_screenshot_without_chromium_says_so_and_exits_2(tmp_path: Path, capsys, monkeypatch):
    shot = _screenshot_module()
    (tmp_path / "index.html").write_text("<html><body>x</body></html>")
    monkeypatch.setattr(shot.shutil, "which", lambda name: None)
    assert shot.main([str(tmp_path)]) == 2
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "no Chromium" in printed[0]


@pytest.mark.skipif(
    _screenshot_module().find_browser() is None, reason="no Chromium installed to render with"
)
def test_screenshot_renders_the_whole_page(tmp_path: Path) -> None:
    from PIL import Image

    shot = _screenshot_module()
    page = tmp_path / "index.html"
    page.write_text("<html><body style='margin:0'>" + "<p>row</p>" * 60 + "</body></html>")
    assert shot.main([str(page), "--out", str(tmp_path / "s.png"), "--width", "640"]) == 0
    with Image.open(tmp_path / "s.png") as image:
        assert image.width == 640 and image.height > 60 * 16


def test_page_tables_drop_a_bare_row_counter_but_keep_a_named_index() -> None:
    import pandas as pd

    from mrl.report.figure import _frame_html

    rows = pd.DataFrame({"method": ["MRL", "FF"], "top1": [92.5, 91.0]})
    assert "<th>0</th>" not in _frame_html(rows) and "<td>MRL</td>" in _frame_html(rows)
    named = rows.set_index("method")
    assert "<th>MRL</th>" in _frame_html(named)
