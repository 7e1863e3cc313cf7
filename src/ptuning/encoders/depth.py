"""Running part of a backbone's depth: layers ``[0, L)`` to a hidden state, or ``[L, N)`` from one.

A prompt in the top layers only (``--prefix-layers top:K``) leaves layers ``[0, L)`` as the frozen backbone runs
them, so their output for an input can be kept and only ``[L, N)`` run again (``activations.py``). Running a part
of the depth must keep everything else the family's own forward does: position ids, rotary embeddings, the
causal and padding masks, relative positions (DeBERTa). So nothing here re-implements a family's forward: the
backbone's own ``forward`` runs as usual, and each layer block, wrapped once (:func:`wrap_blocks`), reads a
:class:`DepthPlan` from a :class:`~contextvars.ContextVar` set for that call only and

* skips itself (returns its input unchanged) when it is outside the planned range,
* takes the kept hidden states instead of its input when it is the first planned layer,
* records its input when it is the layer whose input is to be kept, and
* runs without autograd below ``no_grad_below``: nothing there reaches a trained parameter.

Skipped layers cost nothing; the embeddings and mask builders still run (a small share of a layer's cost). The
plan is read outside the layer's own forward, so gradient checkpointing, which replays that forward, replays it
with the same (substituted) input. A ContextVar is per thread and per asyncio task: concurrent calls on other
models or threads never see the plan. Without a plan (every call that does not ask for one) a block runs as is.
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class DepthPlan:
    """Which layers one forward call runs.

    ``start``: layers below it are skipped and ``hidden`` ``(B, L, H)`` enters layer ``start`` (None when
    ``start`` is 0). ``stop``: layers from it on are skipped (None: run to the top). ``capture``: the hidden
    states entering this layer are kept in ``captured`` (detached). ``no_grad_below``: layers below it run
    without autograd.
    """

    start: int = 0
    hidden: torch.Tensor | None = None
    stop: int | None = None
    capture: int | None = None
    no_grad_below: int = 0
    captured: torch.Tensor | None = None

    def skips(self, index: int) -> bool:
        return index < self.start or (self.stop is not None and index >= self.stop)


_PLAN: ContextVar[DepthPlan | None] = ContextVar("ptuning_depth_plan", default=None)


@contextmanager
def planned(plan: DepthPlan | None) -> Iterator[None]:
    """Run the backbone's forward calls inside this block by ``plan`` (None: every layer, as usual)."""
    token = _PLAN.set(plan)
    try:
        yield
    finally:
        _PLAN.reset(token)


def wrap_blocks(blocks: Sequence[nn.Module], returns_tuple: bool = False) -> None:
    """Let each layer block follow the call's :class:`DepthPlan` (idempotent).

    ``blocks[i]`` is layer ``i``; its hidden states come first (positionally or as ``hidden_states``).
    ``returns_tuple``: the family's blocks return ``(hidden, attention)`` (DeBERTa) rather than the hidden
    states alone, so a skipped block does too.
    """
    for index, block in enumerate(blocks):
        if hasattr(block, "_ptuning_block_forward"):
            continue
        block._ptuning_block_forward = block.forward
        block._ptuning_block_index = index
        block._ptuning_block_tuple = returns_tuple
        block.forward = types.MethodType(_planned_forward, block)


def _planned_forward(self, *args, **kwargs):
    plan = _PLAN.get()
    if plan is None:
        return self._ptuning_block_forward(*args, **kwargs)
    index = self._ptuning_block_index
    hidden = args[0] if args else kwargs["hidden_states"]  # (B, L, H)
    if plan.capture == index:
        plan.captured = hidden.detach()
    if plan.skips(index):
        return (hidden, None) if self._ptuning_block_tuple else hidden
    if index == plan.start and plan.hidden is not None:
        if args:  # the kept states as they were captured (dtype included: autocast may have made them bf16)
            args = (plan.hidden, *args[1:])
        else:
            kwargs = {**kwargs, "hidden_states": plan.hidden}
    if index < plan.no_grad_below:
        with torch.no_grad():
            return self._ptuning_block_forward(*args, **kwargs)
    return self._ptuning_block_forward(*args, **kwargs)


def frozen_train_mode(backbone: nn.Module, blocks: Sequence[nn.Module], frozen: int, mode: bool) -> None:
    """Set ``backbone``'s training mode, with everything below layer ``frozen`` (the embeddings and layers
    ``[0, frozen)``) in eval mode: no dropout there, so their output for an input is fixed while training."""
    backbone.train(mode)
    if mode and frozen > 0:
        backbone.eval()
        for block in blocks[frozen:]:
            block.train(True)
