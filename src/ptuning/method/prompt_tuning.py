"""Prompt tuning (Lester et al., EMNLP 2021): ``P`` free vectors in front of the word embeddings.

The shallow baseline P-Tuning v2 is compared against (``--method prompt-tuning``). The vectors are
passed with the input as ``inputs_embeds`` (``encoders/prompts.py``), so the backbone adds position and
token-type embeddings (and its embedding LayerNorm) once, as for any other token; they take ``P`` of
the backbone's input positions.

``--residual`` is Residual Prompt Tuning (Razdaibiedina et al., Findings of ACL 2023): the vectors are
trained through a shallow MLP with a residual connection (:class:`ResidualReparam`), a training device
folded away before saving, so the artifact is a plain prompt-tuning prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..encoders import Encoder, PromptInputs
from ..errors import PTuningError
from .base import Method, MethodConfig, PoolBatching, check_prompt_length, decay_groups, register

# The bottleneck width of the authors' released code (ResidualPrompts, train.py --bottleneck_size); ResidualPrompts'
# T5-base runs use it at hidden size 768, so on the bundled MiniLM (384) the "bottleneck" is wider than the prompt.
RESIDUAL_HIDDEN = 800


@dataclass
class PromptTuningConfig(MethodConfig):
    """``prompt_length`` vectors; ``residual`` trains them through :class:`ResidualReparam` (``residual_hidden``)."""

    method: ClassVar[str] = "prompt-tuning"
    prompt_length: int = 20
    residual: bool = False
    residual_hidden: int = RESIDUAL_HIDDEN

    def validate(self) -> None:
        check_prompt_length(self.prompt_length)
        if not isinstance(self.residual, bool):
            raise PTuningError(f"--residual must be true or false, got {self.residual!r}")
        hidden = self.residual_hidden
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise PTuningError(f"--residual-hidden must be a whole number > 0, got {hidden!r}")


class ResidualReparam(nn.Module):
    """Residual Prompt Tuning's reparameterisation: ``p + LayerNorm(W_up ReLU(W_down p))`` for each vector ``p``.

    Down-projection, ReLU, up-projection, LayerNorm, then the skip connection, applied to every prompt
    vector on its own (the paper's MLP1 with the authors' defaults: ReLU, LayerNorm, no dropout; PyTorch's
    default initialisation, so at the start the prompt is its vocabulary init plus a LayerNorm-scaled MLP
    output). It runs in float32 outside autocast: it sees only ``P`` vectors, and the prompt it gives while
    training is then exactly the one :meth:`PromptTuning.fold` saves.
    """

    def __init__(self, hidden_size: int, bottleneck: int) -> None:
        super().__init__()
        self.down = nn.Linear(hidden_size, bottleneck)
        self.up = nn.Linear(bottleneck, hidden_size)
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, prompt: torch.Tensor) -> torch.Tensor:
        """``(P, H)`` -> ``(P, H)``."""
        with torch.autocast(device_type=prompt.device.type, enabled=False):
            return prompt + self.norm(self.up(torch.relu(self.down(prompt))))


def vocabulary_init(prompt_length: int, embeddings: nn.Embedding, seed: int = 0) -> torch.Tensor:
    """``P`` embeddings of real tokens (Lester et al. recommend starting from the vocabulary), ``(P, H)``.

    Ids are sampled from the first 5000 after the low ids, which most vocabularies spend on special tokens.
    """
    generator = torch.Generator().manual_seed(seed)
    start = min(1000, max(embeddings.num_embeddings - 1, 0))
    stop = min(embeddings.num_embeddings, start + 5000)
    ids = torch.randint(start, max(stop, start + 1), (prompt_length,), generator=generator)
    ids = ids.clamp(max=embeddings.num_embeddings - 1)
    return embeddings.weight[ids].detach().clone()  # (P, H)


class InputPromptMethod(Method):
    """The common ground of input-level prompts: ``prompt_length`` input positions, batched per prompt.

    The prompt changes the input sequence itself, so the serving pool cannot mix its rows with other
    prompts' in one forward, and the tokenizer must leave ``P`` positions free.
    """

    pool_batching: ClassVar[PoolBatching] = PoolBatching.PER_PROMPT

    @classmethod
    def prompt_positions(cls, config) -> int:
        return config.prompt_length


@register
class PromptTuning(InputPromptMethod):
    name: ClassVar[str] = "prompt-tuning"
    description: ClassVar[str] = (
        "Lester et al.: trainable vectors in front of the word embeddings (shallow baseline; "
        "--residual: Residual Prompt Tuning's MLP reparameterisation)"
    )
    config_class: ClassVar[type[MethodConfig]] = PromptTuningConfig
    default_lr: ClassVar[float] = 3e-2
    search_parameter_names: ClassVar[tuple[str, ...]] = ("weight",)  # searched at the word embeddings' scale

    def __init__(self, config: PromptTuningConfig, encoder: Encoder) -> None:
        super().__init__(config, encoder)
        self.weight = nn.Parameter(vocabulary_init(config.prompt_length, encoder.word_embeddings()))  # (P, H)
        hidden = encoder.geometry.hidden_size
        self.reparam = ResidualReparam(hidden, config.residual_hidden) if config.residual else None

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """The prompt itself: no decay (it would pull the prompt to 0). The residual MLP's matrices decay."""
        rest = [(n, p) for n, p in self.named_parameters() if p is not self.weight]
        return [{"params": [self.weight], "weight_decay": 0.0}, *decay_groups(rest, weight_decay)]

    def prompt(self) -> torch.Tensor:
        """The prompt vectors the input gets, ``(P, H)``."""
        return self.weight if self.reparam is None else self.reparam(self.weight)

    def prompt_inputs(self) -> PromptInputs:
        return PromptInputs(embeds=self.prompt())  # (P, H)

    def fold(self) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {"prompt": self.prompt().detach().clone().contiguous()}  # (P, H)

    @classmethod
    def inference_config(cls, config: PromptTuningConfig) -> PromptTuningConfig:
        return PromptTuningConfig(prompt_length=config.prompt_length)  # the residual MLP is folded in

    @torch.no_grad()
    def load_folded(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.reparam is not None:
            raise PTuningError("a folded prompt loads into plain prompt-tuning (inference_config), not --residual")
        self.weight.copy_(tensors["prompt"])
