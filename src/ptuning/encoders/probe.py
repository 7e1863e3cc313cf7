"""Watching attention from outside the backbone: what ``ptuning inspect`` reads in every layer.

A probe is a callable that every self-attention layer calls, inside the injector's attention function,
with an :class:`AttentionRecord`: the keys and values the layer attended over (prefix slots first) and
its attention probabilities. The injector puts it where the prompt already is, so nothing of the backbone
is re-implemented: what the probe sees is what the model computed.

Why a ``ContextVar`` and not a keyword like the prefix: a probe only observes inference, and it must reach
every layer through the whole model call (multiple-choice flattening, heads) without any of those layers
passing it on. A ContextVar is per thread and per asyncio task, so a probe never sees another call's
attention. With no probe set, :func:`report` is one ``ContextVar.get`` per layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AttentionRecord:
    """One self-attention layer's call, as the probe sees it.

    ``keys`` / ``values``: ``(B, kv_heads, P + N, head_dim)``, the layer's ``P`` prefix slots first, then the
    ``N`` positions of the sequence the backbone runs (input-level prompt tokens included). ``probs``:
    ``(B, heads, N, P + N)``, each query's attention over those columns, or None where the family's kernel
    does not return probabilities.
    """

    layer: int
    keys: torch.Tensor
    values: torch.Tensor
    probs: torch.Tensor | None
    prefix_length: int


AttentionProbe = Callable[[AttentionRecord], None]

_PROBE: ContextVar[AttentionProbe | None] = ContextVar("ptuning_attention_probe", default=None)


@contextmanager
def listening(probe: AttentionProbe) -> Iterator[None]:
    """Within this context (this thread or task only), every attention layer reports to ``probe``."""
    token = _PROBE.set(probe)
    try:
        yield
    finally:
        _PROBE.reset(token)


def probing() -> bool:
    """Whether a probe listens in this context (an injector may then take a path that exposes probabilities)."""
    return _PROBE.get() is not None


def report(
    layer: int, keys: torch.Tensor, values: torch.Tensor, probs: torch.Tensor | None, prefix_length: int
) -> None:
    """Called by the injectors in every self-attention layer; a no-op unless a probe listens."""
    probe = _PROBE.get()
    if probe is not None:
        probe(
            AttentionRecord(
                layer, keys.detach(), values.detach(), None if probs is None else probs.detach(), prefix_length
            )
        )
