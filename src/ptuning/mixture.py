"""Multi-task mixtures (the paper's MTL stage): which tasks, read from where, drawn how often.

A mixture comes from ``--tasks-file FILE.yaml``::

    tasks:
      - {task: rte, data: superglue/rte}
      - {task: cb, data: superglue/cb, weight: 2.0}

(relative paths are read from the file's folder; an entry may also set a task option such as
``text_column`` or ``labels``), or from ``--task rte,cb --data PARENT`` with one sub-folder per task.

Every batch comes from one task: tasks have different heads and feature shapes (choices, windows,
spans), and one task per batch keeps each step a plain single-task step. The task of each batch is drawn
with probability ``p_i ∝ w_i · n_i^(1/T)`` (``n_i`` training examples, ``w_i`` the entry's weight,
``T`` = ``--mix-temperature``): T = 1 draws examples in proportion to task size, a large T draws tasks
uniformly (times their weights), as in T5/mT5's temperature-scaled mixing. An epoch is as many batches
as the tasks' examples fill; a small task drawn often is simply passed over several times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import PTuningError
from .runfile import TASK_OPTIONS

ENTRY_KEYS = ("task", "data", "weight", *TASK_OPTIONS)


@dataclass(frozen=True)
class MixtureEntry:
    """One task of a mixture: its registered name, its data folder, its weight and its task options."""

    task: str
    data: str
    weight: float = 1.0
    options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"task": self.task, "data": self.data, "weight": self.weight, **self.options}


def check_temperature(value: float, flag: str = "--mix-temperature") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        shown = "1: proportional to task size; 1000: uniform"
        raise PTuningError(f"{flag} must be a finite number > 0 ({shown}), got {value!r}")
    return float(value)


def check_weight(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise PTuningError(f"{where}: weight must be a finite number > 0, got {value!r}")
    return float(value)


def read_tasks_file(path: str | Path) -> list[MixtureEntry]:
    """The entries of a ``--tasks-file``, each refused in one line naming the file and the entry."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise PTuningError(f"--tasks-file {path}: no such file")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise PTuningError(f"--tasks-file {path}: not valid YAML{where}") from None
    rows = content.get("tasks") if isinstance(content, dict) else None
    if not isinstance(rows, list) or not rows:
        raise PTuningError(f"--tasks-file {path}: expected `tasks:` followed by a list of {{task: NAME, data: DIR}}")
    entries = []
    for number, row in enumerate(rows, start=1):
        where = f"--tasks-file {path}, task {number}"
        if not isinstance(row, dict) or not isinstance(row.get("task"), str) or not isinstance(row.get("data"), str):
            raise PTuningError(f"{where}: give `task: NAME` and `data: DIR` (got {row!r})")
        unknown = sorted(set(row) - set(ENTRY_KEYS))
        if unknown:
            raise PTuningError(f"{where}: unknown key {unknown[0]!r}; an entry takes {', '.join(ENTRY_KEYS)}")
        data = Path(row["data"]).expanduser()
        data = data if data.is_absolute() else path.parent / data
        options = {k: row[k] for k in TASK_OPTIONS if row.get(k) is not None}
        if isinstance(options.get("labels"), str):
            options["labels"] = options["labels"].split(",")
        entries.append(MixtureEntry(row["task"], str(data), check_weight(row.get("weight", 1.0), where), options))
    return check_entries(entries, f"--tasks-file {path}")


def entries_from_flags(task: str, data: str) -> list[MixtureEntry] | None:
    """``--task rte,cb --data PARENT``: one entry per task, read from ``PARENT/<task>``; None for one task."""
    names = [name.strip() for name in task.split(",")]
    if len(names) == 1:
        return None
    if not all(names):
        raise PTuningError(f"--task {task!r}: give task names separated by commas (rte,cb)")
    entries = []
    for name in names:
        folder = Path(data) / name
        if not folder.is_dir():
            raise PTuningError(
                f"--data {data} has no {name}/ folder: with --task {task}, --data is a folder holding one "
                "sub-folder per task (or list each task's folder in a --tasks-file)"
            )
        entries.append(MixtureEntry(name, str(folder)))
    return check_entries(entries, f"--task {task}")


def check_entries(entries: list[MixtureEntry], where: str) -> list[MixtureEntry]:
    """Known tasks, each once, with data that exists: refused before anything is read or written."""
    from .tasks import TASKS

    seen = set()
    for entry in entries:
        if entry.task not in TASKS:
            raise PTuningError(f"{where}: unknown task {entry.task!r}; `ptuning tasks` lists them")
        if entry.task in seen:
            raise PTuningError(f"{where}: task {entry.task} is listed twice; a mixture trains one head per task")
        seen.add(entry.task)
        if not Path(entry.data).exists():
            raise PTuningError(f"{where}: data for {entry.task} not found: {entry.data}")
    return entries


def probabilities(sizes: list[int], weights: list[float], temperature: float) -> list[float]:
    """Each task's share of the batches: ``w_i · n_i^(1/T)``, normalised."""
    scores = [w * n ** (1.0 / temperature) for n, w in zip(sizes, weights, strict=True)]
    total = sum(scores)
    return [score / total for score in scores]


class _Passes:
    """One task's examples as successive shuffled passes; a batch never spans two passes."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.generator = size, torch.Generator().manual_seed(seed)
        self.order: list[int] = []
        self.position = 0

    def take(self, count: int) -> list[int]:
        if self.position >= len(self.order):
            self.order, self.position = torch.randperm(self.size, generator=self.generator).tolist(), 0
        chunk = self.order[self.position : self.position + count]
        self.position += len(chunk)
        return chunk


class MixtureBatchSampler:
    """An epoch of batches over concatenated task features: each batch of one task, drawn by ``probs``.

    Yields global indices (task ``i``'s features start at ``sum(sizes[:i])``). The epoch has
    ``ceil(sum(sizes) / batch_size)`` batches, what the learning-rate schedule counts. Task ``i``'s
    passes are shuffled by seed ``seed + 7919 * i``, so a one-task mixture draws exactly the batches of a
    single-task run (``RandomSampler`` with the same seed).
    """

    def __init__(self, sizes: list[int], probs: list[float], batch_size: int, seed: int) -> None:
        self.sizes, self.probs, self.batch_size, self.seed = list(sizes), list(probs), batch_size, seed
        self.drop_last = False

    def __len__(self) -> int:
        return math.ceil(sum(self.sizes) / self.batch_size)

    def __iter__(self):
        chooser = torch.Generator().manual_seed(self.seed + 104729)
        picks = torch.multinomial(torch.tensor(self.probs, dtype=torch.double), len(self), True, generator=chooser)
        passes = [_Passes(size, self.seed + 7919 * i) for i, size in enumerate(self.sizes)]
        offsets = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        for task in picks.tolist():
            yield [offsets[task] + j for j in passes[task].take(self.batch_size)]
