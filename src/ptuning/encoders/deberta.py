"""DeBERTa-v2/v3: the injector for a family with its own attention code.

DeBERTa computes its own disentangled attention (content + relative-position
terms) and neither uses ``transformers.AttentionInterface`` nor forwards extra
keyword arguments, so the prefix reaches it through a :class:`ContextVar` set
for the duration of one forward call. A ContextVar is per thread and per
asyncio task, so concurrent calls on other models or threads never see it.
Prefix slots have no position: they get the content score only and zero
relative-position bias. Gradient checkpointing would replay layers outside the
call's context, so this family declares it unsupported (:class:`FamilySupport`).

A gated prefix gets the layer's input directly (the attention receives ``hidden_states``); a late prompt
is inserted by a forward pre-hook on its layer, which reads the same context. Late prompt tokens, like
prefix slots, have no position: content scores only, no relative-position bias.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial
from typing import ClassVar

import torch
from torch import nn

from .base import FamilySupport, Injector
from .probe import AttentionProbe, listening, probing, report
from .prompts import LatePrompt, PrefixBatch

_ACTIVE: ContextVar[tuple[PrefixBatch | None, LatePrompt | None]] = ContextVar(
    "ptuning_deberta_prompt", default=(None, None)
)


@contextmanager
def active_prefix(prefix: PrefixBatch | None, late: LatePrompt | None = None) -> Iterator[None]:
    token = _ACTIVE.set((prefix, late))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def _insert_late_prompt(layer: int, module: nn.Module, args: tuple):
    """Layer pre-hook: at the late prompt's layer, its placeholder slots become the generated prompt."""
    late = _ACTIVE.get()[1]
    if late is None or late.layer != layer:
        return None
    return (late.insert(args[0]), *args[1:])


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

    def attach_layer_hooks(self, backbone: nn.Module) -> None:
        """The attention already receives the layer's input; late prompts need a pre-hook on each layer (once)."""
        self.attach(backbone)
        layers = [m for m in backbone.modules() if type(m).__name__ in {"DebertaV2Layer", "DebertaLayer"}]
        for i, layer in enumerate(layers):
            if not getattr(layer, "_ptuning_layer_hooks", False):
                layer.register_forward_pre_hook(partial(_insert_late_prompt, i))
                layer._ptuning_layer_hooks = True

    def context(self, prefix: PrefixBatch | None, late: LatePrompt | None = None):
        return active_prefix(prefix, late)

    def probe_context(self, backbone: nn.Module, probe: AttentionProbe):
        """The prefix-aware forward computes the probabilities itself; it takes that path, prefix or not, while
        ``probe`` listens."""
        self.attach(backbone)
        return listening(probe)


def _forward_with_prefix(
    self,
    hidden_states,
    attention_mask,
    output_attentions=False,
    query_states=None,
    relative_pos=None,
    rel_embeddings=None,
):
    prefix, late = _ACTIVE.get()
    if prefix is not None and (prefix.length == 0 or not prefix.enters(self.layer_idx)):
        prefix = None
    if prefix is None and late is None and not probing():
        return self._ptuning_plain_forward(
            hidden_states, attention_mask, output_attentions, query_states, relative_pos, rel_embeddings
        )
    heads = self.num_attention_heads
    if query_states is None:
        query_states = hidden_states
    q = self.transpose_for_scores(self.query_proj(query_states), heads)  # (B*heads, N, hd)
    k = self.transpose_for_scores(self.key_proj(hidden_states), heads)  # (B*heads, N, hd)
    v = self.transpose_for_scores(self.value_proj(hidden_states), heads)  # (B*heads, N, hd)
    scale_factor = 1 + ("c2p" in self.pos_att_type) + ("p2c" in self.pos_att_type)
    scale = (q.size(-1) * scale_factor) ** 0.5
    scores = torch.bmm(q, k.transpose(-1, -2)) / scale  # (B*heads, N, N)
    n = scores.shape[-1] - (0 if late is None else late.length)  # real tokens; late prompt slots follow them
    if self.relative_attention:
        rel = self.pos_dropout(rel_embeddings)
        pos = None if relative_pos is None else relative_pos[..., :n, :n]
        bias = self.disentangled_attention_bias(q[:, :n], k[:, :n], pos, rel, scale_factor)  # (B*heads, n, n)
        scores = scores + nn.functional.pad(bias, (0, scores.shape[-1] - n, 0, scores.shape[-2] - n))  # (.., N, N)

    B = hidden_states.shape[0]
    N = scores.shape[1]
    scores = scores.view(B, heads, N, N)  # (B, heads, N, N)
    real = attention_mask.bool()  # (B, 1, N, N)
    real = real.expand(B, 1, N, real.shape[-1]) if real.dim() == 4 else real[:, None]
    if late is not None:
        real = late.visibility(real, self.layer_idx, causal=False)  # (B, 1, N, N)
    values, keys, P = v, k, 0
    if prefix is not None:
        pk, pv = prefix.layer(self.layer_idx, B, hidden_states)  # each (B, heads, P, hd)
        P = pk.shape[2]
        pk = pk.reshape(B * heads, P, -1).to(q.dtype)  # (B*heads, P, hd)
        pv = pv.reshape(B * heads, P, -1).to(v.dtype)  # (B*heads, P, hd)
        prefix_scores = torch.bmm(q, pk.transpose(-1, -2)) / scale  # (B*heads, N, P): no position bias
        scores = torch.cat([prefix_scores.view(B, heads, N, P), scores], dim=-1)  # (B, heads, N, P + N)
        cols = torch.ones(B, 1, N, P, dtype=torch.bool, device=q.device)
        if prefix.mask is not None:
            cols = prefix.mask[:, None, None, :].expand(B, 1, N, P)  # (B, 1, N, P)
        real = torch.cat([cols, real], dim=-1)  # (B, 1, N, P + N)
        values = torch.cat([pv, v], dim=1)  # (B*heads, P + N, hd)
        keys = torch.cat([pk, k], dim=1)  # (B*heads, P + N, hd)
    K = scores.shape[-1]
    scores = scores.masked_fill(~real, torch.finfo(q.dtype).min)
    probs = self.dropout(nn.functional.softmax(scores, dim=-1))  # (B, heads, N, K)
    if probing():
        report(self.layer_idx, keys.view(B, heads, K, -1), values.view(B, heads, K, -1), probs, P)  # (B, h, K, hd)
    context = torch.bmm(probs.view(B * heads, N, K), values)  # (B*heads, N, hd)
    context = context.view(B, heads, N, -1).permute(0, 2, 1, 3).reshape(B, N, -1)  # (B, N, heads*hd)
    return (context, probs if output_attentions else None)
