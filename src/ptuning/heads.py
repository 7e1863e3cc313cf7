"""Task heads: plain linear layers on the backbone's hidden states.

P-Tuning v2 drops verbalizers for a randomly initialised linear head; one head
per task family, shared by every backbone and every method.
"""

from __future__ import annotations

import torch
from torch import nn

POOLINGS = ("auto", "cls", "mean", "last")
# The first token through a dense layer and tanh: BERT's pooler, RoBERTa's classification head. Only sequence
# classification heads take it, and only imported heads use it (``ptuning import-peft``), not ``--pooling``.
DENSE_POOLING = "pooler"


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str) -> torch.Tensor:
    """Reduce ``(B, L, H)`` to ``(B, H)``.

    ``cls`` takes the first token (encoders), ``last`` the last non-pad token
    (decoders, which only see the whole input there), ``mean`` averages real tokens.
    """
    if how == "cls":
        return hidden[:, 0]  # (B, H)
    if how == "last":
        last = attention_mask.long().sum(dim=1).clamp(min=1) - 1  # (B,)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (B, H)
    if how == "mean":
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)  # (B, H)
    raise ValueError(f"unknown pooling {how!r}; choose one of {POOLINGS}")


class SequenceClassificationHead(nn.Module):
    """Pool, dropout, linear. ``num_labels == 1`` is regression.

    ``pooling`` :data:`DENSE_POOLING` pools the first token through ``dense`` and tanh, as BERT's and RoBERTa's
    own sequence-classification models do, so a classifier trained on top of those (a PEFT adapter's) gives
    the same logits here.
    """

    def __init__(self, hidden_size: int, num_labels: int, pooling: str, dropout: float = 0.1) -> None:
        super().__init__()
        self.pooling = pooling
        self.dense = nn.Linear(hidden_size, hidden_size) if pooling == DENSE_POOLING else None
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor, **_) -> torch.Tensor:
        if self.dense is not None:
            pooled = torch.tanh(self.dense(hidden[:, 0]))  # (B, H)
        else:
            pooled = pool(hidden, attention_mask, self.pooling)  # (B, H)
        return self.classifier(self.dropout(pooled))  # (B, num_labels)


class MultiTaskHead(nn.Module):
    """One head per task of a mixture, over one shared prompt: each batch names its task (``task=NAME``).

    Only the named head runs, so heads of any shape (classification, choices, tokens, spans) sit side by
    side; artifacts store each as its own head (``artifact.py``) and load any one of them alone.
    """

    def __init__(self, heads: dict[str, nn.Module]) -> None:
        super().__init__()
        self.heads = nn.ModuleDict(heads)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor, task: str, **inputs) -> torch.Tensor:
        return self.heads[task](hidden, attention_mask, **inputs)


class LanguageModelHead(nn.Module):
    """The backbone's own LM head as a task head (generation): next-token logits ``(B, L, vocab)``.

    It is the backbone's, not the task's: it starts frozen and is never saved with a prompt (an artifact would
    otherwise carry the whole vocabulary matrix). With tied embeddings it is the input embedding matrix itself,
    so fine-tuning trains it with the backbone and saves it there; a separate LM head stays frozen.
    """

    def __init__(self, output_embeddings: nn.Module) -> None:
        super().__init__()
        self.output = output_embeddings
        self.output.requires_grad_(False)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor, **_) -> torch.Tensor:
        return self.output(hidden)  # (B, L, H) -> (B, L, vocab)

    def state_dict(self, *args, **kwargs) -> dict:
        """Nothing of its own to save: the weights are the backbone's."""
        return {}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if state_dict:
            raise ValueError(f"an LM head loads nothing from an artifact, got {sorted(state_dict)[:3]}")
        return nn.modules.module._IncompatibleKeys([], [])
