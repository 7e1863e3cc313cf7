"""DeBERTa-v2/v3: the injector for a family with its own attention code.

DeBERTa computes its own disentangled attention (content + relative-position
terms) and neither uses ``transformers.AttentionInterface`` nor forwards extra
keyword arguments, so the prefix reaches it through a :class:`ContextVar` set
for the duration of one forward call. A ContextVar is per thread and per
asyncio task, so concurrent calls on other models or threads never see it.
Prefix slots have no position: they get the content score only and zero
relative-position bias. Gradient checkpointing would replay layers outside the
call's context, so this family declares it unsupported (:class:`FamilySupport`).
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import ClassVar

import torch
from torch import nn

from .base import FamilySupport, Injector
from .prompts import PrefixBatch

_ACTIVE_PREFIX: ContextVar[PrefixBatch | None] = ContextVar("ptuning_deberta_prefix", default=None)


@contextmanager
def active_prefix(prefix: PrefixBatch | None) -> Iterator[None]:
    token = _ACTIVE_PREFIX.set(prefix)
    try:
        yield
    finally:
        _ACTIVE_PREFIX.reset(token)


class DebertaInjector(Injector):
    """DeBERTa's DisentangledSelfAttention takes no extra keyword: the prefix travels in a ContextVar."""

    name: ClassVar[str] = "deberta"
    support: ClassVar[FamilySupport] = FamilySupport(checkpointing_with_prefix=False, grouped_query_heads=False)

    @classmethod
    def matches(cls, backbone: nn.Module) -> bool:
        return getattr(backbone.config, "model_type", "") in {"deberta-v2", "deberta"}

    def attach(self, backbone: nn.Module) -> None:
        """Give every DisentangledSelfAttention a prefix-aware forward and a layer index (once)."""
        layer_idx = 0
        for module in backbone.modules():
            if type(module).__name__ == "DisentangledSelfAttention":
                module.layer_idx = layer_idx
                if not hasattr(module, "_ptuning_plain_forward"):
                    module._ptuning_plain_forward = module.forward
                    module.forward = types.MethodType(_forward_with_prefix, module)
                layer_idx += 1

    def context(self, prefix: PrefixBatch | None):
        return active_prefix(prefix)


def _forward_with_prefix(
    self,
    hidden_states,
    attention_mask,
    output_attentions=False,
    query_states=None,
    relative_pos=None,
    rel_embeddings=None,
):
    prefix = _ACTIVE_PREFIX.get()
    if prefix is None or prefix.length == 0:
        return self._ptuning_plain_forward(
            hidden_states, attention_mask, output_attentions, query_states, relative_pos, rel_embeddings
        )
    heads = self.num_attention_heads
    if query_states is None:
        query_states = hidden_states
    q = self.transpose_for_scores(self.query_proj(query_states), heads)  # (B*heads, L, hd)
    k = self.transpose_for_scores(self.key_proj(hidden_states), heads)  # (B*heads, L, hd)
    v = self.transpose_for_scores(self.value_proj(hidden_states), heads)  # (B*heads, L, hd)
    scale_factor = 1 + ("c2p" in self.pos_att_type) + ("p2c" in self.pos_att_type)
    scale = (q.size(-1) * scale_factor) ** 0.5
    scores = torch.bmm(q, k.transpose(-1, -2)) / scale  # (B*heads, L, L)
    if self.relative_attention:
        rel = self.pos_dropout(rel_embeddings)
        scores = scores + self.disentangled_attention_bias(q, k, relative_pos, rel, scale_factor)

    B = hidden_states.shape[0]
    pk, pv = prefix.layer(self.layer_idx, B)  # each (B, heads, P, hd)
    P = pk.shape[2]
    pk = pk.reshape(B * heads, P, -1).to(q.dtype)  # (B*heads, P, hd)
    pv = pv.reshape(B * heads, P, -1).to(v.dtype)  # (B*heads, P, hd)
    prefix_scores = torch.bmm(q, pk.transpose(-1, -2)) / scale  # (B*heads, L, P): no position bias
    scores = torch.cat([prefix_scores, scores], dim=-1)  # (B*heads, L, P + L)
    L = scores.shape[1]
    scores = scores.view(B, heads, L, P + L)  # (B, heads, L, P + L)

    real = attention_mask.bool()  # (B, 1, L, L)
    real = real.expand(B, 1, L, real.shape[-1]) if real.dim() == 4 else real[:, None]
    cols = torch.ones(B, 1, L, P, dtype=torch.bool, device=q.device)
    if prefix.mask is not None:
        cols = prefix.mask[:, None, None, :].expand(B, 1, L, P)  # (B, 1, L, P)
    mask = torch.cat([cols, real], dim=-1)  # (B, 1, L, P + L)
    scores = scores.masked_fill(~mask, torch.finfo(q.dtype).min)
    probs = self.dropout(nn.functional.softmax(scores, dim=-1))  # (B, heads, L, P + L)
    context = torch.bmm(probs.view(B * heads, L, P + L), torch.cat([pv, v], dim=1))  # (B*heads, L, hd)
    context = context.view(B, heads, L, -1).permute(0, 2, 1, 3).reshape(B, L, -1)  # (B, L, heads*hd)
    return (context, probs if output_attentions else None)
