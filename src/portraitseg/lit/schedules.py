"""Learning-rate schedules as ``LambdaLR`` multipliers, stepped once per optimizer step."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

SCHEDULES = ("constant", "poly", "cosine")


def warmup_schedule(
    optimizer: Optimizer,
    total_steps: int,
    name: str = "poly",
    warmup_steps: int = 0,
    power: float = 0.9,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Linear warmup over ``warmup_steps``, then ``poly`` ((1-t)^power), ``cosine`` or ``constant``.

    The multiplier decays from 1 to ``min_lr_ratio`` over the remaining steps.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; known: {', '.join(SCHEDULES)}")
    total_steps = max(int(total_steps), 1)
    warmup_steps = min(int(warmup_steps), total_steps - 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        t = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        if name == "poly":
            decay = (1 - t) ** power
        elif name == "cosine":
            decay = 0.5 * (1 + math.cos(math.pi * t))
        else:
            decay = 1.0
        return min_lr_ratio + (1 - min_lr_ratio) * decay

    return LambdaLR(optimizer, factor)
