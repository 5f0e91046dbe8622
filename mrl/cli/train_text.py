"""`mrl-train-text`: train a text task from `conf/text.yaml`, test it, write `results.json`.

Tasks (`text/task=...`): `contrastive` (Matryoshka contrastive fine-tuning, reverse-dictionary
retrieval per dim), `classification` (Matryoshka heads on a text encoder, accuracy per dim) and
`dual_encoder` (image-text towers, zero-shot accuracy per dim); each names its Lightning module
in its `model:` node. The run directory receives `results.json` (atomic),
`checkpoints/last.ckpt` (see `mrl.training.lifecycle`) and, for the text-encoder tasks, the
encoder as a sentence-transformers folder `model/`. What a run builds and reports is
`mrl.text.trainer`'s.
"""

import hydra
from omegaconf import DictConfig

import mrl.training.resolvers  # noqa: F401  (registers the config resolvers before Hydra composes)
from mrl.commands import hydra_cli, run_command
from mrl.conf import CONFIG_DIR
from mrl.text.trainer import train_text


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="text")
def main(cfg: DictConfig) -> None:
    """Console entry point: bad input is one line and exit status 2 (see `run_command`)."""
    run_command("mrl-train-text", lambda: train_text(cfg))


cli = hydra_cli(main, "mrl-train-text")

if __name__ == "__main__":
    cli()
