"""What is trained at what rate: AdamW over the trainable parameters and the warmup-then-decay schedule.

The default peak rate depends on the method (a deep prefix, an input prompt and a whole
backbone want very different rates); the schedule is rebuilt from the run's settings on
every start, so a resumed run with more ``--epochs`` spreads its remaining decay further.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .model import MethodConfig
from .trainconfig import TrainConfig

DEFAULT_LR = {"ptv2": 5e-3, "prompt-tuning": 3e-2, "ptv1": 5e-3, "finetune": 5e-5, "linear-probe": 5e-3}
# Through the MLP, one Adam step moves the prefix tens of times further than the same rate on the raw prefix, and
# 5e-3 collapsed CB and RTE to one class (BENCHMARKS.md, "Why the MLP reparameterisation diverges").
REPARAM_LR = 5e-4


def default_lr(method: MethodConfig) -> float:
    """The peak learning rate a method trains at when the user names none."""
    if method.method == "ptv2" and method.reparam:
        return REPARAM_LR
    return DEFAULT_LR[method.method]


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


def adamw(trainable: list[tuple[str, torch.nn.Parameter]], weight_decay: float, lr: float) -> torch.optim.AdamW:
    """AdamW with no weight decay on prompts, embeddings, biases and norms (1-D parameters)."""
    decayed = [p for n, p in trainable if p.dim() >= 2 and "embedding" not in n and "prompt" not in n]
    plain = [p for n, p in trainable if not (p.dim() >= 2 and "embedding" not in n and "prompt" not in n)]
    return torch.optim.AdamW(
        [{"params": decayed, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}], lr=lr
    )


def lr_scheduler(optimizer, config: TrainConfig, n_features: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Warmup then decay over the run's optimizer steps (recomputed from ``--epochs`` on a resume)."""
    steps_per_epoch = math.ceil(n_features / config.batch_size / config.grad_accum)
    total = steps_per_epoch * config.epochs
    warmup = int(total * config.warmup_ratio)
    factor = lr_lambda(config.scheduler, warmup, total, config.decay_gamma, steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
