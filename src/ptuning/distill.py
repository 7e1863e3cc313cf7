"""Knowledge distillation from a trained teacher: ``ptuning train … --teacher ARTIFACT``.

The student minimises ``A · CE + (1 − A) · T² · KL(teacher ‖ student)`` (Hinton et al. 2015), both
distributions softened by the temperature ``T`` (``--distill-temperature``); ``A`` is
``--distill-alpha``. ``CE`` is the task's own loss (a CRF head's likelihood for ``--crf``). The teacher is
typically a ``--method finetune`` artifact of the same task; any artifact with the same label set works.

The teacher reads the student's own features (so its tokenizer must be the student's), frozen and in
eval mode (no dropout). Its logits are computed once per training feature, in the first epoch, batch by
batch, and kept in memory (on the CPU) keyed by the feature's position in the training set; later
epochs read them from there. That is ``N × classes`` floats for sentence and choice tasks and
``N × tokens × tags`` for tagging and QA (SQuAD's ~88k windows × 384 × 2 × 4 B ≈ 270 MB), fine for the
sizes this library trains on; a resumed run recomputes them. Each task family says how its logits form
distributions (:meth:`~ptuning.tasks.Task.distillation_rows`): one per sentence or set of choices, one
per labelled sub-token (padding and ignored sub-tokens masked out), a start and an end distribution over
a QA window's real tokens (padding masked out).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .batches import EXAMPLE_INDEX
from .errors import PTuningError

MASKED = -1e9  # the score of a class that takes no part in the KL: probability exactly 0 for both models


@dataclass(frozen=True)
class DistillConfig:
    """``--teacher``, ``--distill-alpha`` (weight of the task loss) and ``--distill-temperature``."""

    teacher: str
    alpha: float = 0.5
    temperature: float = 2.0

    def __post_init__(self) -> None:
        alpha, temperature = self.alpha, self.temperature
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
            raise PTuningError(f"--distill-alpha must be in [0, 1] (the weight of the task's own loss), got {alpha!r}")
        bad = isinstance(temperature, bool) or not isinstance(temperature, (int, float))
        if bad or not math.isfinite(temperature) or temperature <= 0:
            raise PTuningError(f"--distill-temperature must be a finite number > 0, got {temperature!r}")


def kl_to_teacher(
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float,
    row_mask: torch.Tensor | None = None,
    class_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over the rows that count of ``KL(softmax(teacher / T) ‖ softmax(student / T))``.

    ``student`` and ``teacher`` are ``(N, K)``; ``row_mask`` ``(N,)`` and ``class_mask`` ``(N, K)`` say which
    rows and classes take part (None: all). Masked classes get probability 0 in both distributions and no
    gradient. No row that counts: 0 (still attached to the graph).
    """
    s, t = student.float() / temperature, teacher.float() / temperature
    if class_mask is not None:
        s, t = s.masked_fill(~class_mask, MASKED), t.masked_fill(~class_mask, MASKED)
    log_p_teacher, log_p_student = t.log_softmax(dim=-1), s.log_softmax(dim=-1)
    per_row = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)  # (N,)
    if row_mask is not None:
        per_row = per_row[row_mask]
    return per_row.mean() if per_row.numel() else 0.0 * s.sum()


def distillation_loss(
    task_loss: torch.Tensor,
    student: torch.Tensor,
    teacher: torch.Tensor,
    alpha: float,
    temperature: float,
    row_mask: torch.Tensor | None = None,
    class_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``alpha · task_loss + (1 − alpha) · T² · KL`` (T² keeps the soft term's gradients at the hard term's scale)."""
    if alpha == 1.0:
        return task_loss
    kl = kl_to_teacher(student, teacher, temperature, row_mask, class_mask)
    return alpha * task_loss + (1.0 - alpha) * temperature**2 * kl


class TeacherCache:
    """The teacher's logits per training feature, computed on first sight and kept (see the module docstring)."""

    def __init__(self, teacher: nn.Module) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.cache: dict[int, torch.Tensor] = {}
        self.forward_calls = 0  # teacher forward passes so far (tests count them)

    @torch.no_grad()
    def logits(self, index: torch.Tensor, batch: dict) -> torch.Tensor:
        """The teacher's logits for the batch's rows, computing only those not seen before.

        ``index`` ``(B,)``: each row's position in the training features; ``batch``: the model inputs.
        Each row is stored without its padding (tokens past its length, choices past its own count) and
        padded again to this batch's size, as the student's logits are.
        """
        keys = index.tolist()
        missing = [row for row, key in enumerate(keys) if key not in self.cache]
        if missing:
            device = batch["input_ids"].device
            self.teacher.to(device)
            rows = torch.tensor(missing, device=device)
            inputs = {k: v.index_select(0, rows) if torch.is_tensor(v) else v for k, v in batch.items()}
            computed = self.teacher(**inputs).float()
            self.forward_calls += 1
            for i, length in enumerate(_own_lengths(computed, inputs)):
                self.cache[keys[missing[i]]] = computed[i, :length].cpu()
        return _padded([self.cache[key] for key in keys], batch)


def _own_lengths(logits: torch.Tensor, inputs: dict) -> list[int]:
    """Each row's own size along its padded dimension: real tokens, or real choices (else all of it)."""
    if logits.dim() == 3:  # (B, L, k): right-padded tokens
        return inputs["attention_mask"].sum(dim=-1).tolist()
    if "choice_mask" in inputs:  # (B, C): choices padded to the batch's most
        return inputs["choice_mask"].sum(dim=-1).tolist()
    return [logits.shape[1]] * logits.shape[0]


def _padded(stored: list[torch.Tensor], batch: dict) -> torch.Tensor:
    """Rows padded to the batch: tokens with 0 (masked out of the KL), choices with the lowest score (as the model)."""
    if stored[0].dim() == 2:  # (length, k) per row
        width = batch["input_ids"].shape[-1]
        return torch.stack([nn.functional.pad(x, (0, 0, 0, width - x.shape[0])) for x in stored])  # (B, L, k)
    if "choice_mask" in batch:
        width, lowest = batch["choice_mask"].shape[1], torch.finfo(torch.float32).min
        return torch.stack([nn.functional.pad(x, (0, width - x.shape[0]), value=lowest) for x in stored])  # (B, C)
    return torch.stack(stored)  # (B, classes)


class DistilledData:
    """A single-task :class:`~ptuning.loop.TrainData` whose batch loss adds the teacher's soft targets."""

    def __init__(self, base, teacher: TeacherCache, config: DistillConfig) -> None:
        self.base, self.teacher, self.config = base, teacher, config
        self.task = base.task
        self.main_metric, self.unused_parameters = base.main_metric, base.unused_parameters

    def __len__(self) -> int:
        return len(self.base)

    def loader(self, batch_size: int, seed: int, group_by_length: bool):
        return self.base.loader(batch_size, seed, group_by_length)

    def evaluate(self, predict: Callable) -> dict | None:
        return self.base.evaluate(predict)

    def feature_sets(self) -> list[tuple[list[dict], list[dict]]]:
        return self.base.feature_sets()

    def renumbered(self, sets: list, wrap_collate: Callable) -> DistilledData:
        """The same teacher over renumbered features (its cache is keyed by position, which does not change)."""
        return DistilledData(self.base.renumbered(sets, wrap_collate), self.teacher, self.config)

    def loss_for(self, batch: dict, head: nn.Module) -> Callable:
        """The task's loss of ``batch`` mixed with the KL to the teacher's logits for the same rows."""
        index = batch.get(EXAMPLE_INDEX)
        task_loss = self.base.loss_for(batch, head)  # takes the index out of the model inputs
        alpha, temperature = self.config.alpha, self.config.temperature
        if alpha == 1.0:
            return task_loss  # nothing to distil: the teacher is not run at all
        teacher_logits = self.teacher.logits(index, batch)
        rows_of = self.task.distillation_rows

        def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            student, row_mask, class_mask = rows_of(logits, labels, batch)
            teacher, _, _ = rows_of(teacher_logits.to(logits.device), labels, batch)
            hard = task_loss(logits, labels)
            return distillation_loss(hard, student, teacher, alpha, temperature, row_mask, class_mask)

        return loss


def load_teacher(config: DistillConfig, task, tokenizer, backbone_name: str, fingerprint: str) -> TeacherCache:
    """The teacher artifact as a :class:`TeacherCache`, after checking it can teach ``task`` in one line each.

    Refused: a task without class distributions (regression), another label set or task family, a
    tokenizer with another vocabulary (the teacher reads the student's token ids).
    """
    from . import artifact, backbones

    refusal = task.distillation_refusal()
    if refusal:
        raise PTuningError(f"--teacher: {refusal}")
    meta = artifact.read_meta(config.teacher)
    names = artifact.task_names(meta)
    pick = task.name if len(names) > 1 and task.name in names else None
    recorded = meta["backbone"]["name"]
    here = recorded == backbones.DEFAULT_MODEL or Path(recorded).exists()
    same_weights = meta["backbone"]["fingerprint"] == fingerprint  # a moved path may then be the student's
    model_name = None if here or not same_weights else backbone_name
    model, teacher_tokenizer, teacher_task, _ = artifact.load_artifact(config.teacher, model_name=model_name, task=pick)
    ours, theirs = task.state().get("labels"), teacher_task.state().get("labels")
    if teacher_task.family != task.family or ours != theirs:
        shown = ", ".join(map(str, theirs or ())) or "none"
        raise PTuningError(
            f"--teacher {config.teacher} was trained on {teacher_task.name} ({teacher_task.family}; labels {shown}), "
            f"which does not match this run's {task.name} ({task.family}; labels "
            f"{', '.join(map(str, ours or ())) or 'none'}): distil from a teacher of the same task and label set"
        )
    if teacher_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise PTuningError(
            f"--teacher {config.teacher}: its backbone's tokenizer is not this run's; the teacher reads the "
            "student's token ids, so both need one vocabulary (train the student on a backbone of the same family)"
        )
    return TeacherCache(model)
