"""Fine-tuning (``--method finetune``): every backbone weight trains. The upper bound prompts are measured against.

Nothing is added to the forward call; the artifact carries the whole backbone
(``backbone.safetensors``), so the serving pool, which shares one frozen backbone, refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..encoders import Encoder
from .base import Method, MethodConfig, PoolBatching, decay_groups, register
from .space import Param, learning_rates, training_params


@dataclass
class FinetuneConfig(MethodConfig):
    method: ClassVar[str] = "finetune"


@register
class Finetune(Method):
    name: ClassVar[str] = "finetune"
    description: ClassVar[str] = "every backbone weight trains (the upper bound)"
    config_class: ClassVar[type[MethodConfig]] = FinetuneConfig
    default_lr: ClassVar[float] = 5e-5
    trains_backbone: ClassVar[bool] = True
    pool_batching: ClassVar[PoolBatching] = PoolBatching.REFUSED
    pool_refusal: ClassVar[str] = "a fine-tuned model carries its own backbone; serve it on its own"

    def __init__(self, config: FinetuneConfig, encoder: Encoder) -> None:
        super().__init__(config, encoder)
        self._encoder = [encoder]  # not a submodule: the model already owns the encoder

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        return decay_groups(list(self._encoder[0].named_parameters()), weight_decay)

    @classmethod
    def search_space(cls, prompt_range: tuple[int, int] = (4, 256)) -> tuple[Param, ...]:
        """BERT's recipe range (Devlin et al.: 2e-5..5e-5), widened: above 1e-4 a whole backbone diverges."""
        return (learning_rates(1e-5, 1e-4), *training_params())
