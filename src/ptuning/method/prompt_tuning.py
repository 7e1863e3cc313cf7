"""Prompt tuning (Lester et al., EMNLP 2021): ``P`` free vectors in front of the word embeddings.

The shallow baseline P-Tuning v2 is compared against (``--method prompt-tuning``). The vectors are
passed with the input as ``inputs_embeds`` (``encoders/prompts.py``), so the backbone adds position and
token-type embeddings (and its embedding LayerNorm) once, as for any other token; they take ``P`` of
the backbone's input positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..encoders import Encoder, PromptInputs
from .base import Method, MethodConfig, PoolBatching, check_prompt_length, register


@dataclass
class PromptTuningConfig(MethodConfig):
    method: ClassVar[str] = "prompt-tuning"
    prompt_length: int = 20

    def validate(self) -> None:
        check_prompt_length(self.prompt_length)


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
    description: ClassVar[str] = "Lester et al.: trainable vectors in front of the word embeddings (shallow baseline)"
    config_class: ClassVar[type[MethodConfig]] = PromptTuningConfig
    default_lr: ClassVar[float] = 3e-2

    def __init__(self, config: PromptTuningConfig, encoder: Encoder) -> None:
        super().__init__(config, encoder)
        self.weight = nn.Parameter(vocabulary_init(config.prompt_length, encoder.word_embeddings()))  # (P, H)

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        return [{"params": [self.weight], "weight_decay": 0.0}]  # the prompt itself: decay would pull it to 0

    def prompt_inputs(self) -> PromptInputs:
        return PromptInputs(embeds=self.weight)  # (P, H)

    def fold(self) -> dict[str, torch.Tensor]:
        return {"prompt": self.weight.detach().clone().contiguous()}  # (P, H)

    @torch.no_grad()
    def load_folded(self, tensors: dict[str, torch.Tensor]) -> None:
        self.weight.copy_(tensors["prompt"])
