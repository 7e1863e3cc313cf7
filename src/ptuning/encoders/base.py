"""The contract of a backbone family's injector: how a deep prefix reaches that family's attention.

A family whose attention goes through ``transformers.AttentionInterface`` (BERT, RoBERTa, ELECTRA,
ModernBERT, GPT-2, Llama, Qwen2, ...) shares one injector (``attention.py``); a family with its own
attention code (DeBERTa) has its own. Adding a backbone family = one injector module + one line in
``encoders/__init__.py``'s ``INJECTORS``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..errors import PTuningError
from .probe import AttentionProbe
from .prompts import LatePrompt, PrefixBatch


@dataclass(frozen=True)
class FamilySupport:
    """What a backbone family can do with a deep prefix.

    ``checkpointing_with_prefix``: gradient checkpointing replays layers with the same prefix.
    ``grouped_query_heads``: prefixes are shaped by key/value heads, not query heads.
    """

    checkpointing_with_prefix: bool = True
    grouped_query_heads: bool = True


class Injector:
    """Puts a :class:`PrefixBatch` into one backbone family's attention, without shifting positions."""

    name: ClassVar[str] = "base"
    support: ClassVar[FamilySupport] = FamilySupport()

    @classmethod
    def matches(cls, backbone: nn.Module) -> bool:
        """Whether this injector serves ``backbone``'s family."""
        raise NotImplementedError

    def attach(self, backbone: nn.Module) -> None:
        """Make ``backbone`` prefix-aware; without a prefix its outputs must stay unchanged. Idempotent."""
        raise NotImplementedError

    def attach_layer_hooks(self, backbone: nn.Module) -> None:
        """Let prompts that depend on a layer's input work (idempotent): a prefix's ``gate`` must receive the
        hidden states entering each layer's attention (``PrefixBatch.layer(i, B, hidden)``), and a
        :class:`LatePrompt` must replace its placeholder slots at its layer's input and set their visibility
        in every layer (:meth:`LatePrompt.insert`, :meth:`LatePrompt.visibility`). Only methods that use
        them call this; plain deep prompts must stay untouched. A family that cannot refuses in one line."""
        raise PTuningError(f"{type(backbone).__name__}: gated prefixes and late prompts are not supported")

    def forward_kwargs(self, prefix: PrefixBatch | None, late: LatePrompt | None = None) -> dict:
        """Keyword arguments that carry ``prefix`` (and a late prompt) through the backbone's forward call."""
        return {}

    def context(self, prefix: PrefixBatch | None, late: LatePrompt | None = None) -> AbstractContextManager:
        """A context the backbone's forward call runs in (for families that cannot take a keyword)."""
        return nullcontext()

    def probe_context(self, backbone: nn.Module, probe: AttentionProbe) -> AbstractContextManager:
        """A context in which every self-attention layer of ``backbone`` reports its keys, values and attention
        probabilities to ``probe`` (``encoders/probe.py``: the injector calls :func:`~ptuning.encoders.probe.report`
        where it puts the prefix in). Inference only; outputs must not change. A family that cannot refuses in one
        line, and ``ptuning inspect`` then says so."""
        raise PTuningError(f"{type(backbone).__name__}: this backbone family cannot report its attention")

    def shifted_positions(self, backbone: nn.Module, input_ids: torch.Tensor, offset: int) -> dict:
        """Forward keywords that number the real tokens of ``input_ids`` ``(B, L)`` as a key/value cache of
        ``offset`` slots would: what a model computes itself when given ``past_key_values`` of that length.

        Absolute and rotary positions alike: ``offset .. offset + L - 1``. Families whose embeddings count real
        tokens from the padding index (RoBERTa, XLM-R: ``create_position_ids_from_input_ids``) use their own rule
        with the cache length, so padding keeps its padding position.
        """
        embeddings = getattr(backbone, "embeddings", None)
        padded = getattr(type(embeddings), "create_position_ids_from_input_ids", None)
        if padded is not None and getattr(embeddings, "padding_idx", None) is not None:
            return {"position_ids": padded(input_ids, embeddings.padding_idx, offset)}  # (B, L)
        B, L = input_ids.shape
        return {"position_ids": torch.arange(offset, offset + L, device=input_ids.device).expand(B, L)}  # (B, L)
