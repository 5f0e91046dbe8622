"""Silence the library messages that a correct run does not deserve, and nothing else.

Each entry names one message by its text, so a new or real warning still reaches the console.
"""

import logging
import warnings

# Lightning's advertisements for its cloud services, printed by every fresh Trainer.
LIGHTNING_TIPS = ("💡 Tip:",)
# Lightning's own use of an API that this torch deprecates: nothing a user can act on.
LIBRARY_DEPRECATIONS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",)


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
