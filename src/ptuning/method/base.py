"""The interface every tuning method implements, and the registry that names them.

A method decides what is trained and how it reaches the frozen backbone. It is one module in
``method/`` holding a config dataclass (validated on creation, saved in every artifact) and a
:class:`Method` subclass, registered with :func:`register`. The rest of the library asks the method,
never its name: the training loop takes its parameter groups and default learning rate, the model adds
its :class:`~ptuning.encoders.PromptInputs` to every forward call, artifacts store what
:meth:`Method.fold` returns, and the serving pool reads :attr:`Method.pool_batching`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from enum import Enum
from typing import ClassVar

import torch
from torch import nn

from ..encoders import Encoder, PrefixGate, PromptInputs
from ..errors import PTuningError

MAX_PROMPT_LENGTH = 2048  # slots; the paper's longest is 100-200, and memory grows with P x layers x batch


@dataclass
class MethodConfig:
    """Base of every method's settings. Subclasses add fields and extend :meth:`validate`."""

    method: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`PTuningError` (one line, naming the flag) for a setting that cannot work."""

    def to_dict(self) -> dict:
        """What artifacts and checkpoints record: the method's name and every field."""
        return {"method": self.method, **asdict(self)}

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def check_prompt_length(value: int, flag: str = "--prompt-length") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PROMPT_LENGTH:
        raise PTuningError(f"{flag} {value!r} is out of range: give an integer in [0, {MAX_PROMPT_LENGTH}]")


def check_rate(value: float, flag: str) -> None:
    if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
        raise PTuningError(f"{flag} {value!r} is not a rate: give a value in [0, 1)")


def check_flag(value: bool, flag: str) -> None:
    if not isinstance(value, bool):
        raise PTuningError(f"{flag} is on or off: give true or false, got {value!r}")


def check_positive(value: float, flag: str) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise PTuningError(f"{flag} must be a finite number > 0, got {value!r}")


class PoolBatching(str, Enum):
    """How the serving pool runs a method's rows beside other tasks' rows."""

    SHARED = "shared"  # a deep prefix (possibly empty): rows of any such task share one backbone forward
    PER_PROMPT = "per-prompt"  # the prompt changes the input itself: rows run in batches of their own prompt
    REFUSED = "refused"  # the method changes the backbone: it cannot share one


def decay_groups(named: list[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict]:
    """AdamW groups by shape, as nanoGPT does: matrices decay; vectors (biases, norms) do not.

    A method whose matrices are themselves the prompt (a prefix table, soft prompt vectors) must not
    pass them here with decay: decay would pull the prompt towards zero. See :meth:`Method.parameter_groups`.
    """
    matrices = [p for _, p in named if p.requires_grad and p.dim() >= 2]
    vectors = [p for _, p in named if p.requires_grad and p.dim() < 2]
    return [{"params": matrices, "weight_decay": weight_decay}, {"params": vectors, "weight_decay": 0.0}]


class Method(nn.Module):
    """One tuning method, attached to one :class:`Encoder`. Holds the method's own parameters.

    Subclasses set the class attributes and override what differs from the defaults (a frozen
    backbone, nothing added to the forward call, nothing to save).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""  # one line, for `ptuning methods`
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    default_lr: ClassVar[float] = 5e-3
    trains_backbone: ClassVar[bool] = False
    pool_batching: ClassVar[PoolBatching] = PoolBatching.SHARED  # an instance may narrow it (its config decides)
    pool_refusal: ClassVar[str] = ""

    def __init__(self, config: MethodConfig, encoder: Encoder) -> None:
        super().__init__()
        self.config = config
        self.geometry = encoder.geometry

    def attach(self, encoder: Encoder) -> None:
        """Prepare ``encoder`` for this method: freeze (or unfreeze) it, enable what the method needs."""
        for p in encoder.parameters():
            p.requires_grad_(self.trains_backbone)

    # -- training --------------------------------------------------------------------------------
    def learning_rate(self) -> float:
        """The peak learning rate when the user names none."""
        return self.default_lr

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """The method's trainable parameters as AdamW groups (the head's are added by the model)."""
        return decay_groups(list(self.named_parameters()), weight_decay)

    def training_loss(
        self,
        forward: Callable[..., torch.Tensor],
        batch: dict,
        labels: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """The loss the training loop minimises for one batch (it calls ``backward`` on it).

        ``forward(**batch)`` gives the model's logits (the whole model: prompt, backbone, head; under the
        training loop's autocast and data-parallel wrapper). A training device that needs more than one
        forward pass (adversarial perturbations...) overrides this; it must not step or change parameters
        itself, and must leave no gradients behind other than through the returned loss.
        """
        return loss_fn(forward(**batch), labels)

    # -- forward ---------------------------------------------------------------------------------
    def prompt_inputs(self) -> PromptInputs:
        """What this method adds to a forward call."""
        return PromptInputs()

    @classmethod
    def prompt_positions(cls, config: MethodConfig) -> int:
        """Input positions a prompt of ``config`` occupies (the tokenizer must leave room for them)."""
        return 0

    @property
    def input_positions(self) -> int:
        return self.prompt_positions(self.config)

    # -- artifacts -------------------------------------------------------------------------------
    def fold(self) -> dict[str, torch.Tensor]:
        """The trained prompt as plain tensors, training devices (MLPs, encoders, dropout) applied once."""
        return {}

    @classmethod
    def inference_config(cls, config: MethodConfig) -> MethodConfig:
        """The config a model rebuilt from :meth:`fold`'s tensors is made with (training devices dropped).

        It may name another method: a P-tuning v1 prompt encoder folds into a plain soft prompt.
        """
        return config

    def load_folded(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`fold`, on a method built from :meth:`inference_config`."""

    def serving_prefix(self) -> torch.Tensor:
        """For :attr:`PoolBatching.SHARED`: the prefix ``(layers, 2, kv_heads, P, head_dim)``, P may be 0."""
        g = self.geometry
        return torch.zeros(g.num_layers, 2, g.num_kv_heads, 0, g.head_dim)

    def serving_gate(self) -> PrefixGate | None:
        """For :attr:`PoolBatching.SHARED`: the prefix's gate (:data:`~ptuning.encoders.PrefixGate`), if it has one.

        The pool then scales each of this prompt's rows by it inside the shared forward (APT).
        """
        return None

    # -- inspection (`ptuning inspect`) ----------------------------------------------------------
    # What the prompt *is*, for tools that look inside it. The defaults read :meth:`prompt_inputs`, so a method
    # whose prompt is a shared deep prefix or input-level vectors needs to override nothing.
    def deep_prefix(self) -> torch.Tensor | None:
        """The per-layer key/value prefix ``(layers, 2, kv_heads, P, head_dim)`` this prompt puts into attention
        (before a gate scales it), or None when it has none or it differs per input."""
        prefix = self.prompt_inputs().prefix
        if prefix is None or prefix.kv.shape[2] != 1:
            return None
        return prefix.kv[:, :, 0]  # (layers, 2, 1, kv, P, hd) -> (layers, 2, kv, P, hd)

    def input_prompt(self) -> torch.Tensor | None:
        """The input-level prompt vectors ``(P, H)``, in the word-embedding space, or None when there are none."""
        embeds = self.prompt_inputs().embeds
        return embeds if embeds is not None and embeds.dim() == 2 else None

    def prompt_in_layers(self, layers: frozenset[int]) -> PromptInputs | None:
        """This prompt entering only ``layers``, every other layer running as the plain backbone (the per-layer
        ablation of ``ptuning inspect``); None when the prompt is not made of per-layer parts (input-level and
        late prompts). Default: :meth:`prompt_inputs`' prefix restricted to ``layers``."""
        inputs = self.prompt_inputs()
        if inputs.prefix is None or inputs.embeds is not None or inputs.late is not None:
            return None
        return replace(inputs, prefix=replace(inputs.prefix, layers=frozenset(layers)))


REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` available by ``cls.name`` (``--method NAME``)."""
    if not cls.name or cls.config_class.method != cls.name or not cls.description:
        raise TypeError(f"{cls.__name__}: set name, description and a config_class whose method is the same name")
    REGISTRY[cls.name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    if name not in REGISTRY:
        raise PTuningError(f"unknown method {name!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def method_config(name: str, *, strict: bool = True, **options) -> MethodConfig:
    """The config of method ``name`` from keyword options.

    An option the method does not take is an error, unless ``strict=False``: then it is dropped, for
    harnesses that give several methods the same settings (``prompt_length`` means nothing to finetune).
    """
    config_class = method_class(name).config_class
    unknown = sorted(set(options) - set(config_class.option_names()))
    if unknown and not strict:
        options = {k: v for k, v in options.items() if k not in unknown}
    elif unknown:
        flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
        raise PTuningError(f"{flags} does not apply to --method {name} (its options: {_describe(config_class)})")
    return config_class(**options)


def config_from_dict(state: dict) -> MethodConfig:
    """A config from what :meth:`MethodConfig.to_dict` wrote (artifacts, checkpoints).

    Format-1 artifacts recorded every method's options flat (``reparam`` beside ``prompt-tuning``...):
    keys the method does not take are dropped.
    """
    state = dict(state)
    config_class = method_class(state.pop("method")).config_class
    return config_class(**{k: v for k, v in state.items() if k in config_class.option_names()})


def _describe(config_class: type[MethodConfig]) -> str:
    names = config_class.option_names()
    return ", ".join("--" + n.replace("_", "-") for n in names) if names else "none"
