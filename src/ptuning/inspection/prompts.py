"""The prompt's own tensors: nearest vocabulary tokens of input-level prompts, and how alike two prompts are.

Which tensors are "the prompt" is the method's to say (:meth:`~ptuning.method.Method.deep_prefix`,
:meth:`~ptuning.method.Method.input_prompt`); nothing here knows a method by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def nearest_tokens(prompt: torch.Tensor, embeddings: torch.Tensor, tokenizer, k: int) -> list[dict]:
    """For each prompt vector ``(P, H)``, the ``k`` vocabulary tokens whose input embeddings ``(V, H)`` are closest
    in cosine, closest first. Soft prompts usually sit far from every token (cosines well below 1): the nearest
    token says what a slot resembles, not what it means."""
    cosine = nn.functional.normalize(prompt.float(), dim=-1) @ nn.functional.normalize(embeddings.float(), dim=-1).T
    values, ids = cosine.topk(min(k, embeddings.shape[0]), dim=-1)  # (P, k) each
    rows = []
    for slot, (slot_values, slot_ids) in enumerate(zip(values.tolist(), ids.tolist(), strict=True)):
        tokens = tokenizer.convert_ids_to_tokens(slot_ids)
        rows.append(
            {
                "slot": slot,
                "nearest": [
                    {"token": token, "id": i, "cosine": round(c, 4)}
                    for token, i, c in zip(tokens, slot_ids, slot_values, strict=True)
                ],
            }
        )
    return rows


@dataclass(frozen=True)
class PromptVectors:
    """One artifact's prompt summarised per layer for comparisons.

    ``kind``: ``deep`` (one vector per layer: the mean over slots of the prefix's keys and values, all heads
    concatenated) or ``input`` (one "layer": the mean input-level prompt vector). Slots of a prefix have no order
    or position, and prompts of different lengths must compare, so the mean slot stands for the layer.
    ``space`` names the vector space: prompts compare only on the same backbone weights.
    """

    name: str
    kind: str
    space: str
    vectors: torch.Tensor  # (layers, D) or (1, H)


def prompt_vectors(name: str, method, space: str) -> PromptVectors | None:
    """The :class:`PromptVectors` of ``method``'s prompt, or None when it has no prefix or input prompt."""
    with torch.no_grad():
        prefix = method.deep_prefix()
        if prefix is not None and prefix.shape[-2] > 0:
            layers = prefix.shape[0]
            mean = prefix.float().mean(dim=-2)  # (layers, 2, kv, P, hd) -> (layers, 2, kv, hd)
            return PromptVectors(name, "deep", space, mean.reshape(layers, -1).cpu())  # (layers, 2*kv*hd)
        embeds = method.input_prompt()
        if embeds is not None and embeds.shape[0] > 0:
            return PromptVectors(name, "input", space, embeds.float().mean(dim=0, keepdim=True).cpu())  # (1, H)
    return None


def similarity(prompts: list[PromptVectors]) -> dict:
    """Per-layer cosine similarity of every pair of comparable prompts.

    Returns ``{"pairs": [{"a", "b", "kind", "cosine": [per layer]}], "skipped": [reasons]}``; a pair is skipped
    when its prompts are of different kinds, backbones or depths.
    """
    pairs, skipped = [], []
    for i, a in enumerate(prompts):
        for b in prompts[i + 1 :]:
            reason = _incomparable(a, b)
            if reason:
                skipped.append(f"{a.name} vs {b.name}: {reason}")
                continue
            cosine = nn.functional.cosine_similarity(a.vectors, b.vectors, dim=-1)  # (layers,)
            pairs.append({"a": a.name, "b": b.name, "kind": a.kind, "cosine": [round(float(c), 4) for c in cosine]})
    return {"pairs": pairs, "skipped": skipped}


def _incomparable(a: PromptVectors, b: PromptVectors) -> str:
    if a.kind != b.kind:
        return f"a {a.kind} prompt and a {b.kind} prompt live in different spaces"
    if a.space != b.space:
        return "trained on different backbones"
    if a.vectors.shape != b.vectors.shape:
        return f"prompt shapes differ ({tuple(a.vectors.shape)} vs {tuple(b.vectors.shape)})"
    return ""
