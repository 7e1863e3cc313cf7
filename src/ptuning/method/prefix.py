"""P-Tuning v2: deep prompts as per-layer key/value prefixes (``--method ptv2``).

The whole method is this file:

* :class:`PrefixEncoder` turns ``P`` trainable slots into one key and one value vector per layer,
  key/value head and slot, optionally through the reparameterisation MLP of the paper
  (Embedding -> Linear -> Tanh -> Linear).
* :class:`DeepPrompt` hands that prefix to the encoder on every forward call; the encoder's family
  injector puts it into each layer's attention (``encoders/``), so real tokens keep positions ``0..L-1``.
  ``--shift-positions`` numbers them ``P..P+L-1`` instead, as a prefix held in a key/value cache is
  numbered (PEFT, the official code): what an adapter imported from PEFT needs to give PEFT's outputs.

Only the prefix (and the head) train; the MLP is a training device, folded away before saving. So is
``--perturb noise|adversarial``, PTP's perturbation-based regulariser (``perturb.py``): it changes the
training loss only, never the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch import nn

from ..encoders import Encoder, PrefixBatch, PromptInputs
from ..errors import PTuningError
from . import perturb as ptp
from .base import (
    Method,
    MethodConfig,
    PoolBatching,
    check_flag,
    check_positive,
    check_prompt_length,
    check_rate,
    decay_groups,
    register,
)

# Through the MLP, one Adam step moves the prefix tens of times further than the same rate on the raw prefix, and
# 5e-3 collapsed CB and RTE to one class (BENCHMARKS.md, "Why the MLP reparameterisation diverges").
REPARAM_LR = 5e-4


@dataclass
class Ptv2Config(MethodConfig):
    """``prompt_length`` slots per layer; ``reparam`` trains them through an MLP of width ``reparam_hidden``.

    ``prefix_init_std``: the scale the prefix starts at without reparam. 0.02 (BERT's own init) starts far
    below the backbone's key/value scale (RMS ~1); 1.0 is nn.Embedding's default, kept by the official code
    and PEFT.

    ``perturb``: PTP's regulariser while training (Chen et al., EMNLP 2023): ``noise`` (PTP-RN) or
    ``adversarial`` (PTP-ADV) perturbations of the input's word embeddings, of per-token size
    ``perturb_eps``; ``none`` trains plain ptv2. What is perturbed and how is in ``perturb.py``.

    ``shift_positions``: number the real tokens ``P..P+L-1``, as a cache-based prefix (PEFT, the official code)
    does, instead of ``0..L-1``; the prefix then takes ``P`` of the backbone's positions (``--max-length``
    counts them). ``drop_token_types``: run without ``token_type_ids``, as PEFT's prompt-learning models do.
    Both are part of the prompt (recorded in the artifact): a prefix trained one way gives other outputs the
    other way. ``ptuning import-peft`` sets both, so an imported adapter reproduces PEFT's outputs.
    """

    method: ClassVar[str] = "ptv2"
    prompt_length: int = 20
    reparam: bool = False
    reparam_hidden: int = 512
    prefix_dropout: float = 0.0
    prefix_init_std: float = 0.02
    perturb: str = "none"
    perturb_eps: float = ptp.DEFAULT_EPS
    shift_positions: bool = False
    drop_token_types: bool = False

    def validate(self) -> None:
        check_prompt_length(self.prompt_length)
        check_flag(self.shift_positions, "--shift-positions")
        check_flag(self.drop_token_types, "--drop-token-types")
        check_rate(self.prefix_dropout, "--prefix-dropout")
        check_positive(self.prefix_init_std, "--prefix-init-std")
        check_positive(self.reparam_hidden, "--reparam-hidden")
        if self.perturb not in ptp.PERTURBATIONS:
            raise PTuningError(f"--perturb {self.perturb!r}: choose one of {', '.join(ptp.PERTURBATIONS)}")
        if isinstance(self.perturb_eps, bool):
            raise PTuningError(f"--perturb-eps must be a finite number > 0, got {self.perturb_eps!r}")
        check_positive(self.perturb_eps, "--perturb-eps")


class PrefixEncoder(nn.Module):
    """Produces the per-layer key/value prefix of one prompt, ``(layers, 2, kv_heads, P, head_dim)``."""

    def __init__(
        self,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        prompt_length: int,
        *,
        reparam: bool = False,
        hidden_size: int = 512,
        embed_size: int | None = None,
        dropout: float = 0.0,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        self.num_layers, self.num_kv_heads, self.head_dim = num_layers, num_kv_heads, head_dim
        self.prompt_length = prompt_length
        out = num_layers * 2 * num_kv_heads * head_dim
        self.reparam = reparam
        if reparam:
            self.embedding = nn.Embedding(prompt_length, embed_size or hidden_size)
            self.mlp = nn.Sequential(
                nn.Linear(self.embedding.embedding_dim, hidden_size),
                nn.Tanh(),
                nn.Linear(hidden_size, out),
            )
        else:
            self.embedding = nn.Embedding(prompt_length, out)
            nn.init.normal_(self.embedding.weight, std=init_std)
        self.dropout = nn.Dropout(dropout)

    @classmethod
    def for_config(cls, config, geometry) -> PrefixEncoder:
        """The encoder a config with ptv2's prefix fields (ptv2, APT) asks for, on a backbone's geometry."""
        g = geometry
        return cls(
            g.num_layers,
            g.num_kv_heads,
            g.head_dim,
            config.prompt_length,
            reparam=config.reparam,
            hidden_size=config.reparam_hidden,
            embed_size=g.hidden_size,
            dropout=config.prefix_dropout,
            init_std=config.prefix_init_std,
        )

    def forward(self) -> torch.Tensor:
        """Return the prefix, shaped ``(layers, 2, kv_heads, P, head_dim)``."""
        x = self.embedding.weight  # (P, E)
        if self.reparam:
            x = self.mlp(x)  # (P, layers * 2 * kv_heads * head_dim)
        x = self.dropout(x)
        P = self.prompt_length
        x = x.view(P, self.num_layers, 2, self.num_kv_heads, self.head_dim)  # (P, layers, 2, kv, hd)
        return x.permute(1, 2, 3, 0, 4)  # (layers, 2, kv_heads, P, head_dim)

    @torch.no_grad()
    def fold(self) -> torch.Tensor:
        """The prefix without dropout or MLP: what inference and artifacts use."""
        was_training = self.training
        self.eval()
        try:
            return self().detach().clone().contiguous()  # (layers, 2, kv_heads, P, head_dim)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def load(self, kv: torch.Tensor) -> None:
        """Set a reparam-free encoder to the prefix ``kv`` ``(layers, 2, kv_heads, P, head_dim)``."""
        weight = kv.permute(3, 0, 1, 2, 4).reshape(kv.shape[3], -1)  # (P, layers*2*kv*hd)
        self.embedding.weight.copy_(weight)


@register
class DeepPrompt(Method):
    """P-Tuning v2 (Liu et al., ACL 2022): a trainable prefix in every layer of a frozen backbone."""

    name: ClassVar[str] = "ptv2"
    description: ClassVar[str] = (
        "P-Tuning v2: a trainable key/value prefix in every layer of the frozen backbone "
        "(--reparam: MLP reparameterisation; --perturb noise|adversarial: PTP regulariser)"
    )
    config_class: ClassVar[type[MethodConfig]] = Ptv2Config
    default_lr: ClassVar[float] = 5e-3

    def __init__(self, config: Ptv2Config, encoder: Encoder) -> None:
        super().__init__(config, encoder)
        self.prefix_encoder = PrefixEncoder.for_config(config, encoder.geometry)
        if config.shift_positions or config.drop_token_types:  # its rows need their own positions / segments
            self.pool_batching = PoolBatching.PER_PROMPT

    @classmethod
    def prompt_positions(cls, config: Ptv2Config) -> int:
        """A shifted prefix takes the first ``P`` positions, so the text gets ``P`` fewer."""
        return config.prompt_length if config.shift_positions else 0

    def attach(self, encoder: Encoder) -> None:
        super().attach(encoder)
        encoder.enable_prefix()
        self._word_embeddings = encoder.word_embeddings  # a bound method, not a submodule: what --perturb perturbs

    def learning_rate(self) -> float:
        return REPARAM_LR if self.config.reparam else self.default_lr

    def training_loss(self, forward: Callable[..., torch.Tensor], batch: dict, labels, loss_fn) -> torch.Tensor:
        """Plain ptv2's loss, or with ``--perturb`` the clean loss plus the loss on perturbed inputs (PTP)."""
        if self.config.perturb == "none":
            return super().training_loss(forward, batch, labels, loss_fn)
        embedding = self._word_embeddings()
        return ptp.perturbed_loss(
            self.config.perturb, self.config.perturb_eps, embedding, forward, batch, labels, loss_fn
        )

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """The prefix table is the prompt itself: no decay. The reparam MLP decays like any weight matrix."""
        table = {"params": [self.prefix_encoder.embedding.weight], "weight_decay": 0.0}
        rest = [(n, p) for n, p in self.named_parameters() if p is not self.prefix_encoder.embedding.weight]
        return [table, *decay_groups(rest, weight_decay)]

    def prompt_inputs(self) -> PromptInputs:
        return PromptInputs(
            prefix=PrefixBatch.single(self.prefix_encoder()),
            position_offset=self.config.prompt_length if self.config.shift_positions else 0,
            drop_token_types=self.config.drop_token_types,
        )

    def fold(self) -> dict[str, torch.Tensor]:
        return {"prefix": self.prefix_encoder.fold()}  # (layers, 2, kv, P, hd)

    @classmethod
    def inference_config(cls, config: Ptv2Config) -> Ptv2Config:
        return replace(config, reparam=False, prefix_dropout=0.0, perturb="none", perturb_eps=ptp.DEFAULT_EPS)

    def load_folded(self, tensors: dict[str, torch.Tensor]) -> None:
        self.prefix_encoder.load(tensors["prefix"])

    def serving_prefix(self) -> torch.Tensor:
        return self.prefix_encoder.fold()
