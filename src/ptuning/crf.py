"""A linear-chain CRF over IOB2 tags, with the IOB2 constraints built in.

Transitions that make an invalid sequence (``O`` -> ``I-X``, ``B-X`` -> ``I-Y``,
start -> ``I-X``) get a fixed score of -10,000 in training and decoding, so
Viterbi never emits an ``I-`` that does not continue its entity. Only the
positions in ``mask`` (first sub-tokens of the words a window owns) form the
chain; they are packed to the left of each row first.
"""

from __future__ import annotations

import torch
from torch import nn

FORBIDDEN = -10_000.0


def allowed_transitions(labels: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(start (T,), transitions (T, T))``: 0 where IOB2 allows it, FORBIDDEN where not."""
    T = len(labels)
    start = torch.zeros(T)
    trans = torch.zeros(T, T)
    for j, tag in enumerate(labels):
        if tag.startswith("I-"):
            start[j] = FORBIDDEN
            kind = tag[2:]
            for i, prev in enumerate(labels):
                if prev not in (f"B-{kind}", f"I-{kind}"):
                    trans[i, j] = FORBIDDEN
    return start, trans


def pack(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the masked positions of each row to the left: ``(B, L, ...)`` -> ``(B, N, ...)`` and a ``(B, N)`` mask."""
    lengths = mask.sum(dim=1)  # (B,)
    N = int(lengths.max().clamp(min=1))
    order = torch.argsort((~mask).int(), dim=1, stable=True)[:, :N]  # masked positions first, in order
    index = order.view(*order.shape, *([1] * (values.dim() - 2))).expand(-1, -1, *values.shape[2:])
    packed = values.gather(1, index)  # (B, N, ...)
    packed_mask = torch.arange(N, device=mask.device)[None, :] < lengths[:, None]  # (B, N)
    return packed, packed_mask


class CRF(nn.Module):
    def __init__(self, labels: tuple[str, ...]) -> None:
        super().__init__()
        T = len(labels)
        self.transitions = nn.Parameter(torch.zeros(T, T))
        self.start = nn.Parameter(torch.zeros(T))
        self.end = nn.Parameter(torch.zeros(T))
        start_mask, trans_mask = allowed_transitions(labels)
        self.register_buffer("start_mask", start_mask, persistent=False)
        self.register_buffer("trans_mask", trans_mask, persistent=False)

    def _scores(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.start + self.start_mask, self.transitions + self.trans_mask

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood of ``tags`` (B, L) at the ``mask`` positions."""
        emissions, packed_mask = pack(emissions, mask)  # (B, N, T)
        tags, _ = pack(tags, mask)  # (B, N)
        tags = tags.clamp(min=0)
        start, trans = self._scores()
        B, N, T = emissions.shape
        rows = torch.arange(B, device=emissions.device)
        # score of the gold path
        gold = start[tags[:, 0]] + emissions[rows, 0, tags[:, 0]]
        for t in range(1, N):
            step = trans[tags[:, t - 1], tags[:, t]] + emissions[rows, t, tags[:, t]]
            gold = gold + step * packed_mask[:, t]
        last = tags[rows, packed_mask.sum(1).clamp(min=1) - 1]
        gold = gold + self.end[last]
        # log partition function
        alpha = start[None, :] + emissions[:, 0]  # (B, T)
        for t in range(1, N):
            nxt = torch.logsumexp(alpha[:, :, None] + trans[None] + emissions[:, t, None, :], dim=1)  # (B, T)
            alpha = torch.where(packed_mask[:, t, None], nxt, alpha)
        log_z = torch.logsumexp(alpha + self.end[None, :], dim=1)  # (B,)
        has_any = mask.any(dim=1)
        return ((log_z - gold) * has_any).sum() / has_any.sum().clamp(min=1)

    @torch.no_grad()
    def viterbi(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Best tag per position ``(B, L)`` (-1 outside ``mask``)."""
        packed, packed_mask = pack(emissions, mask)  # (B, N, T)
        start, trans = self._scores()
        B, N, T = packed.shape
        score = start[None, :] + packed[:, 0]  # (B, T)
        history = []
        for t in range(1, N):
            total = score[:, :, None] + trans[None]  # (B, T_prev, T)
            best, arg = total.max(dim=1)  # (B, T)
            history.append(arg)
            score = torch.where(packed_mask[:, t, None], best + packed[:, t], score)
        score = score + self.end[None, :]
        lengths = packed_mask.sum(1)
        path = torch.full((B, N), -1, dtype=torch.long, device=emissions.device)
        current = score.argmax(dim=1)  # (B,)
        for b in range(B):
            n = int(lengths[b])
            if n == 0:
                continue
            tag = int(current[b])
            path[b, n - 1] = tag
            for t in range(n - 1, 0, -1):
                tag = int(history[t - 1][b, tag])
                path[b, t - 1] = tag
        out = torch.full(mask.shape, -1, dtype=torch.long, device=emissions.device)
        positions, _ = pack(torch.arange(mask.shape[1], device=mask.device).expand_as(mask), mask)
        for b in range(B):
            n = int(lengths[b])
            out[b, positions[b, :n]] = path[b, :n]
        return out
