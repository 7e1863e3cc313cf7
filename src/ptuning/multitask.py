"""The training loop's side of a multi-task run: one shared prompt, one head per task.

:class:`MultiTaskData` stands in for :class:`~ptuning.loop.TrainData` (same members): its batches come
from :class:`~ptuning.mixture.MixtureBatchSampler` (each batch from one task, tagged with ``task=NAME``,
which :class:`~ptuning.heads.MultiTaskHead` routes), each batch's loss is its task's own, and each
evaluation scores every task on its own selection split. The checkpoint is selected by ``mean``, the
mean of the tasks' main metrics; each task's metrics are logged beside it as ``NAME/metric``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch.utils.data import DataLoader, Dataset

from .batches import EXAMPLE_INDEX
from .splits import SplitPlan
from .tasks import Featurized, Task

MEAN = "mean"


@dataclass
class TaskPart:
    """One task of a run: what it trains on and is selected on (features are added once the model is built)."""

    name: str
    task: Task
    data: str
    weight: float
    train_examples: list
    eval_examples: list
    plan: SplitPlan
    train_features: list[dict] | None = None
    eval_set: Featurized | None = None


class _Concatenated(Dataset):
    """Every task's training features end to end; item ``g`` is ``(task index, position in that task)``."""

    def __init__(self, sizes: list[int]) -> None:
        self.offsets = [sum(sizes[:i]) for i in range(len(sizes) + 1)]

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, g: int) -> tuple[int, int]:
        part = next(i for i in range(len(self.offsets) - 1) if g < self.offsets[i + 1])
        return part, g - self.offsets[part]


def with_task(collate: Callable, name: str) -> Callable:
    """``collate`` whose batches also name their task (``task=NAME``, read by the multi-task head)."""

    def collate_for_task(features: list[dict]) -> dict:
        return {**collate(features), "task": name}

    return collate_for_task


class MultiTaskData:
    """A mixture's batches, losses and evaluation for the training loop (see the module docstring)."""

    unused_parameters = True  # a batch trains its own task's head only
    main_metric = MEAN

    def __init__(self, parts: list[TaskPart], collates: list[Callable], probabilities: list[float]) -> None:
        self.parts, self.collates, self.probabilities = parts, collates, probabilities
        self.sizes = [len(part.train_features) for part in parts]

    def __len__(self) -> int:
        return sum(self.sizes)

    def loader(self, batch_size: int, seed: int, group_by_length: bool) -> DataLoader:
        """One epoch of single-task batches (the pipeline refuses ``--group-by-length``: batches are drawn by task)."""
        from .mixture import MixtureBatchSampler

        sampler = MixtureBatchSampler(self.sizes, self.probabilities, batch_size, seed)
        return DataLoader(_Concatenated(self.sizes), batch_sampler=sampler, collate_fn=self._collate)

    def feature_sets(self) -> list[tuple[list[dict], list[dict]]]:
        """Each task's ``(training features, evaluation features)``: what an activation cache numbers."""
        return [(part.train_features, part.eval_set.features) for part in self.parts]

    def renumbered(self, sets: list[tuple[list[dict], list[dict]]], wrap_collate: Callable) -> MultiTaskData:
        """This mixture with each task's features replaced by ``sets`` (same order) and its collates wrapped."""
        parts = [
            replace(part, train_features=train, eval_set=replace(part.eval_set, features=evaluated))
            for part, (train, evaluated) in zip(self.parts, sets, strict=True)
        ]
        return MultiTaskData(parts, [wrap_collate(c) for c in self.collates], self.probabilities)

    def _collate(self, items: list[tuple[int, int]]) -> dict:
        index = items[0][0]
        part = self.parts[index]
        batch = self.collates[index]([part.train_features[j] for _, j in items])
        batch[EXAMPLE_INDEX] = torch.tensor([sum(self.sizes[:index]) + j for _, j in items], dtype=torch.long)
        batch["task"] = part.name
        return batch

    def loss_for(self, batch: dict, head: torch.nn.Module) -> Callable:
        """The loss of the batch's own task (its head's, for a CRF head); ``task`` stays: the head routes by it."""
        batch.pop(EXAMPLE_INDEX, None)
        part = next(p for p in self.parts if p.name == batch["task"])
        return getattr(head.heads[part.name], "loss", None) or part.task.loss

    def evaluate(self, predict: Callable) -> dict | None:
        """Every task's metrics (``NAME/metric``) and ``mean`` of their main metrics; None: an output is not finite."""
        scores: dict = {}
        main = []
        for part, collate in zip(self.parts, self.collates, strict=True):
            logits = predict(part.eval_set.features, with_task(collate, part.name), part.task)
            if torch.is_tensor(logits) and not torch.isfinite(logits).all():
                return None
            own = part.task.evaluate(logits, part.eval_examples, part.eval_set.alignment)
            main.append(own[part.task.main_metric])
            scores.update({f"{part.name}/{key}": value for key, value in own.items()})
        finite = [value for value in main if isinstance(value, (int, float)) and math.isfinite(value)]
        return {MEAN: sum(finite) / len(finite) if len(finite) == len(main) else float("nan"), **scores}


def task_scores(scores: dict, name: str) -> dict:
    """One task's metrics out of a multi-task evaluation row (``NAME/metric`` keys)."""
    prefix = f"{name}/"
    return {key.removeprefix(prefix): value for key, value in scores.items() if key.startswith(prefix)}
