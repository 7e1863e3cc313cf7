"""What a forward call receives from a method: a deep prefix, input-level prompt vectors, or both.

These are plain data, shared by every method and every backbone family: a method produces them
(:meth:`ptuning.method.base.Method.prompt_inputs`), an :class:`~ptuning.encoders.Encoder` consumes
them, and the serving pool builds them for mixed-task batches (rows may use different prompts and
prompt lengths).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


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


@dataclass
class PromptInputs:
    """Everything a method adds to one forward call.

    ``prefix``: per-layer key/value slots (deep prompts). ``embeds``: vectors put in front of the
    word embeddings, ``(P, H)`` shared by all rows or ``(B, P, H)`` per row (input-level prompts).
    """

    prefix: PrefixBatch | None = None
    embeds: torch.Tensor | None = None

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
