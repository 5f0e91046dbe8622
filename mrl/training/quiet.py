"""Silence the library messages that a correct run does not deserve, and nothing else.

Each entry names one message by its text, so a new or real warning still reaches the console.
"""

import logging
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Lightning's advertisements for its cloud services, printed by every fresh Trainer.
LIGHTNING_TIPS = ("💡 Tip:",)
# Lightning's own use of an API that this torch deprecates: nothing a user can act on.
LIBRARY_DEPRECATIONS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",)
# Lightning's warning on a resume mid-epoch from a loader without `state_dict`: the position in
# the epoch then travels in the data module's state instead (`mrl.data.base.ResumableTraining`).
LOADER_NOT_RESUMABLE = (
    r"You're resuming from a checkpoint that ended before the epoch ended and your dataloader "
    r"is not resumable"
)


class _DropMessages(logging.Filter):
    """Drops the records whose message starts with one of `prefixes`."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefixes)


def silence_library_noise() -> None:
    """Install the filters (idempotent): Lightning's tips and its internal deprecations."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(LIGHTNING_TIPS))
    for message in LIBRARY_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=message)


@contextmanager
def resume_warnings_silenced(checkpoint_dir: Path, resumable_data: bool) -> Iterator[None]:
    """For the block (a resumed fit): no "Checkpoint directory <checkpoint_dir> exists and is
    not empty" (the folder holds the run's own checkpoints, which it resumes and replaces), and,
    where `resumable_data`, no "your dataloader is not resumable" (the sampler skips what the
    run trained). The same warnings about any other folder or data still show."""
    folder = re.escape(os.path.realpath(checkpoint_dir))  # as ModelCheckpoint names it
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=rf"Checkpoint directory {folder} exists and is "
                                rf"not empty\.$")  # fmt: skip
        if resumable_data:
            warnings.filterwarnings("ignore", message=LOADER_NOT_RESUMABLE)
        yield
