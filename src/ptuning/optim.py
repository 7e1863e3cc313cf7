"""What is trained at what rate: AdamW over the trainable parameters and the warmup-then-decay schedule.

The default peak rate depends on the method (a deep prefix, an input prompt and a whole
backbone want very different rates); the schedule is rebuilt from the run's settings on
every start, so a resumed run with more ``--epochs`` spreads its remaining decay further.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .trainconfig import TrainConfig


def lr_lambda(kind: str, warmup: int, total: int, gamma: float, steps_per_epoch: int) -> Callable[[int], float]:
    """Warmup to the peak rate, then linear decay to 0 or ``gamma`` per epoch."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "linear":
            return max(0.0, (total - step) / max(1, total - warmup))
        if kind == "exponential":
            return gamma ** ((step - warmup) / max(1, steps_per_epoch))
        return 1.0

    return factor


def adamw(groups: list[dict], lr: float) -> torch.optim.AdamW:
    """AdamW over the model's parameter groups: which parameters decay is each method's decision
    (``Method.parameter_groups``: by shape, never the prompt itself)."""
    return torch.optim.AdamW(groups, lr=lr)


def lr_scheduler(optimizer, config: TrainConfig, n_features: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Warmup then decay over the run's optimizer steps (recomputed from ``--epochs`` on a resume)."""
    steps_per_epoch = math.ceil(n_features / config.batch_size / config.grad_accum)
    total = steps_per_epoch * config.epochs
    warmup = int(total * config.warmup_ratio)
    factor = lr_lambda(config.scheduler, warmup, total, config.decay_gamma, steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
