"""Learning-rate schedules as `LambdaLR` factories that know the run's length in steps."""

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_steps_of(total_steps: int, steps_per_epoch: float, warmup_epochs: float) -> int:
    """The number of warm-up steps of a schedule: `warmup_epochs` epochs of `steps_per_epoch`
    steps, rounded, and fewer than `total_steps`."""
    if total_steps < 1:
        raise ValueError(f"a schedule needs at least one step, got total_steps={total_steps}")
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
    return min(int(round(warmup_epochs * steps_per_epoch)), total_steps - 1)


def warmup_linear(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: float,
    warmup_epochs: float = 0.0,
    start_factor: float = 0.0,
) -> LambdaLR:
    """Linear warm-up from `start_factor * lr` to the peak lr, then linear decay to 0.

    The paper's ImageNet recipe peaks at epoch 2 of 40 (`warmup_epochs=2`).
    """
    warmup = warmup_steps_of(total_steps, steps_per_epoch, warmup_epochs)

    def factor(step: int) -> float:
        if step < warmup:
            return start_factor + (1.0 - start_factor) * step / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return LambdaLR(optimizer, factor)


def warmup_cosine(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: float,
    warmup_epochs: float = 0.0,
    final_factor: float = 0.0,
) -> LambdaLR:
    """Linear warm-up to the peak lr, then cosine decay to `final_factor * lr`."""
    warmup = warmup_steps_of(total_steps, steps_per_epoch, warmup_epochs)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total_steps - 1 - warmup))
        return final_factor + (1.0 - final_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
