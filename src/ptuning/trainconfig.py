"""How a run trains: :class:`TrainConfig`, checked the moment it is built.

Every number a user can type is checked here, once, with a one-line
:class:`PTuningError` naming the flag. The command line, a ``--config`` file
and Python callers all build a ``TrainConfig``, so none of them can start a run
that would fail (or silently misbehave) minutes later, and nothing is written
before the check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from .errors import PTuningError

SCHEDULERS = ("linear", "exponential", "constant")
# Far above any rate that trains (1e-5..1e-1), and far enough below float32's limit that AdamW's first update
# (lr / (1 - beta1), about 10 x lr) cannot overflow into a raw RuntimeError.
MAX_LR = 1e30
PRECISIONS = ("no", "bf16", "fp16")
BACKBONE_DTYPES = ("fp32", "bf16", "fp16", "int8")  # precision.py: what each means and needs
OPTIMIZERS = ("adamw", "cma")  # gradient steps (optim.GradientUpdate) or forward-only search (search.CmaUpdate)
MAX_CMA_DIM = 100_000  # CMA-ES keeps a dim x dim covariance matrix: 1e5 is already 40 GB


@dataclass
class TrainConfig:
    epochs: int = 10
    lr: float | None = None  # None: the method's default (Method.learning_rate)
    batch_size: int = 16
    eval_batch_size: int = 64
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    scheduler: str = "linear"
    decay_gamma: float = 0.9
    max_grad_norm: float = 1.0
    eval_steps: int | None = None
    patience: int | None = None
    max_minutes: float | None = None  # wall-clock cap, checked at each evaluation (shared machines, fixed budgets)
    seed: int = 42
    grad_accum: int = 1
    gradient_checkpointing: bool = False
    group_by_length: bool = False  # batch similar lengths together (less padding; changes batch composition)
    mixed_precision: str = "no"  # no | bf16 | fp16: autocast for forward passes (training and evaluation)
    backbone_dropout: float | None = None  # every dropout rate inside the backbone; None keeps the checkpoint's
    backbone_dtype: str = "fp32"  # fp32 | bf16 | fp16 | int8: how the frozen backbone is stored and run
    optimizer: str = "adamw"  # adamw | cma (Black-Box Tuning: CMA-ES over a projected prompt, forward passes only)
    cma_dim: int = 500  # --optimizer cma: dimension of the searched vector z (BBT's d)
    cma_popsize: int = 20  # --optimizer cma: candidates scored per step (BBT's population)
    cma_sigma: float = 1.0  # --optimizer cma: CMA-ES's initial step size in z
    shard_backbone: bool = False  # split the frozen backbone's weights across processes (shard.py, FSDP2)
    activation_cache: bool = True  # keep the frozen bottom layers' output per input (activations.py) where it applies
    activation_cache_mb: float = 1024.0  # kept in memory up to this size, else memory-mapped under OUT/activation-cache
    resume: bool = False
    stop_after_steps: int | None = None  # simulate a kill after N optimizer steps (tests): no checkpoint, no metrics

    def __post_init__(self) -> None:
        """Refuse settings that would crash later (``--grad-accum 0``) or train something else than asked
        (``scheduler="cosine"`` used to train at a constant rate)."""
        _choice("--scheduler", self.scheduler, SCHEDULERS)
        _choice("--mixed-precision", self.mixed_precision, PRECISIONS)
        _choice("--backbone-dtype", self.backbone_dtype, BACKBONE_DTYPES)
        _choice("--optimizer", self.optimizer, OPTIMIZERS)
        for flag, value in (
            ("--epochs", self.epochs),
            ("--batch-size", self.batch_size),
            ("--eval-batch-size", self.eval_batch_size),
            ("--grad-accum", self.grad_accum),
            ("--eval-steps", self.eval_steps),
            ("--patience", self.patience),
            ("--stop-after-steps", self.stop_after_steps),
        ):
            check_count(flag, value)
        if self.lr is not None:
            _positive("--lr", self.lr)
            if self.lr > MAX_LR:
                raise PTuningError(f"--lr {self.lr:g} is beyond any rate that trains; give at most {MAX_LR:g}")
        _positive("--max-grad-norm", self.max_grad_norm)
        if self.max_minutes is not None:
            _positive("--max-minutes", self.max_minutes)
        _number("--weight-decay", self.weight_decay)
        if self.weight_decay < 0:
            raise PTuningError(f"--weight-decay must be >= 0, got {self.weight_decay:g}")
        _in_range("--warmup-ratio", self.warmup_ratio, 0.0, 1.0, "[0, 1)", low_open=False)
        _in_range("--decay-gamma", self.decay_gamma, 0.0, 1.0, "(0, 1]", low_open=True)
        self._check_search()
        if not isinstance(self.activation_cache, bool):
            raise PTuningError(f"--activation-cache must be true or false, got {self.activation_cache!r}")
        _number("--activation-cache-mb", self.activation_cache_mb)
        if self.activation_cache_mb < 0:
            raise PTuningError(
                f"--activation-cache-mb must be >= 0 (0: memory-mapped), got {self.activation_cache_mb:g}"
            )
        if self.backbone_dropout is not None:
            _number("--backbone-dropout", self.backbone_dropout)
            if not 0.0 <= self.backbone_dropout < 1.0:
                raise PTuningError(
                    f"--backbone-dropout {self.backbone_dropout:g} is not a rate: give a value in [0, 1)"
                )

    def _check_search(self) -> None:
        """``--optimizer cma``'s own numbers, and the gradient settings it cannot honour."""
        check_count("--cma-dim", self.cma_dim)
        check_count("--cma-popsize", self.cma_popsize, minimum=2)
        _positive("--cma-sigma", self.cma_sigma)
        if self.cma_dim > MAX_CMA_DIM:
            raise PTuningError(f"--cma-dim {self.cma_dim} is beyond what CMA-ES can search; give at most {MAX_CMA_DIM}")
        if self.optimizer != "cma":
            return
        for flag, given in (
            ("--lr", self.lr is not None),
            ("--grad-accum", self.grad_accum != 1),
            ("--gradient-checkpointing", self.gradient_checkpointing),
        ):
            if given:
                raise PTuningError(f"{flag} does not apply to --optimizer cma (no gradients; its step is --cma-sigma)")
        if self.resume:
            raise PTuningError("--resume does not apply to --optimizer cma: CMA-ES's state is not checkpointed")


def field_defaults(cls) -> dict:
    """``{name: default}`` of a dataclass: the command line reads its defaults from here, not from copies."""
    return {f.name: f.default for f in fields(cls)}


def check_count(flag: str, value: int | None, minimum: int = 1) -> None:
    """An optional whole number of at least ``minimum`` (None means "not set" and passes)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise PTuningError(f"{flag} must be a whole number, got {value!r}")
    if value < minimum:
        raise PTuningError(f"{flag} must be at least {minimum}, got {value}")


def _choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise PTuningError(f"unknown {flag} {value!r}; choose one of {', '.join(choices)}")


def _number(flag: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PTuningError(f"{flag} must be a finite number, got {value!r}")


def _positive(flag: str, value: float) -> None:
    _number(flag, value)
    if value <= 0:
        raise PTuningError(f"{flag} must be > 0, got {value:g}")


def _in_range(flag: str, value: float, low: float, high: float, shown: str, *, low_open: bool) -> None:
    """``[low, high)`` or, with ``low_open``, ``(low, high]``."""
    _number(flag, value)
    inside = low < value <= high if low_open else low <= value < high
    if not inside:
        raise PTuningError(f"{flag} must be in {shown}, got {value:g}")


def check_precision(precision: str) -> str:
    """Refuse a precision the machine cannot run, before any work starts.

    Only the forward passes run in reduced precision (autocast); parameters,
    gradients, optimizer state and the saved prompt stay float32, so an artifact
    trained in bf16 loads and serves exactly like a float32 one. Kept apart from
    ``TrainConfig``'s own checks: a config may be written on one machine for another.
    """
    import torch  # here, not at the top: the command line reads TrainConfig's defaults without loading torch

    _choice("--mixed-precision", precision, PRECISIONS)
    if precision == "fp16" and not torch.cuda.is_available():
        raise PTuningError("--mixed-precision fp16 needs a CUDA GPU; use bf16 (CPU and recent GPUs) or no")
    if precision == "bf16" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise PTuningError("this GPU has no bf16 support; use --mixed-precision fp16 or no")
    return precision


def use_precision(precision: str) -> str:
    """Check ``precision`` (:func:`check_precision`) and let this run use it even if an earlier one did not.

    Accelerate keeps one process-wide state and refuses a new ``Accelerator`` whose
    precision differs from the first one's; the benchmark harness, a notebook or the
    test suite train several times in one process. Only the precision part is reset:
    the process group (``PartialState``) is kept.
    """
    from accelerate.state import AcceleratorState

    check_precision(precision)
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != precision:
        AcceleratorState._reset_state(reset_partial_state=False)
    return precision
