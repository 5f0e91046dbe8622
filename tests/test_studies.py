"""The recipe sweep's table from fabricated runs: means and standard deviations over seeds."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location(
        "recipe_table", ROOT / "experiments" / "studies" / "recipe_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipe_table_means_over_seeds(tmp_path: Path):
    for seed, top1 in ((0, 0.80), (1, 0.84)):
        job = tmp_path / f"run{seed}"
        job.mkdir()
        config = {"optimizer": {"_target_": "torch.optim.SGD", "lr": 0.1}}
        (job / "results.json").write_text(json.dumps({
            "method": "ff", "nesting": [2], "seed": seed, "config": config,
            "per_dim": [{"dim": 2, "top1": top1, "top5": 1.0}],
        }))  # fmt: skip
    recipe = _module()
    recipe.main([str(tmp_path), "--out", str(tmp_path / "out"), "--dims", "2,256"])
    text = (tmp_path / "out" / "recipe.md").read_text()
    assert "| SGD | 0.1 | ff2 | 82.00 ± 2.83 |  | 2 |" in text  # std of 80, 84 is 2.83
