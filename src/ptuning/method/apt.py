"""APT, adaptive prefix tuning (Zhang et al., ACL 2023, arXiv 2305.15212): ``--method apt``.

P-Tuning v2's per-layer prefix, rescaled in every layer ``i`` by two learned gates before attention:

* token level: one weight per prefix slot and input, ``alpha_i = sigmoid(h_i W_i + b_i)`` ``(B, P)``, from
  ``h_i``, the hidden states entering layer ``i``'s attention, pooled over the real tokens;
* layer level: one learned scale ``lambda_i`` per layer,

so layer ``i`` attends over ``[lambda_i * alpha_i (.) P_k ; X W_k]`` and ``[lambda_i * alpha_i (.) P_v ; X W_v]``.

Choices the paper leaves open, made here:

* ``h_i`` is the *masked mean* of the hidden states the layer's attention receives (the layer input of
  post-LN families such as BERT; after the pre-attention norm in pre-LN ones such as Llama, GPT-2). The
  paper reduces the previous layer's hidden states to one vector per input without fixing how; the mean
  works for every family (no [CLS] in decoders). On a decoder the gate therefore summarises the whole
  input, later tokens included, for every position (APT, like the paper, is an encoder-side method).
* keys and values are both scaled (the scaled prefix *is* the layer's prefix).
* ``W_i = 0``, ``b_i = 0`` (every slot starts at weight 1/2, the same for every input) and ``lambda_i = 1``.
  With ``lambda_i = 1`` and a gate saturated open, APT is exactly P-Tuning v2; ``lambda_i = 0`` gives a
  zero prefix (which, as in P-Tuning v2, is *not* the plain backbone: zero keys still take attention mass).
  ``--prompt-length 0`` is the plain backbone.

The prefix itself is :class:`~ptuning.method.prefix.PrefixEncoder` (``--reparam`` folds away as in ptv2); the
gates are part of the trained prompt and saved with it. The injector runs the gate inside each layer
(:data:`ptuning.encoders.PrefixGate`), so APT prompts share the serving pool's mixed-task forward: each row is
scaled by its own task's gate, and rows of ungated prompts by 1.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch import nn

from ..encoders import Encoder, PrefixBatch, PromptInputs
from ..heads import pool
from .base import Method, MethodConfig, check_positive, check_prompt_length, check_rate, decay_groups, register
from .layers import ALL, check_layer_spec
from .prefix import REPARAM_LR, PrefixEncoder, check_prefix_depth, prompted_layers


@dataclass
class AptConfig(MethodConfig):
    """The prefix as in ptv2 (``prompt_length`` slots per layer, optional reparameterisation MLP, ``prefix_layers``);
    the gates have no setting of their own and exist in the prompted layers only."""

    method: ClassVar[str] = "apt"
    prompt_length: int = 20
    reparam: bool = False
    reparam_hidden: int = 512
    prefix_dropout: float = 0.0
    prefix_init_std: float = 0.02
    prefix_layers: str = ALL

    def validate(self) -> None:
        check_prompt_length(self.prompt_length)
        check_layer_spec(self.prefix_layers)
        check_rate(self.prefix_dropout, "--prefix-dropout")
        check_positive(self.prefix_init_std, "--prefix-init-std")
        check_positive(self.reparam_hidden, "--reparam-hidden")


class AdaptiveGate(nn.Module):
    """``lambda_i * sigmoid(mean(h_i) W_i + b_i)`` for every prompted layer ``i``: the scale of each row's prefix slots.

    ``first``: the backbone layer of the gate's entry 0 (a prompt in the top layers has gates there only).
    """

    def __init__(self, num_layers: int, hidden_size: int, prompt_length: int, first: int = 0) -> None:
        super().__init__()
        self.first = first
        self.weight = nn.Parameter(torch.zeros(num_layers, hidden_size, prompt_length))  # W_i (H, P)
        self.bias = nn.Parameter(torch.zeros(num_layers, prompt_length))  # b_i (P,)
        self.scale = nn.Parameter(torch.ones(num_layers))  # lambda_i

    def forward(self, layer: int, hidden: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
        """Slot scales ``(B, P)`` of ``layer`` from the hidden states ``(B, L, H)`` entering its attention."""
        layer -= self.first
        if token_mask is None:
            token_mask = torch.ones(hidden.shape[:2], device=hidden.device)  # (B, L)
        pooled = pool(hidden.float(), token_mask, "mean")  # (B, H)
        alpha = torch.sigmoid(pooled @ self.weight[layer] + self.bias[layer])  # (B, H) @ (H, P) -> (B, P)
        return self.scale[layer] * alpha  # (B, P)


@register
class AdaptivePrefix(Method):
    """APT: P-Tuning v2's prefix with a token-level gate from each layer's input and a layer-level scale."""

    name: ClassVar[str] = "apt"
    description: ClassVar[str] = "APT: ptv2 prefixes gated per slot from each layer's input and scaled per layer"
    config_class: ClassVar[type[MethodConfig]] = AptConfig
    default_lr: ClassVar[float] = 5e-3

    def __init__(self, config: AptConfig, encoder: Encoder) -> None:
        layers, config = prompted_layers(config, encoder)
        super().__init__(config, encoder)
        g = encoder.geometry
        self.layers = layers
        self.prefix_encoder = PrefixEncoder.for_config(config, g, len(layers))
        self.gate = AdaptiveGate(len(layers), g.hidden_size, config.prompt_length, first=layers.start)

    def attach(self, encoder: Encoder) -> None:
        super().attach(encoder)
        encoder.enable_layer_hooks()  # the gate needs each layer's input inside attention

    def learning_rate(self) -> float:
        return REPARAM_LR if self.config.reparam else self.default_lr  # ptv2's rates

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """The prefix table and the gates are the prompt itself: no decay. A reparam MLP decays like any matrix."""
        prompt = [self.prefix_encoder.embedding.weight, *self.gate.parameters()]
        rest = [(n, p) for n, p in self.named_parameters() if all(p is not q for q in prompt)]
        return [{"params": prompt, "weight_decay": 0.0}, *decay_groups(rest, weight_decay)]

    def prompt_inputs(self) -> PromptInputs:
        return PromptInputs(prefix=replace(PrefixBatch.single(self.prefix_encoder(), self.layers), gate=self.gate))

    def frozen_layers(self) -> int:
        return self.layers.start  # the gates read the input of prompted layers only

    def fold(self) -> dict[str, torch.Tensor]:
        gate = {f"gate.{k}": v.detach().clone() for k, v in self.gate.state_dict().items()}
        return {"prefix": self.prefix_encoder.fold(), **gate}  # prefix (layers, 2, kv, P, hd)

    @classmethod
    def inference_config(cls, config: AptConfig) -> AptConfig:
        return replace(config, reparam=False, prefix_dropout=0.0)

    @torch.no_grad()
    def load_folded(self, tensors: dict[str, torch.Tensor]) -> None:
        self.prefix_encoder.load(check_prefix_depth(tensors["prefix"], self.layers))
        self.gate.load_state_dict({k.removeprefix("gate."): v for k, v in tensors.items() if k.startswith("gate.")})

    def serving_prefix(self) -> torch.Tensor:
        return self.prefix_encoder.fold()  # (layers, 2, kv, P, hd)

    def serving_gate(self) -> AdaptiveGate:
        return self.gate

    def serving_layers(self) -> range:
        return self.layers
