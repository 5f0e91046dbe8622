"""2D Matryoshka on MiniLM: retrieval quality at every (layer, dim), against plain MRL.

Three fine-tunings of all-MiniLM-L6-v2 on the same WordNet (definition, lemma) pairs, batch size,
number of steps, learning rate, schedule, gradient clipping and seed (the side-by-side's
setting, `vs_sentence_transformers.py`), through `mrl-train-text`'s contrastive task:

- `mrl`: the Matryoshka contrastive loss on the last layer's prefixes (plain MRL, full depth);
- `2dmse`: `experiment=text/2dmse` (the last layer and one random earlier layer per step);
- `starbucks`: `experiment=text/starbucks` (a fixed diagonal of (layer, dim) cells).

Each trained model (and the zero-shot one) embeds the test split's reverse dictionary once with
every layer's pooled output (`encode_texts(all_layers=True)`), and every (layer, dim) cell is
scored by `mrl.eval.retrieval.evaluate_retrieval`. Outputs in `--out` (default
`experiments/results/text_2d`): `two_d.csv` (method, seed, layer, dim, metric, value; `step_ms`
at layer 0, dim 0), `two_d.md` and `two_d.png` (recall@10 heat maps, drawn from the CSV). A rerun
skips the (method, seed) runs already in the CSV; `--plot-only` redraws from it.

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=2 \\
        .venv/bin/python experiments/text/two_d.py [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# The scripts beside this file, and the experiments' shared helpers.
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
import reverse_dictionary as rd  # noqa: E402
import vs_sentence_transformers as vs  # noqa: E402  (the side-by-side's trainer and setting)
from _common import progress_log, read_csv_rows  # noqa: E402

from mrl.runs.files import atomic_write_bytes, atomic_write_text, write_csv  # noqa: E402
from mrl.runs.markdown import markdown_table  # noqa: E402

METHODS = {"zero_shot": None, "mrl": [], "2dmse": ["experiment=text/2dmse"],
           "starbucks": ["experiment=text/starbucks"]}  # fmt: skip
TITLES = {"zero_shot": "zero-shot (no fine-tuning)", "mrl": "MRL (last layer only)",
          "2dmse": "2DMSE (random layer)", "starbucks": "Starbucks (fixed cells)"}  # fmt: skip
COLUMNS = ["method", "seed", "layer", "dim", "metric", "value"]
STEM = "two_d"
DEFAULT_OUT = "experiments/results/text_2d"
HEAT_METRIC = "recall@10"

_log = progress_log("2d")


def read_rows(path: Path) -> list[dict]:
    """The rows of a `two_d.csv` (none when it does not exist)."""
    return read_csv_rows(path, ints=("seed", "layer", "dim"), floats=("value",))


def grid_scores(encoder: Any, cfg: Any, datamodule: Any, queries: rd.Side, database: rd.Side
                ) -> list[dict]:  # fmt: skip
    """recall@k, mAP@k and 1-NN at every (layer, dim): each side encoded once, all layers."""
    from mrl.text.encoders import encode_texts

    def embed(texts: list[str]) -> np.ndarray:
        return encode_texts(encoder, datamodule.tokenizer, texts, cfg.data.eval_batch_size,
                            cfg.data.max_length, all_layers=True)  # fmt: skip

    q_layers, db_layers = embed(queries[0]), embed(database[0])
    rows = []
    for layer, (q, db) in enumerate(zip(q_layers, db_layers), start=1):
        for r in rd.retrieval_scores(cfg, q, queries[1], db, database[1]):
            rows.append({"layer": layer, "dim": r["dim"], "metric": r["metric"],
                         "value": r["value"]})  # fmt: skip
    return rows


def _values(rows: list[dict], method: str, layer: int, dim: int, metric: str) -> list[float]:
    return [r["value"] for r in rows if (r["method"], r["layer"], r["dim"], r["metric"])
            == (method, layer, dim, metric)]  # fmt: skip


def _mean(rows: list[dict], method: str, layer: int, dim: int, metric: str) -> float | None:
    values = _values(rows, method, layer, dim, metric)
    return statistics.fmean(values) if values else None


def markdown(rows: list[dict], title: str) -> str:
    """Step times, each method's recall@10 grid, and the diagonal cells side by side."""
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    layers = sorted({r["layer"] for r in rows if r["layer"] > 0})
    dims = sorted({r["dim"] for r in rows if r["dim"] > 0})
    seeds = sorted({r["seed"] for r in rows})
    timings = []
    for m in methods:
        ms = [r["value"] for r in rows if r["method"] == m and r["metric"] == "step_ms"]
        if ms:
            timings.append([TITLES[m], f"{statistics.fmean(ms):.0f}"])
    lines = [f"# {title}", "", f"Seeds: {seeds}; cells are means over seeds.", ""]
    lines += ["## Time per training step (ms, median over steps)", ""]
    lines += markdown_table(["method", "ms / step"], timings, "l")
    last = max(layers, default=0)
    lines += ["", f"## The full depth (layer {last}): {HEAT_METRIC} (%, mean ± std over seeds)", ""]
    full = [[d, *(vs.mean_std(_values(rows, m, last, d, HEAT_METRIC)) for m in methods)]
            for d in dims]  # fmt: skip
    lines += markdown_table(["dim", *(TITLES[m] for m in methods)], full)
    for m in methods:
        lines += ["", f"## {TITLES[m]}: {HEAT_METRIC} (%) by layer (rows) and dim (columns)", ""]
        grid = [[layer, *("-" if (c := _mean(rows, m, layer, d, HEAT_METRIC)) is None
                          else f"{100 * c:.2f}" for d in dims)] for layer in layers]  # fmt: skip
        lines += markdown_table(["layer", *dims], grid)
    return "\n".join(lines) + "\n"


def heat_maps(rows: list[dict]) -> bytes:
    """PNG: one recall@10 heat map per method (layers x dims), a shared colour scale."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    layers = sorted({r["layer"] for r in rows if r["layer"] > 0})
    dims = sorted({r["dim"] for r in rows if r["dim"] > 0})
    grids = {m: np.array([[_mean(rows, m, layer, d, HEAT_METRIC) or np.nan for d in dims]
                          for layer in layers]) * 100 for m in methods}  # fmt: skip
    top = np.nanmax([g for g in grids.values()])
    fig, axes = plt.subplots(1, len(methods), figsize=(3.4 * len(methods), 3.2), squeeze=False)
    for ax, m in zip(axes[0], methods):
        image = ax.imshow(grids[m], origin="lower", vmin=0, vmax=top, cmap="viridis",
                          aspect="auto")  # fmt: skip
        for i in range(len(layers)):
            for j in range(len(dims)):
                value = grids[m][i, j]
                ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if value < 0.6 * top else "black")  # fmt: skip
        ax.set_xticks(range(len(dims)), [str(d) for d in dims], fontsize=7)
        ax.set_yticks(range(len(layers)), [str(layer) for layer in layers], fontsize=7)
        ax.set_xlabel("dim")
        ax.set_title(TITLES[m], fontsize=9)
    axes[0][0].set_ylabel("layer")
    fig.colorbar(image, ax=axes[0].tolist(), label=f"{HEAT_METRIC} (%)", shrink=0.9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def write_outputs(rows: list[dict], out: Path, title: str) -> None:
    write_csv(out / f"{STEM}.csv", rows, COLUMNS)
    atomic_write_text(out / f"{STEM}.md", markdown(rows, title))
    atomic_write_bytes(out / f"{STEM}.png", heat_maps(rows))


def run(
    seeds: Sequence[int] = (0, 1),
    methods: Sequence[str] = tuple(METHODS),
    max_train_synsets: int | None = rd.DEFAULT_TRAIN_SYNSETS,
    max_test_synsets: int | None = rd.DEFAULT_TEST_SYNSETS,
    batch_size: int = rd.DEFAULT_BATCH_SIZE,
    epochs: int = rd.DEFAULT_EPOCHS,
    out: str | Path = DEFAULT_OUT,
) -> list[dict]:
    """Every (method, seed) not yet in `out`'s CSV; returns all rows."""
    from mrl.config import instantiate
    from mrl.text.data import retrieval_datasets
    from mrl.training.builders import checked_datamodule

    out = Path(out)
    rows = read_rows(out / f"{STEM}.csv")
    finished = {(r["method"], r["seed"]) for r in rows}
    limits = [
        *rd.synset_limits(max_train_synsets, max_test_synsets),
        f"data.batch_size={batch_size}", f"trainer.max_epochs={epochs}",
    ]  # fmt: skip
    title = (f"2D Matryoshka fine-tuning of MiniLM on WordNet pairs ({max_train_synsets} train "
             f"synsets, batch {batch_size}, {epochs} epoch(s); test: {max_test_synsets} synsets; "
             f"each seed draws its own train and test synsets, shared by the methods of that "
             f"seed)")  # fmt: skip
    for seed in seeds:
        for method in methods:
            if (method, seed) in finished:  # the zero-shot model too: each seed has its test set
                continue
            extra = METHODS[method] or []
            cfg = rd.compose_text_config([*limits, f"seed={seed}",
                                          f"paths.run_dir={out / 'runs'}", *extra])  # fmt: skip
            datamodule = checked_datamodule(cfg.data)
            test = retrieval_datasets(datamodule.split("test"))
            queries, database = map(rd.texts_and_labels, test)
            new = []
            if METHODS[method] is None:
                _log(f"{method}: scoring every layer of the pretrained model")
                encoder = instantiate(cfg.encoder, "encoder")
            else:
                _log(f"{method}, seed {seed}: fine-tuning")
                encoder, times = vs.train_mrl(cfg, datamodule)
                new.append({"method": method, "seed": seed, "layer": 0, "dim": 0,
                            "metric": "step_ms",
                            "value": 1000 * statistics.median(times[1:] or times)})  # fmt: skip
            new += [{"method": method, "seed": seed, **r}
                    for r in grid_scores(encoder, cfg, datamodule, queries, database)]  # fmt: skip
            rows += new
            write_outputs(rows, out, title)
            _log(f"  written to {out / STEM}.csv")
    if rows:  # also when every run was already done: the tables and figure follow the CSV
        write_outputs(rows, out, title)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    vs.add_setting_arguments(p)
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--plot-only", action="store_true", help="redraw from the CSV and exit")
    a = p.parse_args(argv)
    out = Path(a.out)
    if a.plot_only:
        rows = read_rows(out / f"{STEM}.csv")
        if not rows:
            print(f"error: no results in {out / STEM}.csv; run without --plot-only first",
                  file=sys.stderr)  # fmt: skip
            raise SystemExit(2)
        atomic_write_bytes(out / f"{STEM}.png", heat_maps(rows))
    else:
        run(a.seeds, a.methods, a.max_train_synsets, a.max_test_synsets, a.batch_size,
            a.epochs, out)  # fmt: skip
    print((out / f"{STEM}.md").read_text())


if __name__ == "__main__":
    main()
