"""What a trained model's smallest prefixes look like: why a head at dim m fails when it does.

    python experiments/studies/prefix_diagnostics.py <run dir> [<run dir> ...] --dims 2,4 \
        --out experiments/results/fmnist_mrl_e_adamw/prefix_diagnostics.csv

Reads each run's test-set embeddings (`embeddings/query/`, written by `mrl-eval`) and its
checkpoint's head, and per dim m reports, in one CSV row:

- `head_top1`: the dim-m head's accuracy, recomputed here from the embeddings;
- `zero_prefix`: the fraction of test images whose first m features are all zero (the features
  follow a ReLU, so such an image gets the bias alone: one class for all of them);
- `top_class_share`: the share of the test images given the most frequent predicted class;
- `bias_to_signal`: the spread over classes of the bias, against the mean spread over classes
  of the feature term `z[:m] W[:, :m]^T` (above 1: the bias decides most predictions);
- `weight_norm`: the mean norm of the head's weight columns for the first m features, and
  `feature_norm`: the mean norm of `z[:m]`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from mrl.eval.embeddings import read_split
from mrl.runs.checkpoints import load_checkpoint
from mrl.runs.files import write_csv

PROG = "prefix_diagnostics"


def head_weights(state: dict, nesting: list[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """`(W, b)` of the dim-`dim` head: the first `dim` columns of a tied head, else its own."""
    if "head.linear.weight" in state:  # MRL-E: one matrix shared by every dim
        weight = state["head.linear.weight"][:, :dim]
        bias = state.get("head.linear.bias")
    else:
        i = nesting.index(dim)
        weight, bias = state[f"head.linears.{i}.weight"], state.get(f"head.linears.{i}.bias")
    weight = weight.double().numpy()
    bias = np.zeros(weight.shape[0]) if bias is None else bias.double().numpy()
    return weight, bias


def diagnose(run: Path, dims: list[int]) -> list[dict]:
    """One row per dim of one run (see the module docstring)."""
    results = json.loads((run / "results.json").read_text())
    nesting = list(results["nesting"])
    state = load_checkpoint(run / "checkpoints" / "last.ckpt", where=str(run))["state_dict"]
    features, labels = read_split(run / "embeddings" / "query", mmap=False)
    features = features.astype(np.float64)
    optimizer = results["config"]["optimizer"]
    head = results["config"]["head"]
    rows = []
    for dim in dims:
        if dim not in nesting:
            continue
        weight, bias = head_weights(state, nesting, dim)
        signal = features[:, :dim] @ weight.T
        predicted = (signal + bias).argmax(axis=1)
        counts = np.bincount(predicted, minlength=weight.shape[0])
        rows.append({
            "run": run.name,
            "method": results["method"],
            "optimizer": optimizer["_target_"].rsplit(".", 1)[-1],
            "lr": optimizer["lr"],
            "weight_decay": optimizer.get("weight_decay"),
            "bias": head.get("bias", True),
            "seed": results["seed"],
            "dim": dim,
            "head_top1": float((predicted == labels).mean()),
            "zero_prefix": float((np.abs(features[:, :dim]).sum(axis=1) == 0).mean()),
            "top_class_share": float(counts.max() / counts.sum()),
            "bias_to_signal": float(bias.std() / signal.std(axis=1).mean()),
            "weight_norm": float(np.linalg.norm(weight, axis=0).mean()),
            "feature_norm": float(np.linalg.norm(features[:, :dim], axis=1).mean()),
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--dims", default="2,4")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    dims = [int(d) for d in args.dims.split(",")]
    for run in args.runs:
        for need in ("results.json", "checkpoints/last.ckpt", "embeddings/query/features.npy"):
            if not (run / need).is_file():
                print(f"{PROG}: error: {run} has no {need} (run mrl-eval on it first)",
                      file=sys.stderr)  # fmt: skip
                sys.exit(2)
    rows = [row for run in args.runs for row in diagnose(run, dims)]
    write_csv(args.out, rows)
    for r in rows:
        print(
            f"{r['run'][:48]:48} dim {r['dim']:>3}: top-1 {100 * r['head_top1']:6.2f}  "
            f"zero prefix {100 * r['zero_prefix']:5.1f}%  "
            f"top class {100 * r['top_class_share']:5.1f}%  "
            f"bias/signal {r['bias_to_signal']:.2f}  |w| {r['weight_norm']:.3f}  "
            f"|z| {r['feature_norm']:.2f}"
        )


if __name__ == "__main__":
    main()
