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

from ..precision import as_float32

# (layer, hidden (B, L, H) entering that layer's attention, token mask (B, L) or None) -> slot scales (B, P)
PrefixGate = Callable[[int, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclass
class PrefixBatch:
    """The prefix of every row of one batch.

    ``kv`` is ``(n, 2, B, kv_heads, P, head_dim)``, or ``(n, 2, 1, ...)`` when all rows share one prompt:
    one entry per prompted layer. ``layers`` names the backbone layer of each entry (None: entry ``i`` is layer
    ``i``, every layer prompted); a layer it does not name gets no prefix at all, not a zero one (``--prefix-layers``).
    ``mask`` says which slots are real: ``(B, P)`` for every layer, ``(n, B, P)`` per entry (a mixed batch whose
    prompts cover different layers), or None when every slot of every row is real.

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
    layers: tuple[int, ...] | None = None

    @property
    def length(self) -> int:
        return self.kv.shape[-2]

    def entry(self, index: int) -> int | None:
        """The entry of ``kv`` that holds backbone layer ``index``; None for a layer without a prompt."""
        if self.layers is None:
            return index if index < self.kv.shape[0] else None
        return self.layers.index(index) if index in self.layers else None

    def covers(self, index: int) -> bool:
        """Whether layer ``index`` gets a prefix (a zero-length prompt covers no layer)."""
        return self.length > 0 and self.entry(index) is not None

    @property
    def lowest(self) -> int | None:
        """The lowest prompted layer (None: none)."""
        if self.length == 0 or self.kv.shape[0] == 0:
            return None
        return 0 if self.layers is None else min(self.layers)

    def mask_at(self, index: int) -> torch.Tensor | None:
        """Which slots of layer ``index`` are real, ``(B, P)``, or None when all are."""
        if self.mask is None or self.mask.dim() == 2:
            return self.mask
        return self.mask[self.entry(index)]  # (B, P)

    def layer(
        self, index: int, batch_size: int, hidden: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``index``'s keys and values, each ``(B, kv_heads, P, head_dim)`` (the layer must be covered).

        A shared prompt is broadcast over the batch only here, after the layer is picked: picking a layer out of
        an already batch-wide tensor makes autograd zero-fill a gradient the size of every layer's batch-wide
        prefix, once per layer (0.4 s a step at CoNLL-2003's shape on CPU). A gated prefix needs ``hidden``,
        the hidden states ``(B, L, H)`` entering the layer's attention.
        """
        pk, pv = self.kv[self.entry(index)]  # each (B or 1, kv_heads, P, hd)
        pk, pv = pk.expand(batch_size, -1, -1, -1), pv.expand(batch_size, -1, -1, -1)  # (B, kv_heads, P, hd)
        if self.gate is None:
            return pk, pv
        if hidden is None:
            raise RuntimeError("a gated prefix reached attention without the layer's input: attach_layer_hooks()")
        scale = self.gate(index, as_float32(hidden), self.token_mask)[:, None, :, None]  # (B, P) -> (B, 1, P, 1)
        return pk * scale.to(pk.dtype), pv * scale.to(pv.dtype)  # (B, kv_heads, P, hd)

    @classmethod
    def single(cls, prefix: torch.Tensor, layers: range | None = None) -> PrefixBatch:
        """One prompt ``(n, 2, kv, P, hd)`` shared by all rows (any batch size: see :meth:`layer`), in ``layers``
        (None: every layer, ``n`` of them)."""
        named = None if layers is None or layers.start == 0 and len(layers) == prefix.shape[0] else tuple(layers)
        return cls(kv=prefix.unsqueeze(2), layers=named)  # (n, 2, 1, kv, P, hd)

    @classmethod
    def from_stack(cls, stack: PrefixStack, index: torch.Tensor) -> PrefixBatch:
        """Row ``b`` gets prompt ``index[b]`` of ``stack`` (and its gate, when that prompt has one).

        Only the layers some row of this batch prompts are kept; a row whose prompt is shorter than the longest,
        or does not reach a kept layer, has masked slots there (so it sees exactly its own prompt).
        """
        lengths = stack.lengths.to(index.device)[index]  # (B, layers)
        kept = (lengths > 0).any(dim=0).nonzero().flatten()  # (n,) layers some row prompts
        kv = stack.kv[index][:, kept.to(stack.kv.device)]  # (B, n, 2, kv, P, hd)
        kv = kv.permute(1, 2, 0, 3, 4, 5)  # (n, 2, B, kv, P, hd)
        lengths = lengths[:, kept].T  # (n, B)
        gate = RowGates.select(stack, index)
        layers = tuple(kept.tolist())
        if bool((lengths == stack.kv.shape[-2]).all()):
            return cls(kv=kv, gate=gate, layers=layers)
        slots = torch.arange(stack.kv.shape[-2], device=index.device)  # (P,)
        mask = slots[None, None, :] < lengths[:, :, None]  # (n, B, P)
        return cls(kv=kv, mask=mask, gate=gate, layers=layers)


@dataclass
class PrefixStack:
    """Several prompts of possibly different lengths and layers, padded to the longest and to every layer.

    ``kv`` is ``(T, layers, 2, kv_heads, P_max, head_dim)``; ``lengths`` ``(T, layers)`` is each prompt's length
    in each layer (0 where it has none); ``gates`` holds each prompt's :data:`PrefixGate` (None for an ungated
    prompt), or is None when no prompt is gated.
    """

    kv: torch.Tensor
    lengths: torch.Tensor
    gates: tuple[PrefixGate | None, ...] | None = None

    @classmethod
    def build(
        cls,
        prefixes: list[torch.Tensor],
        gates: list[PrefixGate | None] | None = None,
        layers: list[range] | None = None,
        num_layers: int | None = None,
    ) -> PrefixStack:
        """``prefixes[t]`` ``(n_t, 2, kv, P_t, hd)`` in the layers ``layers[t]`` (default: all ``n_t`` of them)."""
        layers = layers or [range(p.shape[0]) for p in prefixes]
        depth = num_layers or max(r.stop for r in layers)
        longest = max(p.shape[-2] for p in prefixes)
        first = prefixes[0]
        kv = first.new_zeros(len(prefixes), depth, *first.shape[1:-2], longest, first.shape[-1])  # (T, N, 2, kv, P, hd)
        lengths = torch.zeros(len(prefixes), depth, dtype=torch.long)  # (T, N)
        for t, (prefix, span) in enumerate(zip(prefixes, layers, strict=True)):
            kv[t, span.start : span.stop, ..., : prefix.shape[-2], :] = prefix
            lengths[t, span.start : span.stop] = prefix.shape[-2]
        gated = gates is not None and any(g is not None for g in gates)
        return cls(kv=kv, lengths=lengths, gates=tuple(gates) if gated else None)


class RowGates:
    """The gate of a mixed batch: each row is scaled by its own prompt's gate, ungated rows by 1.

    A prompt's gate sees only its own rows (their hidden states and token mask), so a row's scales do not
    depend on what else shares the batch, and runs only in the layers its prompt reaches. Padding slots of shorter
    prompts, and every slot of a layer a row's prompt does not reach, keep scale 1 (they are masked).
    """

    def __init__(
        self, members: list[tuple[PrefixGate, torch.Tensor, torch.Tensor]], batch_size: int, slots: int
    ) -> None:
        self.members, self.batch_size, self.slots = members, batch_size, slots  # (gate, rows (n,), lengths (N,))

    @classmethod
    def select(cls, stack: PrefixStack, index: torch.Tensor) -> RowGates | None:
        if stack.gates is None:
            return None
        members = []
        for t, gate in enumerate(stack.gates):
            rows = (index == t).nonzero().flatten()  # (n_t,)
            if gate is not None and rows.numel():
                members.append((gate, rows, stack.lengths[t]))
        return cls(members, index.shape[0], stack.kv.shape[-2]) if members else None

    def __call__(self, layer: int, hidden: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
        scale = torch.ones(self.batch_size, self.slots, device=hidden.device)  # (B, P_max)
        for gate, rows, lengths in self.members:
            length = int(lengths[layer])
            if length == 0:  # this prompt has no prefix in this layer
                continue
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
        prompt = self.generator(as_float32(real.detach()), self.token_mask)  # (B, P, H): nothing below flows back
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
