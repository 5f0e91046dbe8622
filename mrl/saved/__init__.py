"""A saved run or checkpoint → its model: the one place that rebuilds a trained encoder (and
nested head) from what `mrl-train` or `mrl-train-text` wrote, or from the authors' released
ResNet-50 weights. `mrl-eval`, `mrl-export`, `mrl.load` and the benchmarks all load through it."""

from mrl.saved.inputs import ImageInput, image_input
from mrl.saved.model import TEXT_TASKS, SavedModel, check_dims, load_saved, quiet_transformers
from mrl.saved.target import eval_target, saved_for_eval

__all__ = [
    "TEXT_TASKS",
    "ImageInput",
    "SavedModel",
    "check_dims",
    "eval_target",
    "image_input",
    "load_saved",
    "quiet_transformers",
    "saved_for_eval",
]
