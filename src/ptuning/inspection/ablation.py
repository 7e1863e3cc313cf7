"""Which layers carry the task: the metric with one layer's prompt removed, and with only that layer's kept.

The method says how its prompt enters only some layers (:meth:`~ptuning.method.Method.prompt_in_layers`); a
layer without it runs as the plain backbone (no slot, no attention mass, not a zero prefix, which would still
take attention). The scores come from the same batched prediction ``ptuning eval`` uses, so the score with
every layer kept is the artifact's own metric on these examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..batches import predict_logits
from ..encoders import PromptInputs
from ..tasks import Featurized, Task


class _Prompted(nn.Module):
    """``model`` run with a given prompt in place of its method's own (what :func:`predict_logits` calls)."""

    def __init__(self, model: nn.Module, prompt: PromptInputs) -> None:
        super().__init__()
        self.model, self.prompt = model, prompt

    def forward(self, **batch) -> torch.Tensor:
        return self.model(**batch, prompt=self.prompt)


@dataclass(frozen=True)
class Ablation:
    """The main metric of the task with the prompt in every layer, in none, without each layer, and only in each."""

    metric: str
    all_layers: float | None
    no_layer: float | None
    without_layer: list[float | None]
    only_layer: list[float | None]
    all_layers_metrics: dict


def score_with(
    model, prompt: PromptInputs, task: Task, examples: list, featurized: Featurized, collate, batch_size: int
):
    """The task's metrics for ``examples`` with ``prompt`` in place of the model's own."""
    logits = predict_logits(_Prompted(model, prompt), featurized.features, collate, batch_size, desc="ablation")
    return task.evaluate(logits, examples, featurized.alignment)


@torch.no_grad()
def layer_ablation(
    model, task: Task, examples: list, featurized: Featurized, collate, batch_size: int
) -> Ablation | None:
    """The :class:`Ablation` of ``model``'s prompt on labelled ``examples``; None when the prompt is not per layer.

    ``2 * layers + 2`` passes over the examples.
    """
    method = model.method
    layers = model.encoder.geometry.num_layers
    every = frozenset(range(layers))
    if method.prompt_in_layers(every) is None:
        return None

    def score(kept: frozenset[int]) -> dict:
        return score_with(model, method.prompt_in_layers(kept), task, examples, featurized, collate, batch_size)

    metric = task.main_metric
    full = score(every)
    return Ablation(
        metric=metric,
        all_layers=full.get(metric),
        no_layer=score(frozenset()).get(metric),
        without_layer=[score(every - {layer}).get(metric) for layer in range(layers)],
        only_layer=[score(frozenset({layer})).get(metric) for layer in range(layers)],
        all_layers_metrics=full,
    )
