"""The stages of an evaluation: each one announced, its steps shown as a progress bar on a
terminal (plain log lines otherwise), and its wall time kept for the summary's `timings`."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

log = logging.getLogger("mrl.eval")

T = TypeVar("T")


def stdout_is_terminal() -> bool:
    """Whether standard output is an interactive terminal."""
    try:
        return bool(sys.stdout.isatty())
    except (AttributeError, ValueError):  # replaced by an object without it, or closed
        return False


class StageClock:
    """Wall seconds per stage (`seconds`, in the order the stages ran) and their progress.

    `interactive` (default: whether stdout is a terminal) picks a tqdm bar per stage over
    one log line per step."""

    def __init__(self, interactive: bool | None = None) -> None:
        self.interactive = stdout_is_terminal() if interactive is None else interactive
        self.seconds: dict[str, float] = {}
        self.step_seconds: dict[str, dict[str, float]] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as stage `name`, with a line when it starts and when it ends."""
        log.info("%s ...", name)
        t0 = time.perf_counter()
        yield
        elapsed = time.perf_counter() - t0
        self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
        log.info("%s done in %.1f s", name, elapsed)

    def steps(self, items: Iterable[T], name: str, unit: str = "step") -> Iterator[T]:
        """Yield `items` as the steps of stage `name`: a bar on a terminal, else one line per
        step (with the seconds it took); the whole loop is timed as `name`."""
        items = list(items)
        with self.stage(name):
            steps = self.step_seconds.setdefault(name, {})
            iterator = items if not self.interactive else tqdm_of(items, name, unit)
            for i, item in enumerate(iterator, 1):
                t0 = time.perf_counter()
                yield item
                steps[str(item)] = time.perf_counter() - t0
                if not self.interactive:
                    log.info("%s: %s %s (%d/%d) in %.1f s", name, unit, item, i, len(items),
                             steps[str(item)])  # fmt: skip

    def rounded(self) -> dict[str, float]:
        """`seconds` rounded to 0.01 s, with each stepped stage's steps under `<stage>/<step>`,
        for the summary."""
        out = {name: round(s, 2) for name, s in self.seconds.items()}
        for name, steps in self.step_seconds.items():
            out.update({f"{name}/{step}": round(s, 2) for step, s in steps.items()})
        return out


def tqdm_of(items: list, name: str, unit: str) -> Iterable:
    """A tqdm bar over `items`."""
    from tqdm.auto import tqdm

    return tqdm(items, desc=name, unit=unit, leave=False)
