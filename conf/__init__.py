"""The Hydra configs that ship with the package: `train.yaml` (`mrl-train`), `eval.yaml`
(`mrl-eval`), `text.yaml` (`mrl-train-text`) and their groups. A folder of one's own is added in
front of them with `--config-dir DIR` (or `hydra.searchpath=[file://DIR]`)."""

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent
