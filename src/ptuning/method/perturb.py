"""PTP: perturbation-based regularisers for prompt tuning (Chen et al., EMNLP 2023).

"PTP: Boosting Stability and Performance of Prompt Tuning with Perturbation-Based Regularizer" finds the
loss landscape of prompt tuning precipitous in the *input*: a small change of the input data moves the
loss a lot, which makes runs unstable across seeds. It smooths it by training on perturbed inputs as
well as clean ones, with random noise (PTP-RN) or an adversarial perturbation (PTP-ADV), in text space
or in embedding space. This module implements the embedding-space variants on top of P-Tuning v2
(``--method ptv2 --perturb noise|adversarial``); the text-space ones (masking or substituting words)
are not implemented.

Choices where the paper leaves them open (or where its numbers were not at hand), made here:

* **What is perturbed**: the input's word embeddings (the output of the backbone's input-embedding
  module, before position/type embeddings and the embedding LayerNorm), at real-token positions only.
  The prompt (the prefix) is never perturbed: it is what is trained.
* **Loss**: the clean loss plus the perturbed loss, summed (training on the original and the perturbed
  batch). The logged training loss is therefore about twice plain ptv2's.
* **Size** ``eps`` (``--perturb-eps``): the perturbation's root-mean-square norm per real token. Noise is
  Gaussian with standard deviation ``eps / sqrt(H)`` per coordinate (so each token's noise has norm
  ``~eps``); the adversarial perturbation is one gradient-ascent step (FGSM, i.e. PGD with one step; a
  single forward/backward more per batch), normalised per example as FreeLB's embedding-space steps are,
  and scaled so that each example's perturbation has
  Frobenius norm ``eps * sqrt(real tokens)``. Default 0.02: 2% of a BERT-like word embedding's norm (1.07
  on average for the bundled MiniLM), in the range FreeLB's BERT step sizes give per token (its adversarial
  step is normalised per example, ~0.1 over ~128 tokens). The paper's own magnitudes were not at hand
  when this was written: treat 0.02 as this library's default, not the paper's, and tune it.
* The perturbation is a training device only: nothing is added to the parameters, inference (evaluation,
  artifacts, serving) runs the plain prompt.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

PERTURBATIONS = ("none", "noise", "adversarial")
DEFAULT_EPS = 0.02


@contextmanager
def perturbed_inputs(embedding: nn.Module, perturbation: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Within the block, ``embedding``'s output ``words`` becomes ``words + perturbation(words)``."""

    def hook(module: nn.Module, args, words: torch.Tensor) -> torch.Tensor:
        return words + perturbation(words)

    handle = embedding.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def token_mask(attention_mask: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """``(N, L, 1)`` float mask of real tokens matching ``words`` ``(N, L, H)`` (multiple-choice rows are flat)."""
    mask = attention_mask.reshape(-1, words.shape[-2])  # (B, L) or (B*C, L)
    if mask.shape[0] != words.shape[0]:
        raise RuntimeError(f"input embeddings {tuple(words.shape)} do not match the attention mask {tuple(mask.shape)}")
    return mask.to(words.dtype).unsqueeze(-1)  # (N, L, 1)


def noise(words: torch.Tensor, attention_mask: torch.Tensor, eps: float) -> torch.Tensor:
    """PTP-RN: Gaussian noise of RMS norm ``eps`` per real token, zero at padding, ``(N, L, H)``."""
    scale = eps / math.sqrt(words.shape[-1])
    return torch.randn_like(words) * scale * token_mask(attention_mask, words)


def adversarial(grad: torch.Tensor, attention_mask: torch.Tensor, eps: float) -> torch.Tensor:
    """PTP-ADV: one normalised ascent step along ``grad`` (the loss's gradient w.r.t. the word embeddings).

    Each example's step has Frobenius norm ``eps * sqrt(real tokens)`` over its real tokens, padding gets
    none; an example whose gradient is zero (or not finite, as under fp16 overflow) is not perturbed.
    """
    mask = token_mask(attention_mask, grad)  # (N, L, 1)
    g = torch.nan_to_num(grad.float(), nan=0.0, posinf=0.0, neginf=0.0) * mask  # (N, L, H)
    norm = g.flatten(1).norm(dim=1).clamp_min(1e-12)  # (N,)
    size = eps * mask.flatten(1).sum(dim=1).sqrt()  # (N,)
    return (g * (size / norm)[:, None, None]).to(grad.dtype).detach()  # (N, L, H)


def perturbed_loss(
    kind: str,
    eps: float,
    embedding: nn.Module,
    forward: Callable[..., torch.Tensor],
    batch: dict,
    labels: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Clean loss + the loss on inputs perturbed by ``kind`` (``noise`` or ``adversarial``) of size ``eps``.

    The adversarial direction comes from ``torch.autograd.grad`` w.r.t. a zero perturbation added to the
    word embeddings in the clean pass: it accumulates no ``.grad`` anywhere and the clean pass's graph is
    kept for the caller's ``backward``. Nothing here steps or changes a parameter.
    """
    mask = batch["attention_mask"]
    if kind == "noise":
        clean = loss_fn(forward(**batch), labels)
        with perturbed_inputs(embedding, lambda words: noise(words, mask, eps)):
            return clean + loss_fn(forward(**batch), labels)
    if kind != "adversarial":
        raise ValueError(f"unknown perturbation {kind!r}")
    probes: list[torch.Tensor] = []

    def probe(words: torch.Tensor) -> torch.Tensor:
        probes.append(torch.zeros_like(words, requires_grad=True))
        return probes[-1]

    with perturbed_inputs(embedding, probe):
        clean = loss_fn(forward(**batch), labels)
    if len(probes) != 1:
        raise RuntimeError(f"the input embeddings ran {len(probes)} times in one forward pass; PTP expects once")
    (grad,) = torch.autograd.grad(clean, probes[0], retain_graph=True)
    delta = adversarial(grad, mask, eps)
    with perturbed_inputs(embedding, lambda words: delta.to(words.dtype)):
        return clean + loss_fn(forward(**batch), labels)
