"""P-tuning v1 (Liu et al., 2021): input prompts produced by a prompt encoder (``--method ptv1``).

Free vectors go through a bi-LSTM + MLP (``--prompt-encoder lstm``) or an MLP alone (``mlp``); the
result is put in front of the word embeddings like a soft prompt. The encoder only eases training:
an artifact stores its output, and inference runs it as a plain prompt-tuning prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..encoders import Encoder, PromptInputs
from ..errors import PTuningError
from .base import MethodConfig, check_prompt_length, decay_groups, register
from .prompt_tuning import InputPromptMethod, PromptTuningConfig

PROMPT_ENCODERS = ("lstm", "mlp")


@dataclass
class Ptv1Config(MethodConfig):
    method: ClassVar[str] = "ptv1"
    prompt_length: int = 20
    prompt_encoder: str = "lstm"

    def validate(self) -> None:
        check_prompt_length(self.prompt_length)
        if self.prompt_encoder not in PROMPT_ENCODERS:
            raise PTuningError(f"--prompt-encoder {self.prompt_encoder!r}: choose one of {', '.join(PROMPT_ENCODERS)}")


class PromptEncoder(nn.Module):
    """P-tuning v1 prompt encoder: free vectors -> (bi-LSTM) -> MLP, ``(P, H)``."""

    def __init__(self, prompt_length: int, hidden_size: int, kind: str = "lstm") -> None:
        super().__init__()
        self.embedding = nn.Embedding(prompt_length, hidden_size)
        self.lstm = (
            nn.LSTM(hidden_size, hidden_size // 2, num_layers=2, bidirectional=True, batch_first=True)
            if kind == "lstm"
            else None
        )
        self.mlp = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self) -> torch.Tensor:
        """The prompt, always in float32.

        The encoder sees only ``P`` vectors, so autocast would save nothing here,
        and the CPU LSTM kernel has no bf16 path: run it outside autocast.
        """
        device = self.embedding.weight.device.type
        with torch.autocast(device_type=device, enabled=False):
            x = self.embedding.weight.unsqueeze(0)  # (1, P, H)
            if self.lstm is not None:
                x = self.lstm(x)[0]  # (1, P, H)
            return self.mlp(x).squeeze(0)  # (P, H)


@register
class Ptv1(InputPromptMethod):
    name: ClassVar[str] = "ptv1"
    description: ClassVar[str] = "P-tuning v1: input prompts produced by an LSTM/MLP prompt encoder (shallow baseline)"
    config_class: ClassVar[type[MethodConfig]] = Ptv1Config
    default_lr: ClassVar[float] = 5e-3

    def __init__(self, config: Ptv1Config, encoder: Encoder) -> None:
        super().__init__(config, encoder)
        self.prompt_encoder = PromptEncoder(config.prompt_length, encoder.geometry.hidden_size, config.prompt_encoder)

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """The seed vectors are the prompt: no decay. The LSTM/MLP decay like any weight matrix."""
        seed = self.prompt_encoder.embedding.weight
        rest = [(n, p) for n, p in self.named_parameters() if p is not seed]
        return [{"params": [seed], "weight_decay": 0.0}, *decay_groups(rest, weight_decay)]

    def prompt_inputs(self) -> PromptInputs:
        return PromptInputs(embeds=self.prompt_encoder())  # (P, H)

    def fold(self) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {"prompt": self.prompt_encoder().detach().clone().contiguous()}  # (P, H)

    @classmethod
    def inference_config(cls, config: Ptv1Config) -> PromptTuningConfig:
        return PromptTuningConfig(prompt_length=config.prompt_length)
