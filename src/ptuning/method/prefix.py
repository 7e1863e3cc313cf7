"""P-Tuning v2: deep prompts as per-layer key/value prefixes.

The whole method is this file:

* :class:`PrefixEncoder` turns ``P`` trainable slots into one key and one value
  vector per layer, head and slot, optionally through the reparameterisation MLP
  of the paper (Embedding -> Linear -> Tanh -> Linear).
* :class:`PrefixBatch` carries, for one forward call, the prefix of every row of
  the batch (rows may use different prompts and prompt lengths).
* :func:`prefix_attention` is registered in ``transformers.AttentionInterface``.
  It prepends the layer's prefix keys/values to the model's own keys/values,
  widens the attention mask so every query sees every (valid) prefix slot, and
  hands the result to the model's own kernel (sdpa or eager).

Why the attention interface and not ``past_key_values``: a cache makes encoders
shift the position ids of real tokens by ``P`` (the official code does this), so
a prompt eats into the backbone's maximum length and changes what the model
saw in pre-training. Here real tokens keep positions ``0..L-1``.

Why a keyword argument and not a global: the prefix travels as
``ptuning_prefix=`` through the model's ``**kwargs`` down to the attention
function. Nothing is stored on the model or in a module-level variable, so two
models (or two threads) with different prompts never see each other's prefix,
and gradient checkpointing replays the same prefix when it recomputes a layer.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

PREFIX_KWARG = "ptuning_prefix"
ATTENTION_NAMES = {"sdpa": "ptuning_sdpa", "eager": "ptuning_eager"}


class PrefixEncoder(nn.Module):
    """Produces the per-layer key/value prefix of one prompt.

    With ``reparam`` the prefix is ``MLP(Embedding(P, hidden))``, which the paper
    finds helps on some tasks; the MLP is only a training device and is folded
    away (:meth:`fold`) before an artifact is saved. Without it, ``init_std`` is
    the standard deviation the prefix vectors start from.
    """

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
            # The scale the prefix starts at: 0.02 (BERT's own init) starts far below the backbone's key/value
            # scale (RMS ~1); 1.0 is nn.Embedding's default, which the official code and PEFT keep.
            nn.init.normal_(self.embedding.weight, std=init_std)
        self.dropout = nn.Dropout(dropout)

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


@dataclass
class PrefixBatch:
    """The prefix of every row of one batch.

    ``kv`` is ``(layers, 2, B, kv_heads, P, head_dim)``, or ``(layers, 2, 1, ...)``
    when all rows share one prompt; ``mask`` is ``(B, P)`` with True for real
    slots (rows whose prompt is shorter than ``P`` have masked padding slots),
    or None when every slot of every row is real.
    """

    kv: torch.Tensor
    mask: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return self.kv.shape[-2]

    def layer(self, index: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``index``'s keys and values, each ``(B, kv_heads, P, head_dim)``.

        A shared prompt is broadcast over the batch only here, after the layer is picked: picking a layer out of
        an already batch-wide tensor makes autograd zero-fill a gradient the size of every layer's batch-wide
        prefix, once per layer (0.4 s a step at CoNLL-2003's shape on CPU).
        """
        pk, pv = self.kv[index]  # each (B or 1, kv_heads, P, hd)
        return pk.expand(batch_size, -1, -1, -1), pv.expand(batch_size, -1, -1, -1)  # (B, kv_heads, P, hd)

    @classmethod
    def single(cls, prefix: torch.Tensor) -> PrefixBatch:
        """One prompt ``(layers, 2, kv, P, hd)`` shared by all rows (any batch size: see :meth:`layer`)."""
        return cls(kv=prefix.unsqueeze(2))  # (layers, 2, 1, kv, P, hd)

    @classmethod
    def from_stack(cls, stack: PrefixStack, index: torch.Tensor) -> PrefixBatch:
        """Row ``b`` gets prompt ``index[b]`` of ``stack``."""
        kv = stack.kv[index]  # (B, layers, 2, kv, P, hd)
        kv = kv.permute(1, 2, 0, 3, 4, 5)  # (layers, 2, B, kv, P, hd)
        lengths = stack.lengths.to(index.device)[index]  # (B,)
        if bool((lengths == stack.kv.shape[-2]).all()):
            return cls(kv=kv)
        slots = torch.arange(stack.kv.shape[-2], device=index.device)  # (P,)
        return cls(kv=kv, mask=slots[None, :] < lengths[:, None])  # (B, P)


@dataclass
class PrefixStack:
    """Several prompts of possibly different lengths, padded to the longest.

    ``kv`` is ``(T, layers, 2, kv_heads, P_max, head_dim)``, ``lengths`` ``(T,)``.
    """

    kv: torch.Tensor
    lengths: torch.Tensor

    @classmethod
    def build(cls, prefixes: list[torch.Tensor]) -> PrefixStack:
        longest = max(p.shape[-2] for p in prefixes)
        padded = [nn.functional.pad(p, (0, 0, 0, longest - p.shape[-2])) for p in prefixes]
        kv = torch.stack(padded)  # (T, layers, 2, kv, P_max, hd)
        return cls(kv=kv, lengths=torch.tensor([p.shape[-2] for p in prefixes]))


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
        mask = widen_mask(
            attention_mask,
            prefix.mask,
            B,
            q_len,
            key.shape[2] - prefix.length,
            prefix.length,
            bool(causal) and q_len > 1,
            query.device,
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


def attach(backbone: nn.Module) -> None:
    """Switch ``backbone`` to the prefix-aware attention; without a prefix it is unchanged."""
    register_attention()
    current = backbone.config._attn_implementation or "sdpa"
    current = current.removeprefix("ptuning_")
    if current not in ATTENTION_NAMES:
        current = "sdpa"
    backbone.set_attn_implementation(ATTENTION_NAMES[current])
