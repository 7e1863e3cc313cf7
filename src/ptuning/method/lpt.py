"""LPT, late prompt tuning (Liu et al., Findings of EMNLP 2022): ``--method lpt``.

One instance-dependent prompt of ``P`` tokens enters the sequence at an intermediate layer ``K``
(``--prompt-layer``; default ``layers // 2``, the paper's "around the middle": 12 of RoBERTa-large's 24).
The paper's naive prompt generator (NPG) makes it from the hidden states entering layer ``K``:

    h = pool(H_K)                                 (B, H)   first token ([CLS]); last real token on decoders
    prompt = Dropout(W_up ReLU(W_down h + b_down) + b_up)   (B, P * H) -> (B, P, H)

with a bottleneck of ``--generator-hidden`` units (the official code's ``proj_down_size``, 128). The prompt
tokens then take part in every layer from ``K`` on, as tokens of the sequence, and are stripped after the
last layer (``encoders/prompts.py``, :class:`~ptuning.encoders.LatePrompt`: the encoder appends ``P``
placeholder tokens that no real token sees below ``K``; a hook at layer ``K``'s input replaces them by the
prompt). Nothing below ``K`` is back-propagated: the generator's input is detached, and since the backbone
is frozen and nothing below ``K`` requires a gradient, autograd records no graph for the lower layers (the
saving the paper reports, without a second code path for them).

Choices the paper leaves open, made here: the prompt tokens have no position of their own (absolute
positions are added once, at the input, before they exist; rotary families give them position 0 and
DeBERTa no relative-position bias); on a decoder they act as if prepended at layer ``K`` (every real token
sees them, each sees only the prompt tokens before it), as in the official GPT-2 code. The placeholders
occupy ``P`` input positions, so the token budget leaves room for them.

The generator is the trained prompt (it runs at inference too); only its dropout is a training device.
The serving pool runs LPT rows in batches of their own prompt (:attr:`PoolBatching.PER_PROMPT`): the
inserted tokens lengthen the sequence and the generator is the task's own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch import nn

from ..encoders import Encoder, LatePrompt, PromptInputs
from ..errors import PTuningError
from ..heads import pool
from .base import Method, MethodConfig, PoolBatching, check_positive, check_prompt_length, check_rate, register


@dataclass
class LptConfig(MethodConfig):
    """``prompt_length`` tokens inserted at layer ``prompt_layer`` (None: the middle layer of the backbone),
    made by a bottleneck MLP of ``generator_hidden`` units with ``generator_dropout`` on its output."""

    method: ClassVar[str] = "lpt"
    prompt_length: int = 5
    prompt_layer: int | None = None
    generator_hidden: int = 128
    generator_dropout: float = 0.1

    def validate(self) -> None:
        check_prompt_length(self.prompt_length)
        layer = self.prompt_layer
        if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int) or layer < 1):
            raise PTuningError(f"--prompt-layer {layer!r}: give a layer index >= 1 (the layers below run without it)")
        if isinstance(self.generator_hidden, bool) or not isinstance(self.generator_hidden, int):
            raise PTuningError(f"--generator-hidden {self.generator_hidden!r}: give a whole number of units")
        check_positive(self.generator_hidden, "--generator-hidden")
        check_rate(self.generator_dropout, "--generator-dropout")


class NaivePromptGenerator(nn.Module):
    """The paper's NPG: one pooled hidden state -> down-projection, ReLU, up-projection -> ``P`` prompt vectors."""

    def __init__(self, hidden_size: int, prompt_length: int, bottleneck: int, dropout: float, pooling: str) -> None:
        super().__init__()
        self.prompt_length, self.pooling = prompt_length, pooling
        self.down = nn.Linear(hidden_size, bottleneck)
        self.up = nn.Linear(bottleneck, prompt_length * hidden_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """The prompt ``(B, P, H)`` from the hidden states ``(B, L, H)`` entering the prompt's layer."""
        pooled = pool(hidden, token_mask, self.pooling)  # (B, H)
        x = self.up(torch.relu(self.down(pooled)))  # (B, r) -> (B, P * H)
        return self.dropout(x.view(x.shape[0], self.prompt_length, -1))  # (B, P, H)


@register
class LatePromptTuning(Method):
    """LPT: an instance-dependent prompt, generated from layer K's input and inserted into the sequence there."""

    name: ClassVar[str] = "lpt"
    description: ClassVar[str] = "LPT: a prompt generated from layer K's input, inserted as tokens at layer K"
    config_class: ClassVar[type[MethodConfig]] = LptConfig
    default_lr: ClassVar[float] = 1e-3  # the official scripts' rate
    pool_batching: ClassVar[PoolBatching] = PoolBatching.PER_PROMPT

    def __init__(self, config: LptConfig, encoder: Encoder) -> None:
        g = encoder.geometry
        layer = g.num_layers // 2 if config.prompt_layer is None else config.prompt_layer
        if not 1 <= layer < g.num_layers:
            raise PTuningError(
                f"--prompt-layer {layer}: this backbone has {g.num_layers} layers; give 1 .. {g.num_layers - 1}"
            )
        super().__init__(replace(config, prompt_layer=layer), encoder)  # artifacts record the layer used
        pooling = "last" if g.is_decoder else "cls"
        self.generator = NaivePromptGenerator(
            g.hidden_size, config.prompt_length, config.generator_hidden, config.generator_dropout, pooling
        )

    def attach(self, encoder: Encoder) -> None:
        super().attach(encoder)
        encoder.enable_layer_hooks()  # the prompt is made from, and inserted at, layer K's input

    @classmethod
    def prompt_positions(cls, config: LptConfig) -> int:
        return config.prompt_length  # the placeholders' input positions

    def prompt_inputs(self) -> PromptInputs:
        c = self.config
        return PromptInputs(late=LatePrompt(layer=c.prompt_layer, length=c.prompt_length, generator=self.generator))

    def fold(self) -> dict[str, torch.Tensor]:
        return {f"generator.{k}": v.detach().clone() for k, v in self.generator.state_dict().items()}

    @classmethod
    def inference_config(cls, config: LptConfig) -> LptConfig:
        return replace(config, generator_dropout=0.0)

    @torch.no_grad()
    def load_folded(self, tensors: dict[str, torch.Tensor]) -> None:
        prefix = "generator."
        self.generator.load_state_dict({k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)})
