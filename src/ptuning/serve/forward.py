"""Running one planned sub-batch through the shared backbone, and the synthetic forward the planner is calibrated on.

Rows of tasks with a deep prefix may share a forward whatever their task: the sub-batch's distinct
prefixes are padded to the longest *of that sub-batch* (never to the longest loaded prompt) and each
row indexes its own. A sub-batch of one task passes its prefix once, broadcast over the rows.
Rows of input-level prompts run in sub-batches of their own prompt.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..encoders import Encoder, PrefixBatch, PrefixStack, PromptInputs

BACKBONE_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class Sequence:
    """One sequence of one prepared row: a row has one per choice (multiple choice) or per window (long inputs)."""

    row: int
    features: dict
    prompt: object  # the LoadedPrompt of the row's task

    @property
    def length(self) -> int:
        return len(self.features["input_ids"])


def chunk_prefix(prompts: list, device: torch.device) -> PrefixBatch | None:
    """The prefix of a sub-batch whose row ``b`` belongs to ``prompts[b]``: None when no row has prefix slots."""
    distinct = list({id(p): p for p in prompts}.values())
    if max(p.prefix.shape[-2] for p in distinct) == 0 and all(p.gate is None for p in distinct):
        return None  # head-only rows: the plain backbone
    if len(distinct) == 1:
        only = distinct[0]
        return PrefixBatch(kv=only.prefix.unsqueeze(2), gate=only.gate)  # (layers, 2, 1, kv, P, hd): broadcast
    stack = PrefixStack.build([p.prefix for p in distinct], [p.gate for p in distinct])  # padded to this chunk only
    position = {id(p): i for i, p in enumerate(distinct)}
    index = torch.tensor([position[id(p)] for p in prompts], device=device)  # (B,)
    return PrefixBatch.from_stack(stack, index)


def run_chunk(encoder: Encoder, collate: Callable, chunk: list[Sequence], device: torch.device) -> list[torch.Tensor]:
    """Logits of every sequence of ``chunk`` (all sharing one forward), in order."""
    feats = [s.features for s in chunk]
    batch = collate([{k: f[k] for k in BACKBONE_INPUTS if k in f} for f in feats])
    batch = {k: v.to(device) for k, v in batch.items()}
    first = chunk[0].prompt
    if first.prefix is not None:
        prompt = PromptInputs(prefix=chunk_prefix([s.prompt for s in chunk], device))
    else:
        prompt = first.prompt  # an input-level prompt: the chunk holds this task's rows only
    hidden = encoder(**batch, prompt=prompt)  # (B, L, H)
    groups: dict[int, list[int]] = defaultdict(list)
    for position, sequence in enumerate(chunk):
        groups[id(sequence.prompt)].append(position)
    length = batch["input_ids"].shape[1]
    scores: list[torch.Tensor | None] = [None] * len(chunk)
    for positions in groups.values():
        loaded = chunk[positions[0]].prompt
        index = torch.tensor(positions, device=device)
        extra = {
            key: torch.tensor(
                [list(feats[j][key]) + [0] * (length - len(feats[j][key])) for j in positions], device=device
            )
            for key in feats[positions[0]]
            if key not in BACKBONE_INPUTS
        }
        logits = loaded.head(hidden[index], batch["attention_mask"][index], **extra).float().cpu()
        for j, row_logits in zip(positions, logits, strict=True):
            scores[j] = row_logits
    return scores


def synthetic_forward(encoder: Encoder, collate: Callable, device: torch.device) -> Callable[[int, int, int], None]:
    """A mixed-task forward of ``rows`` rows of ``length`` tokens with ``prefix``-slot prompts: what is calibrated.

    Two prompts alternate over the rows, so the timed path is the shared one (stacking and per-row gather).
    """
    g = encoder.geometry
    vocab = int(getattr(encoder.config, "vocab_size", 2) or 2)

    def forward(rows: int, length: int, prefix: int) -> None:
        feats = [{"input_ids": [1 + i % (vocab - 1)] * length, "attention_mask": [1] * length} for i in range(rows)]
        batch = {k: v.to(device) for k, v in collate(feats).items()}
        prompt = None
        if prefix:
            kv = torch.zeros(g.num_layers, 2, g.num_kv_heads, prefix, g.head_dim, device=device)
            stack = PrefixStack.build([kv, kv.clone()])
            index = torch.arange(rows, device=device) % 2  # (B,)
            prompt = PromptInputs(prefix=PrefixBatch.from_stack(stack, index))
        with torch.inference_mode():
            encoder(**batch, prompt=prompt)

    return forward
