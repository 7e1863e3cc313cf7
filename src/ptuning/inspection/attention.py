"""Attention statistics of a prompt on real inputs: how much attention real tokens give the prompt, and to which slots,
and how large the prompt's keys and values are beside the backbone's own.

Everything is read from the model's own forward pass through a probe (``encoders/probe.py``): the injector
reports each layer's keys, values and attention probabilities, so nothing of the backbone is computed here.

In every layer the keys a query attends over are laid out as ``[prefix (P) | sequence (N)]``, and the sequence
as ``[input-level prompt (P_in) | tokens (L) | late-prompt slots]``. The prompt's columns are the first
``P + P_in``; real tokens are the ``L`` token positions whose attention mask is 1 (padding, and the padded
choices of a multiple-choice batch, are left out).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..batches import _loader
from ..encoders import AttentionRecord, PromptInputs


@dataclass(frozen=True)
class AttentionSummary:
    """Means over the real tokens of every input seen.

    ``share`` ``(layers, heads)``: the fraction of a real token's attention that goes to the prompt's slots.
    ``slot_share`` ``(layers, slots)``: the same, per slot (mean over heads); a row sums to that layer's share.
    ``prompt_key_norm`` / ``token_key_norm`` (and values) ``(layers, kv_heads)``: the mean L2 norm of one head's
    key (value) vector of a prompt slot / of a real token. A layer the prompt does not enter has no prompt
    norm (NaN). ``probabilities``: False when the family's kernel returned no probabilities (shares are NaN).
    """

    share: torch.Tensor
    slot_share: torch.Tensor
    prompt_key_norm: torch.Tensor
    prompt_value_norm: torch.Tensor
    token_key_norm: torch.Tensor
    token_value_norm: torch.Tensor
    tokens: int
    probabilities: bool


class AttentionStats:
    """A probe (``encoders/probe.py``) that accumulates :class:`AttentionSummary` over batches.

    Call :meth:`batch` before each forward call with that batch's token mask; the probe is then called once per
    layer by the injector.
    """

    def __init__(self, layers: int, heads: int, kv_heads: int, slots: int) -> None:
        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(*shape, dtype=torch.float64)

        self.slots = slots
        self.share, self.slot_share, self.queries = zeros(layers, heads), zeros(layers, slots), zeros(layers)
        self.prompt_norms, self.prompt_vectors = zeros(2, layers, kv_heads), zeros(layers)
        self.token_norms, self.token_vectors = zeros(2, layers, kv_heads), zeros(layers)
        self.probabilities = True
        self._mask: torch.Tensor | None = None
        self._input_slots = 0
        self._tokens = 0

    def batch(self, token_mask: torch.Tensor, input_slots: int) -> None:
        """The next forward call's real tokens ``(B, L)`` (1 = real), and its input-level prompt length."""
        self._mask, self._input_slots = token_mask.double(), input_slots
        self._tokens += int(token_mask.sum())

    def __call__(self, record: AttentionRecord) -> None:
        mask = self._mask.to(record.keys.device)  # (B, L)
        length = mask.shape[1]
        slots = record.prefix_length + self._input_slots  # the prompt's columns come first
        layer = record.layer
        for i, states in enumerate((record.keys, record.values)):
            norms = states.double().norm(dim=-1)  # (B, kv_heads, K)
            tokens = norms[:, :, slots : slots + length]  # (B, kv_heads, L)
            self.token_norms[i, layer] += (tokens * mask[:, None, :]).sum(dim=(0, 2)).cpu()
            if slots:
                self.prompt_norms[i, layer] += norms[:, :, :slots].sum(dim=(0, 2)).cpu()
        self.token_vectors[layer] += float(mask.sum())
        self.prompt_vectors[layer] += mask.shape[0] * slots
        self.queries[layer] += float(mask.sum())
        if record.probs is None:
            self.probabilities = False
            return
        start = self._input_slots
        probs = record.probs[:, :, start : start + length, :slots].double()  # (B, heads, L, slots): real queries
        weight = mask[:, None, :]  # (B, 1, L)
        self.share[layer] += (probs.sum(dim=-1) * weight).sum(dim=(0, 2)).cpu()  # (heads,)
        per_slot = (probs.mean(dim=1) * mask[:, :, None]).sum(dim=(0, 1))  # (B, L, slots) -> (slots,)
        self.slot_share[layer, :slots] += per_slot.cpu()

    def summary(self) -> AttentionSummary:
        queries = self.queries.clamp(min=1)[:, None]  # (layers, 1)
        nan = torch.tensor(float("nan"), dtype=torch.float64)

        def mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
            return torch.where(count[:, None] > 0, total / count.clamp(min=1)[:, None], nan)  # (layers, kv_heads)

        share = self.share / queries if self.probabilities else torch.full_like(self.share, float("nan"))
        slot_share = self.slot_share / queries if self.probabilities else torch.full_like(self.slot_share, float("nan"))
        return AttentionSummary(
            share=share,
            slot_share=slot_share,
            prompt_key_norm=mean(self.prompt_norms[0], self.prompt_vectors),
            prompt_value_norm=mean(self.prompt_norms[1], self.prompt_vectors),
            token_key_norm=mean(self.token_norms[0], self.token_vectors),
            token_value_norm=mean(self.token_norms[1], self.token_vectors),
            tokens=self._tokens,
            probabilities=self.probabilities,
        )


def real_tokens(batch: dict) -> torch.Tensor:
    """The batch's real tokens as the backbone sees its rows, ``(rows, L)``: multiple-choice ``(B, C, L)`` inputs
    run as ``B * C`` rows, and a padded choice (a repeat of the first, ``choice_mask`` 0) counts no token."""
    mask = batch["attention_mask"]
    if mask.dim() == 3:
        B, C, L = mask.shape
        choices = batch["choice_mask"].reshape(B * C, 1).to(mask.dtype)  # (B*C, 1)
        return mask.reshape(B * C, L) * choices  # (B*C, L)
    return mask


@torch.no_grad()
def attention_statistics(
    model, features: list[dict], collate, batch_size: int, prompt: PromptInputs | None = None
) -> AttentionSummary:
    """The :class:`AttentionSummary` of ``model`` (its own prompt, or ``prompt``) over ``features``.

    Raises :class:`~ptuning.errors.PTuningError` when the backbone family cannot report its attention.
    """
    model.eval()
    prompt = model.method.prompt_inputs() if prompt is None else prompt
    g = model.encoder.geometry
    prefix = 0 if prompt.prefix is None else prompt.prefix.length
    stats = AttentionStats(g.num_layers, g.num_heads, g.num_kv_heads, prefix + prompt.input_positions)
    device = next(model.parameters()).device
    inputs = [{k: v for k, v in f.items() if k != "labels"} for f in features]
    with model.encoder.probe(stats):
        for batch in _loader(inputs, collate, batch_size, None):
            batch = {k: v.to(device) for k, v in batch.items()}
            stats.batch(real_tokens(batch), prompt.input_positions)
            model(**batch, prompt=prompt)
    return stats.summary()
