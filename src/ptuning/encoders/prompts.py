"""What a forward call receives from a method: a deep prefix, input-level prompt vectors, or both.

These are plain data, shared by every method and every backbone family: a method produces them
(:meth:`ptuning.method.base.Method.prompt_inputs`), an :class:`~ptuning.encoders.Encoder` consumes
them, and the serving pool builds them for mixed-task batches (rows may use different prompts and
prompt lengths).

Two members depend on the input itself and need the layer's input inside the backbone (the injector's
:meth:`~ptuning.encoders.Injector.attach_layer_hooks` brings it there): a :class:`PrefixBatch` may carry a
``gate`` that scales each row's prefix slots from the hidden states entering the layer (APT), and
:class:`PromptInputs` may carry a :class:`LatePrompt`, tokens generated from the hidden states entering
layer ``K`` and inserted into the sequence there (LPT).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

# (layer, hidden (B, L, H) entering that layer's attention, token mask (B, L) or None) -> slot scales (B, P)
PrefixGate = Callable[[int, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclass
class PrefixBatch:
    """The prefix of every row of one batch.

    ``kv`` is ``(layers, 2, B, kv_heads, P, head_dim)``, or ``(layers, 2, 1, ...)``
    when all rows share one prompt; ``mask`` is ``(B, P)`` with True for real
    slots (rows whose prompt is shorter than ``P`` have masked padding slots),
    or None when every slot of every row is real.

    ``gate`` (optional, see :data:`PrefixGate`) scales layer ``l``'s keys and values of every row and slot
    by ``gate(l, hidden, token_mask)``, computed from the hidden states entering that layer; the encoder
    sets ``token_mask`` (the call's attention mask) before the call. Without a gate nothing of this runs.

    ``layers`` (optional): the only layers the prefix enters; every other layer runs as the plain backbone
    (``ptuning inspect``'s per-layer ablation). None: every layer.
    """

    kv: torch.Tensor
    mask: torch.Tensor | None = None
    gate: PrefixGate | None = None
    token_mask: torch.Tensor | None = None
    layers: frozenset[int] | None = None

    @property
    def length(self) -> int:
        return self.kv.shape[-2]

    def enters(self, layer: int) -> bool:
        """Whether layer ``layer`` gets this prefix (see ``layers``)."""
        return self.layers is None or layer in self.layers

    def layer(
        self, index: int, batch_size: int, hidden: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``index``'s keys and values, each ``(B, kv_heads, P, head_dim)``.

        A shared prompt is broadcast over the batch only here, after the layer is picked: picking a layer out of
        an already batch-wide tensor makes autograd zero-fill a gradient the size of every layer's batch-wide
        prefix, once per layer (0.4 s a step at CoNLL-2003's shape on CPU). A gated prefix needs ``hidden``,
        the hidden states ``(B, L, H)`` entering the layer's attention.
        """
        pk, pv = self.kv[index]  # each (B or 1, kv_heads, P, hd)
        pk, pv = pk.expand(batch_size, -1, -1, -1), pv.expand(batch_size, -1, -1, -1)  # (B, kv_heads, P, hd)
        if self.gate is None:
            return pk, pv
        if hidden is None:
            raise RuntimeError("a gated prefix reached attention without the layer's input: attach_layer_hooks()")
        scale = self.gate(index, hidden, self.token_mask)[:, None, :, None]  # (B, P) -> (B, 1, P, 1)
        return pk * scale.to(pk.dtype), pv * scale.to(pv.dtype)  # (B, kv_heads, P, hd)

    @classmethod
    def single(cls, prefix: torch.Tensor) -> PrefixBatch:
        """One prompt ``(layers, 2, kv, P, hd)`` shared by all rows (any batch size: see :meth:`layer`)."""
        return cls(kv=prefix.unsqueeze(2))  # (layers, 2, 1, kv, P, hd)

    @classmethod
    def from_stack(cls, stack: PrefixStack, index: torch.Tensor) -> PrefixBatch:
        """Row ``b`` gets prompt ``index[b]`` of ``stack`` (and its gate, when that prompt has one)."""
        kv = stack.kv[index]  # (B, layers, 2, kv, P, hd)
        kv = kv.permute(1, 2, 0, 3, 4, 5)  # (layers, 2, B, kv, P, hd)
        lengths = stack.lengths.to(index.device)[index]  # (B,)
        gate = RowGates.select(stack, index)
        if bool((lengths == stack.kv.shape[-2]).all()):
            return cls(kv=kv, gate=gate)
        slots = torch.arange(stack.kv.shape[-2], device=index.device)  # (P,)
        return cls(kv=kv, mask=slots[None, :] < lengths[:, None], gate=gate)  # mask (B, P)


@dataclass
class PrefixStack:
    """Several prompts of possibly different lengths, padded to the longest.

    ``kv`` is ``(T, layers, 2, kv_heads, P_max, head_dim)``, ``lengths`` ``(T,)``; ``gates`` holds each
    prompt's :data:`PrefixGate` (None for an ungated prompt), or is None when no prompt is gated.
    """

    kv: torch.Tensor
    lengths: torch.Tensor
    gates: tuple[PrefixGate | None, ...] | None = None

    @classmethod
    def build(cls, prefixes: list[torch.Tensor], gates: list[PrefixGate | None] | None = None) -> PrefixStack:
        longest = max(p.shape[-2] for p in prefixes)
        padded = [nn.functional.pad(p, (0, 0, 0, longest - p.shape[-2])) for p in prefixes]
        kv = torch.stack(padded)  # (T, layers, 2, kv, P_max, hd)
        gated = gates is not None and any(g is not None for g in gates)
        return cls(kv=kv, lengths=torch.tensor([p.shape[-2] for p in prefixes]), gates=tuple(gates) if gated else None)


class RowGates:
    """The gate of a mixed batch: each row is scaled by its own prompt's gate, ungated rows by 1.

    A prompt's gate sees only its own rows (their hidden states and token mask), so a row's scales do not
    depend on what else shares the batch. Padding slots of shorter prompts keep scale 1 (they are masked).
    """

    def __init__(self, members: list[tuple[PrefixGate, torch.Tensor, int]], batch_size: int, slots: int) -> None:
        self.members, self.batch_size, self.slots = members, batch_size, slots  # (gate, rows (n,), P_t)

    @classmethod
    def select(cls, stack: PrefixStack, index: torch.Tensor) -> RowGates | None:
        if stack.gates is None:
            return None
        members = []
        for t, gate in enumerate(stack.gates):
            rows = (index == t).nonzero().flatten()  # (n_t,)
            if gate is not None and rows.numel():
                members.append((gate, rows, int(stack.lengths[t])))
        return cls(members, index.shape[0], stack.kv.shape[-2]) if members else None

    def __call__(self, layer: int, hidden: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
        scale = torch.ones(self.batch_size, self.slots, device=hidden.device)  # (B, P_max)
        for gate, rows, length in self.members:
            mask = None if token_mask is None else token_mask[rows]  # (n_t, L)
            scale[rows, :length] = gate(layer, hidden[rows], mask).to(scale.dtype)  # (n_t, P_t)
        return scale


@dataclass
class LatePrompt:
    """``length`` prompt tokens generated from the hidden states entering layer ``layer`` and inserted there (LPT).

    ``generator(hidden, token_mask)`` maps the (detached) hidden states ``(B, L, H)`` entering layer
    ``layer`` and the token mask ``(B, L)`` to the prompt ``(B, P, H)``. The encoder runs the sequence with
    ``P`` placeholder tokens appended; layers below ``layer`` never attend to them, ``layer`` replaces them
    by the generated prompt (:meth:`insert`), and from there on they are ordinary tokens of the sequence
    (:meth:`visibility`). They are stripped after the last layer. ``token_mask`` is set by the encoder.
    """

    layer: int
    length: int
    generator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    token_mask: torch.Tensor | None = None

    def insert(self, hidden: torch.Tensor) -> torch.Tensor:
        """``hidden`` ``(B, L + P, H)`` entering layer ``layer``, its last ``P`` placeholders replaced by the prompt."""
        real = hidden[:, : hidden.shape[1] - self.length]  # (B, L, H)
        prompt = self.generator(real.detach(), self.token_mask)  # (B, P, H): nothing below flows back
        return torch.cat([real, prompt.to(hidden.dtype)], dim=1)  # (B, L + P, H)

    def visibility(self, mask: torch.Tensor, layer: int, causal: bool) -> torch.Tensor:
        """Who sees the prompt slots at ``layer``: a boolean mask ``(B, h, L + P, L + P)`` (True = attend), rewritten.

        Real tokens see the prompt from layer ``self.layer`` on, never below. Prompt tokens see the real tokens
        and each other (a causal model: only the prompt tokens before them, as if prepended at that layer).
        """
        mask = mask.clone()
        real = mask.shape[-1] - self.length
        mask[..., :real, real:] = layer >= self.layer  # (B, h, L, P)
        if causal:
            mask[..., real:, :real] = False
            mask[..., real:, real:] = torch.ones(self.length, self.length, dtype=torch.bool, device=mask.device).tril()
        else:
            mask[..., real:, :real] = self.token_mask.bool()[:, None, None, :]  # (B, 1, 1, L) -> (B, h, P, L)
            mask[..., real:, real:] = True
        return mask


@dataclass
class PromptInputs:
    """Everything a method adds to one forward call.

    ``prefix``: per-layer key/value slots (deep prompts). ``embeds``: vectors put in front of the
    word embeddings, ``(P, H)`` shared by all rows or ``(B, P, H)`` per row (input-level prompts).
    ``late``: tokens inserted into the sequence at an intermediate layer (:class:`LatePrompt`).

    ``position_offset``: number the real tokens from this position instead of 0, as a prefix held in a
    key/value cache of that many slots is numbered (PEFT, the official code); the injector says how its
    family takes it (:meth:`~ptuning.encoders.Injector.shifted_positions`). ``drop_token_types``: run
    without ``token_type_ids`` (every token segment 0), as PEFT's prompt-learning models do.
    """

    prefix: PrefixBatch | None = None
    embeds: torch.Tensor | None = None
    late: LatePrompt | None = None
    position_offset: int = 0
    drop_token_types: bool = False

    @property
    def input_positions(self) -> int:
        """Input positions the prompt occupies (stripped from the hidden states afterwards)."""
        return 0 if self.embeds is None else self.embeds.shape[-2]


def prepend_prompt(
    word_embeds: torch.Tensor,
    prompt: torch.Tensor,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Put an input-level prompt in front of the input.

    ``word_embeds`` ``(B, L, H)``, ``prompt`` ``(P, H)`` or ``(B, P, H)``. The prompt slots are attended
    to and take token type 0; the backbone then adds position and token-type embeddings (and its
    embedding LayerNorm) exactly once, as for any other token.
    """
    B, P = word_embeds.shape[0], prompt.shape[-2]
    if prompt.dim() == 2:
        prompt = prompt.unsqueeze(0).expand(B, -1, -1)  # (B, P, H)
    embeds = torch.cat([prompt.to(word_embeds.dtype), word_embeds], dim=1)  # (B, P + L, H)
    mask = torch.cat([attention_mask.new_ones(B, P), attention_mask], dim=1)  # (B, P + L)
    if token_type_ids is not None:
        token_type_ids = torch.cat([token_type_ids.new_zeros(B, P), token_type_ids], dim=1)  # (B, P + L)
    return embeds, mask, token_type_ids
