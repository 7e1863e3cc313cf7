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

Gated prefixes and late prompts (:meth:`AttentionInterfaceInjector.attach_layer_hooks`): the attention
function receives ``module, query, key, value, attention_mask`` and keywords, not the hidden states, so
forward pre-hooks carry them in. A hook on each layer's attention module adds the hidden states it
receives to that call's keywords (``ptuning_gate_input``) when the call's prefix has a gate; a hook on each
layer block replaces the placeholder slots of a :class:`LatePrompt` by the generated prompt at its layer.
Both read only the call's own keywords (so checkpointing replays them too), and are registered only by
methods that need them: a plain deep prompt runs no hook at all.

Inspection (``ptuning inspect``, ``encoders/probe.py``): every call of the attention function reports the
keys and values it attended over and the kernel's probabilities to a probe, when one listens. Only the eager
kernels return probabilities, so :meth:`AttentionInterfaceInjector.probe_context` switches to them for as
long as the probe listens.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import ClassVar

import torch
from torch import nn

from ..errors import PTuningError
from .base import FamilySupport, Injector
from .probe import AttentionProbe, listening, report
from .prompts import LatePrompt, PrefixBatch

PREFIX_KWARG = "ptuning_prefix"
LATE_KWARG = "ptuning_late"
GATE_INPUT_KWARG = "ptuning_gate_input"
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


def explicit_mask(
    mask: torch.Tensor | None, batch: int, q_len: int, k_len: int, causal: bool, device: torch.device
) -> torch.Tensor:
    """Any mask the model hands the attention function, as booleans ``(B, heads or 1, Lq, Lk)`` (True = attend)."""
    if mask is None:
        real = torch.ones(q_len, k_len, dtype=torch.bool, device=device)
        return (real.tril(diagonal=k_len - q_len) if causal else real).expand(batch, 1, q_len, k_len)
    mask = mask if mask.dtype == torch.bool else mask == 0  # additive: 0 where visible
    return mask.expand(batch, mask.shape[1], q_len, k_len)


def as_kernel_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask for the SDPA kernel (``dtype`` bool), or additive in ``dtype`` for the eager kernels."""
    if dtype == torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


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
        late: LatePrompt | None = kwargs.pop(LATE_KWARG, None)
        hidden = kwargs.pop(GATE_INPUT_KWARG, None)  # (B, L, H) entering this attention, for a gated prefix
        layer = getattr(module, "layer_idx", None)
        if layer is None or getattr(module, "is_cross_attention", False):
            prefix = late = None
        if prefix is not None and (prefix.length == 0 or not prefix.enters(layer)):
            prefix = None
        if prefix is None and late is None:
            output = kernel(module, query, key, value, attention_mask, **kwargs)
            if layer is not None:
                report(layer, key, value, output[1], 0)  # (B, kv_heads, Lk, hd); weights (B, heads, Lq, Lk) or None
            return output
        B, _, q_len, _ = query.shape
        k_len = key.shape[2]
        causal = kwargs.pop("is_causal", None)
        causal = bool(getattr(module, "is_causal", False) if causal is None else causal) and q_len > 1
        mask = attention_mask
        if late is not None:  # the prompt slots' visibility at this layer; the mask now carries causality
            visible = late.visibility(explicit_mask(mask, B, q_len, k_len, causal, query.device), layer, causal)
            mask, causal = as_kernel_mask(visible, torch.bool if base == "sdpa" else query.dtype), False
        if prefix is not None:
            pk, pv = prefix.layer(layer, B, hidden)  # each (B, kv_heads, P, hd)
            key = torch.cat([pk.to(key.dtype), key], dim=2)  # (B, kv_heads, P + Lk, hd)
            value = torch.cat([pv.to(value.dtype), value], dim=2)  # (B, kv_heads, P + Lk, hd)
            mask = widen_mask(mask, prefix.mask, B, q_len, k_len, prefix.length, causal, query.device)
        output = kernel(module, query, key, value, mask, is_causal=False, **kwargs)
        report(layer, key, value, output[1], 0 if prefix is None else prefix.length)  # probs (B, heads, Lq, P + Lk)
        return output

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


def layer_modules(backbone: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """``(layer block, its self-attention module)`` per layer, in order.

    The attention module of layer ``i`` is the innermost module with ``layer_idx == i`` (a family may number
    its blocks too); the block is the entry of the backbone's layer list that holds it.
    """
    layers = backbone.config.num_hidden_layers
    attention: dict[int, tuple[str, nn.Module]] = {}
    for name, module in backbone.named_modules():
        index = getattr(module, "layer_idx", None)
        if isinstance(index, int) and not getattr(module, "is_cross_attention", False):
            if index not in attention or name.startswith(attention[index][0] + "."):
                attention[index] = (name, module)
    blocks = next(
        (m for m in backbone.modules() if isinstance(m, nn.ModuleList) and len(m) == layers),
        None,
    )
    if blocks is None or sorted(attention) != list(range(layers)):
        raise PTuningError(f"{type(backbone).__name__}: cannot find one block and one attention module per layer")
    pairs = []
    for i, block in enumerate(blocks):
        if not any(m is attention[i][1] for m in block.modules()):
            raise PTuningError(f"{type(backbone).__name__}: layer {i}'s attention is not inside block {i}")
        pairs.append((block, attention[i][1]))
    return pairs


def _stash_gate_input(module: nn.Module, args: tuple, kwargs: dict):
    """Attention pre-hook: a gated prefix gets the hidden states this attention receives, in the call's keywords."""
    prefix = kwargs.get(PREFIX_KWARG)
    if prefix is None or prefix.gate is None:
        return None
    hidden = args[0] if args else kwargs["hidden_states"]  # (B, L, H)
    return args, {**kwargs, GATE_INPUT_KWARG: hidden}


def _insert_late_prompt(layer: int, module: nn.Module, args: tuple, kwargs: dict):
    """Layer pre-hook: at the late prompt's layer, its placeholder slots become the generated prompt."""
    late: LatePrompt | None = kwargs.get(LATE_KWARG)
    if late is None or late.layer != layer:
        return None
    if args:
        return (late.insert(args[0]), *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": late.insert(kwargs["hidden_states"])}


def uses_rotary_positions(backbone: nn.Module) -> bool:
    """Whether positions enter every layer (rotary embeddings) rather than once, at the input."""
    return any("Rotary" in type(m).__name__ for m in backbone.modules())


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

    @contextmanager
    def probe_context(self, backbone: nn.Module, probe: AttentionProbe) -> Iterator[None]:
        """The eager kernels return their attention probabilities (SDPA's do not): switch to them while ``probe``
        listens, then back. Both compute the same attention; only the kernel differs."""
        self.attach(backbone)
        previous = backbone.config._attn_implementation
        backbone.set_attn_implementation(ATTENTION_NAMES["eager"])
        try:
            with listening(probe):
                yield
        finally:
            backbone.set_attn_implementation(previous)

    rotary: bool = False

    def attach_layer_hooks(self, backbone: nn.Module) -> None:
        """Forward pre-hooks that bring each layer's input to a gate and insert late prompts (once per backbone)."""
        self.rotary = uses_rotary_positions(backbone)
        for i, (block, attention) in enumerate(layer_modules(backbone)):
            if not getattr(attention, "_ptuning_layer_hooks", False):
                attention.register_forward_pre_hook(_stash_gate_input, with_kwargs=True)
                block.register_forward_pre_hook(partial(_insert_late_prompt, i), with_kwargs=True)
                attention._ptuning_layer_hooks = True

    def forward_kwargs(self, prefix: PrefixBatch | None, late: LatePrompt | None = None) -> dict:
        """The prefix (and a late prompt) as keywords. Rotary families get explicit position ids with a late
        prompt: real tokens keep their positions ``0..L-1``, prompt slots take position 0 (no rotation), so a
        row's result does not depend on how long the batch is padded."""
        kwargs = {} if prefix is None else {PREFIX_KWARG: prefix}
        if late is not None:
            kwargs[LATE_KWARG] = late
            if self.rotary:
                B, L = late.token_mask.shape
                positions = torch.arange(L, device=late.token_mask.device).expand(B, L)  # (B, L)
                kwargs["position_ids"] = nn.functional.pad(positions, (0, late.length))  # (B, L + P)
        return kwargs
