"""Batches and forward passes shared by training, evaluation, prediction and serving tests, and
:class:`TrainData`, what the training loop reads of a task (batches, a batch's loss, evaluation).

Evaluation sorts inputs longest first so each batch pads only to its own
longest feature, then puts the results back in input order; training can group
similar lengths (``--group-by-length``) for the same reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

import torch
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from .tasks import Featurized


def feature_length(feature: dict) -> int:
    """Padded size of one feature (a multiple-choice row pads every choice to its longest)."""
    ids = feature["input_ids"]
    if ids and isinstance(ids[0], list):
        return len(ids) * max(len(choice) for choice in ids)
    return len(ids)


EXAMPLE_INDEX = "example_index"  # a training batch's positions in its feature list (what a teacher's cache is keyed by)


class _Indexed(torch.utils.data.Dataset):
    """``features[i]`` with its own position ``i`` added, read back by :func:`indexed`'s collate."""

    def __init__(self, features: list[dict]) -> None:
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict:
        return {**self.features[i], EXAMPLE_INDEX: i}


def indexed(features: list[dict], collate) -> tuple[torch.utils.data.Dataset, object]:
    """``(dataset, collate)`` whose batches also carry ``example_index``, a ``(B,)`` tensor of positions.

    Samplers see the same length and the same features (``input_ids`` for ``--group-by-length``), so the
    batches, their order and the random state are exactly those of the plain feature list.
    """

    def collate_indexed(rows: list[dict]) -> dict:
        batch = collate([{k: v for k, v in row.items() if k != EXAMPLE_INDEX} for row in rows])
        batch[EXAMPLE_INDEX] = torch.tensor([row[EXAMPLE_INDEX] for row in rows], dtype=torch.long)
        return batch

    return _Indexed(features), collate_indexed


def _loader(features, collate, batch_size: int, seed: int | None, group_by_length: bool = False) -> DataLoader:
    """Sequential without a seed (evaluation), else shuffled by ``seed``.

    ``group_by_length`` batches features of similar length together (Hugging
    Face's ``LengthGroupedSampler``): batches pad to their longest feature, so
    this cuts the padding, and the time, of data with varied lengths.
    """
    if seed is None:
        sampler = SequentialSampler(features)
    elif group_by_length:
        from transformers.trainer_pt_utils import LengthGroupedSampler  # the Trainer's module: slow to import

        lengths = [feature_length(f) for f in features]
        generator = torch.Generator().manual_seed(seed)
        sampler = LengthGroupedSampler(batch_size, lengths=lengths, generator=generator)
    else:
        sampler = RandomSampler(features, generator=torch.Generator().manual_seed(seed))
    return DataLoader(features, batch_size=batch_size, sampler=sampler, collate_fn=collate)


def evaluate(model, task, featurized, examples, collate, batch_size: int, accelerator) -> dict:
    """Task metrics on ``examples`` (gathered over processes); ``featurized`` is their ``Featurized``."""
    logits = predict_logits(model, featurized.features, collate, batch_size, accelerator)
    return task.evaluate(logits, examples, featurized.alignment)


@torch.no_grad()
def predict_logits(
    model, features, collate, batch_size: int, accelerator=None, desc: str = "predicting"
) -> torch.Tensor:
    """Logits for ``features`` in their order (a bar over batches on stderr: a dev set can take minutes)."""
    model.eval()
    # Longest first: each batch pads only to its own longest feature, and the results are put back in order.
    order = sorted(range(len(features)), key=lambda i: -feature_length(features[i]))
    inputs = [{k: v for k, v in features[i].items() if k != "labels"} for i in order]
    loader = _loader(inputs, collate, batch_size, None)
    if accelerator is not None:
        loader = accelerator.prepare_data_loader(loader)
    device = next(model.parameters()).device
    outputs = []
    quiet = {"disable": True} if accelerator is not None and not accelerator.is_main_process else {}
    for batch in tqdm(loader, desc=desc, unit="batch", leave=False, **quiet):  # TQDM_DISABLE=1 silences it
        if accelerator is None:  # no accelerator placed the batch: follow the model (GPU at eval/predict time)
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        logits = model(**batch)
        if accelerator is not None:
            if logits.dim() == 3:  # per-token logits: processes may pad to different lengths
                logits = accelerator.pad_across_processes(logits, dim=1)
            logits = accelerator.gather_for_metrics(logits)
        outputs.append(logits.float().cpu())
    if outputs[0].dim() == 3:  # (N, L, tags) with L differing between batches
        longest = max(o.shape[1] for o in outputs)
        outputs = [torch.nn.functional.pad(o, (0, 0, 0, longest - o.shape[1])) for o in outputs]
    sorted_logits = torch.cat(outputs)
    logits = torch.empty_like(sorted_logits)
    logits[torch.tensor(order, dtype=torch.long)] = sorted_logits
    return logits


def resumed(loader: Iterable) -> Iterator:
    """Iterate ``loader`` as if its iterator had been made before the checkpoint was taken.

    Making a DataLoader iterator draws one number from the global RNG (its base seed). A run
    resumed mid-epoch makes that iterator after restoring the checkpoint's RNG state, which
    already includes the draw: without undoing it, every later dropout mask would differ from
    the uninterrupted run's. The iterator is only made at the first ``next``, so that is undone.
    """
    state = torch.get_rng_state()
    iterator = iter(loader)
    try:
        first = next(iterator)
    except StopIteration:
        return
    finally:
        torch.set_rng_state(state)
    yield first
    yield from iterator


@dataclass
class TrainData:
    """One task's side of a run: its training batches, the loss of a batch, and its evaluation.

    The loop asks this object, never the task itself, so that a mixture of tasks (``multitask.py``) or
    a distillation objective (``distill.py``) can stand in for it with the same four members.
    """

    task: object
    train_features: list[dict]
    eval_set: Featurized
    eval_examples: list
    collate: Callable
    unused_parameters: ClassVar[bool] = False  # True: some trainable parameters get no gradient from a batch

    @property
    def eval_features(self) -> list[dict]:
        return self.eval_set.features

    @property
    def main_metric(self) -> str:
        return self.task.main_metric

    def __len__(self) -> int:
        """Training features per epoch: what the learning-rate schedule counts its steps from."""
        return len(self.train_features)

    def loader(self, batch_size: int, seed: int, group_by_length: bool) -> DataLoader:
        """One epoch's shuffled batches; each carries ``example_index`` (positions in ``train_features``)."""
        features, collate = indexed(self.train_features, self.collate)
        return _loader(features, collate, batch_size, seed, group_by_length)

    def loss_for(self, batch: dict, head: torch.nn.Module) -> Callable:
        """The loss function of ``batch`` (whose labels are already taken out); removes what is not a model input."""
        batch.pop(EXAMPLE_INDEX, None)
        return getattr(head, "loss", None) or self.task.loss  # a CRF head scores whole sequences

    def feature_sets(self) -> list[tuple[list[dict], list[dict]]]:
        """Each task's ``(training features, evaluation features)``: what an activation cache numbers."""
        return [(self.train_features, self.eval_set.features)]

    def renumbered(self, sets: list[tuple[list[dict], list[dict]]], wrap_collate: Callable) -> TrainData:
        """This data with each task's features replaced by ``sets`` (same order) and its collate wrapped."""
        ((train, evaluated),) = sets
        eval_set = replace(self.eval_set, features=evaluated)
        return replace(self, train_features=train, eval_set=eval_set, collate=wrap_collate(self.collate))

    def evaluate(self, predict: Callable) -> dict | None:
        """Metrics on the evaluation set, or None when the model's outputs are not all finite.

        ``predict(features, collate, task)`` runs the model being trained (the loop's prepared one): logits, or
        a generation task's texts."""
        logits = predict(self.eval_set.features, self.collate, self.task)
        if torch.is_tensor(logits) and not torch.isfinite(logits).all():
            return None
        return self.task.evaluate(logits, self.eval_examples, self.eval_set.alignment)
