"""Deep prompts for every family whose attention goes through ``transformers.AttentionInterface``.

:func:`prefix_attention` is registered in the interface under ``ptuning_sdpa`` / ``ptuning_eager``. It
prepends the layer's prefix keys/values to the model's own keys/values, widens the attention mask so
every query sees every (valid) prefix slot, and hands the result to the model's own kernel.

Why the attention interface and not ``past_key_values``: a cache makes encoders shift the position ids
of real tokens by ``P`` (the official code does this), so a prompt eats into the backbone's maximum
length and changes what the model saw in pre-training. Here real tokens keep positions ``0..L-1``.

Why a keyword argument and not a global: the prefix travels as ``ptuning_prefix=`` through the model's
``**kwargs`` down to the attention function. Nothing is stored on the model or in a module-level
variable, so two models (or two threads) with different prompts never see each other's prefix, and
gradient checkpointing replays the same prefix when it recomputes a layer.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from ..errors import PTuningError
from .base import FamilySupport, Injector
from .prompts import PrefixBatch

PREFIX_KWARG = "ptuning_prefix"
ATTENTION_NAMES = {"sdpa": "ptuning_sdpa", "eager": "ptuning_eager"}


def widen_mask(
    mask: torch.Tensor | None,
    prefix_mask: torch.Tensor | None,
    batch: int,
    q_len: int,
    k_len: int,
    prefix_len: int,
    causal: bool,
    device: torch.device,
) -> torch.Tensor | None:
    """Prepend ``prefix_len`` key columns to an attention mask.

    The model may hand us None (nothing padded), a boolean mask (True = attend)
    or an additive float mask, each ``(B or 1, 1 or heads, Lq, Lk)``. Prefix
    columns are visible to every query unless ``prefix_mask`` hides a padding slot.
    """
    if mask is None and prefix_mask is None and not causal:
        return None
    if prefix_mask is None:
        cols = torch.ones(batch, 1, q_len, prefix_len, dtype=torch.bool, device=device)
    else:
        cols = prefix_mask[:, None, None, :].expand(batch, 1, q_len, prefix_len)  # (B, 1, Lq, P)
    if mask is None:
        real = torch.ones(q_len, k_len, dtype=torch.bool, device=device)
        if causal:
            real = real.tril(diagonal=k_len - q_len)
        mask = real.expand(batch, 1, q_len, k_len)  # (B, 1, Lq, Lk)
    heads = mask.shape[1]
    mask = mask.expand(batch, heads, q_len, k_len)
    cols = cols.expand(batch, heads, q_len, prefix_len)
    if mask.dtype != torch.bool:  # additive: 0 where visible, dtype-min where hidden
        hidden = torch.finfo(mask.dtype).min
        cols = torch.zeros_like(cols, dtype=mask.dtype).masked_fill(~cols, hidden)
    return torch.cat([cols, mask], dim=-1)  # (B, heads, Lq, P + Lk)


def _eager_kernel(module: nn.Module) -> Callable:
    """The eager attention function of the module's own model file."""
    kernel = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if kernel is None:
        from transformers.models.bert.modeling_bert import eager_attention_forward as kernel
    return kernel


def _make_prefix_attention(base: str) -> Callable:
    def prefix_attention(module, query, key, value, attention_mask, **kwargs):
        """``query`` ``(B, heads, Lq, hd)``; ``key``/``value`` ``(B, kv_heads, Lk, hd)``."""
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        kernel = sdpa_attention_forward if base == "sdpa" else _eager_kernel(module)
        prefix: PrefixBatch | None = kwargs.pop(PREFIX_KWARG, None)
        layer = getattr(module, "layer_idx", None)
        cross = getattr(module, "is_cross_attention", False)
        if prefix is None or prefix.length == 0 or layer is None or cross:
            return kernel(module, query, key, value, attention_mask, **kwargs)
        B, _, q_len, _ = query.shape
        pk, pv = prefix.layer(layer, B)  # each (B, kv_heads, P, hd)
        key = torch.cat([pk.to(key.dtype), key], dim=2)  # (B, kv_heads, P + Lk, hd)
        value = torch.cat([pv.to(value.dtype), value], dim=2)  # (B, kv_heads, P + Lk, hd)
        causal = kwargs.pop("is_causal", None)
        causal = getattr(module, "is_causal", False) if causal is None else causal
        k_len = key.shape[2] - prefix.length
        mask = widen_mask(
            attention_mask, prefix.mask, B, q_len, k_len, prefix.length, bool(causal) and q_len > 1, query.device
        )
        return kernel(module, query, key, value, mask, is_causal=False, **kwargs)

    return prefix_attention


def register_attention() -> None:
    """Register the prefix-aware attention (and its mask builder) once per process.

    The registered functions are stateless, so sharing them between models is safe.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

    for base, name in ATTENTION_NAMES.items():
        AttentionInterface.register(name, _make_prefix_attention(base))
        AttentionMaskInterface.register(name, sdpa_mask if base == "sdpa" else eager_mask)


def ensure_layer_indices(backbone: nn.Module) -> None:
    """Make sure each self-attention module knows its depth (``layer_idx``).

    Most families set it; a few (DistilBERT) do not, so number their attention
    modules in order. A family that shares one attention module across layers
    (ALBERT) cannot carry one prefix per layer and is refused.
    """
    layers = backbone.config.num_hidden_layers
    indexed = [m for m in backbone.modules() if isinstance(getattr(m, "layer_idx", None), int)]
    if len({m.layer_idx for m in indexed}) == layers:
        return
    attention = [
        m
        for m in backbone.modules()
        if type(m).__name__.endswith("SelfAttention") or type(m).__name__ == "MultiHeadSelfAttention"
    ]
    if len(attention) != layers:
        raise PTuningError(
            f"{type(backbone).__name__}: found {len(attention)} attention modules for {layers} layers; "
            "deep prompts need one attention module per layer (ALBERT-style sharing is not supported)"
        )
    for i, module in enumerate(attention):
        module.layer_idx = i


class AttentionInterfaceInjector(Injector):
    """The default: any family built on ``AttentionInterface`` (the prefix travels as a keyword)."""

    name: ClassVar[str] = "attention-interface"
    support: ClassVar[FamilySupport] = FamilySupport(checkpointing_with_prefix=True, grouped_query_heads=True)

    @classmethod
    def matches(cls, backbone: nn.Module) -> bool:
        return True

    def attach(self, backbone: nn.Module) -> None:
        """Switch ``backbone`` to the prefix-aware attention; without a prefix it is unchanged."""
        ensure_layer_indices(backbone)
        register_attention()
        current = (backbone.config._attn_implementation or "sdpa").removeprefix("ptuning_")
        backbone.set_attn_implementation(ATTENTION_NAMES.get(current, ATTENTION_NAMES["sdpa"]))

    def forward_kwargs(self, prefix: PrefixBatch | None) -> dict:
        return {} if prefix is None else {PREFIX_KWARG: prefix}
