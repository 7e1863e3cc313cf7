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


class GradientUpdate:
    """``--optimizer adamw`` (the default): forward, backward through the frozen backbone, clip, AdamW step.

    The training loop (``loop.Trainer``) asks an update for five things: how to describe itself, how to resume
    from a checkpoint, how Accelerate prepares it, one step on one batch, and how to checkpoint it. The other
    update, forward-only prompt search, is ``search.CmaUpdate``.
    """

    checkpoints = True  # its state (parameters, AdamW moments, schedule) is saved for --resume

    def __init__(self, model, config: TrainConfig, n_features: int) -> None:
        self.config = config
        self.lr = self.planned_lr(model, config)
        self.optimizer = adamw(model.parameter_groups(config.weight_decay), self.lr)
        self.scheduler = lr_scheduler(self.optimizer, config, n_features)
        self.trainable: list[torch.nn.Parameter] = []

    @classmethod
    def check(cls, model, config: TrainConfig) -> None:
        """Refuse, before anything is written, a run this update cannot do (AdamW can do any)."""

    @classmethod
    def planned_lr(cls, model, config: TrainConfig) -> float:
        """The peak learning rate the run will use: the given one, or the method's default."""
        return config.lr or model.learning_rate()

    def describe(self) -> str:
        return f"lr {self.lr:g}"

    def remedy(self) -> str:
        """What to change when the loss diverges."""
        return f"lower --lr (this run used {self.lr:g})"

    def resume(self, output_dir, model) -> dict:
        from . import checkpoint

        return checkpoint.load(output_dir, model, self.optimizer, self.scheduler)

    def prepare(self, accelerator, model):
        model, self.optimizer, self.scheduler = accelerator.prepare(model, self.optimizer, self.scheduler)
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        return model

    def step(self, accelerator, model, unwrapped, batch: dict, labels: torch.Tensor, loss_fn) -> float:
        """Forward, backward and (at accumulation boundaries) an optimizer step; the batch's loss.

        ``batch`` holds the model's inputs only (its labels are ``labels``); ``model`` is Accelerate's prepared
        wrapper of ``unwrapped``, whose method computes the training loss."""
        with accelerator.accumulate(model):
            loss = unwrapped.training_loss(batch, labels, loss_fn, forward=model)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(self.trainable, self.config.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
        return loss.item()

    def save(self, output_dir, trainable: dict, loop: dict, run: dict) -> None:
        """Write the resumable checkpoint (the main process calls this)."""
        from . import checkpoint

        checkpoint.save(output_dir, trainable, self.optimizer.optimizer, self.scheduler.scheduler, loop, run=run)
