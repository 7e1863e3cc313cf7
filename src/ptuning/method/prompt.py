"""Input-level (shallow) prompts: Lester et al. prompt tuning and P-tuning v1.

Both prepend ``P`` continuous vectors to the *word* embeddings of the input and
pass the result as ``inputs_embeds``, so the backbone adds position and
token-type embeddings (and its embedding LayerNorm) exactly once, as for any
other token. They differ only in how the vectors are produced:

* ``prompt-tuning``: the vectors are free parameters (initialised from the
  embeddings of real vocabulary tokens, as Lester et al. recommend);
* ``ptv1``: the vectors come out of a prompt encoder (bi-LSTM + MLP, or MLP
  only) applied to free parameters, as in P-tuning v1.

Both are the baselines the paper compares against; deep prompts live in ``prefix.py``.
"""

from __future__ import annotations

import torch
from torch import nn


class SoftPrompt(nn.Module):
    """``P`` free vectors of the backbone's embedding width (Lester et al.)."""

    def __init__(self, prompt_length: int, embeddings: nn.Embedding, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        # sample real tokens from the first 5000 ids, skipping the low special ids
        start = min(1000, max(embeddings.num_embeddings - 1, 0))
        stop = min(embeddings.num_embeddings, start + 5000)
        ids = torch.randint(start, max(stop, start + 1), (prompt_length,), generator=generator)
        ids = ids.clamp(max=embeddings.num_embeddings - 1)
        self.weight = nn.Parameter(embeddings.weight[ids].detach().clone())  # (P, H)

    def forward(self) -> torch.Tensor:
        return self.weight  # (P, H)


class PromptEncoder(nn.Module):
    """P-tuning v1 prompt encoder: free vectors -> (bi-LSTM) -> MLP."""

    def __init__(self, prompt_length: int, hidden_size: int, kind: str = "lstm") -> None:
        super().__init__()
        if kind not in {"lstm", "mlp"}:
            raise ValueError(f"prompt encoder must be 'lstm' or 'mlp', not {kind!r}")
        self.embedding = nn.Embedding(prompt_length, hidden_size)
        self.lstm = (
            nn.LSTM(hidden_size, hidden_size // 2, num_layers=2, bidirectional=True, batch_first=True)
            if kind == "lstm"
            else None
        )
        self.mlp = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self) -> torch.Tensor:
        """The prompt, always in float32.

        The encoder sees only ``P`` vectors, so autocast would save nothing here,
        and the CPU LSTM kernel has no bf16 path: run it outside autocast.
        """
        device = self.embedding.weight.device.type
        with torch.autocast(device_type=device, enabled=False):
            x = self.embedding.weight.unsqueeze(0)  # (1, P, H)
            if self.lstm is not None:
                x = self.lstm(x)[0]  # (1, P, H)
            return self.mlp(x).squeeze(0)  # (P, H)


def prepend_prompt(
    word_embeds: torch.Tensor,
    prompt: torch.Tensor,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Put the prompt in front of the input.

    ``word_embeds`` ``(B, L, H)``, ``prompt`` ``(P, H)`` or ``(B, P, H)``. The prompt
    slots are attended to and take token type 0.
    """
    B, P = word_embeds.shape[0], prompt.shape[-2]
    if prompt.dim() == 2:
        prompt = prompt.unsqueeze(0).expand(B, -1, -1)  # (B, P, H)
    embeds = torch.cat([prompt.to(word_embeds.dtype), word_embeds], dim=1)  # (B, P + L, H)
    ones = attention_mask.new_ones(B, P)
    mask = torch.cat([ones, attention_mask], dim=1)  # (B, P + L)
    if token_type_ids is not None:
        token_type_ids = torch.cat([token_type_ids.new_zeros(B, P), token_type_ids], dim=1)  # (B, P + L)
    return embeds, mask, token_type_ids
