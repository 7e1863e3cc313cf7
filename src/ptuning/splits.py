"""Which records train, which select the checkpoint, and which are reported: the low-resource protocols.

Three plans, chosen by the data and the flags:

* **standard**: ``train`` trains, ``validation`` selects (early stopping, best checkpoint) and is what
  ``metrics.json`` reports, as in the paper's SuperGLUE dev results;
* **fixed selection split** (FewGLUE, Schick & Schuetze): when the task declares a selection split
  (``DataFiles.selection``, SuperGLUE's ``dev32``) and its file is in the data directory, that split
  selects, and ``validation`` is only scored once, with the selected artifact: no peeking;
* **K-shot** (``--few-shot K --few-shot-seed S``): K training and K selection records are drawn from the
  training file (stratified by the task's label where it has one; whole passages for MultiRC/ReCoRD,
  sentences for tagging: a record is the unit), reproducibly per seed, disjoint; ``validation`` is reported.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .errors import PTuningError
from .tasks import Task
from .tasks.readers import Record


@dataclass(frozen=True)
class SplitPlan:
    """The records of each role, what each role was read from, and (K-shot) the records drawn."""

    train: list[Record]
    selection: list[Record]
    reported: list[Record] | None  # None: the selection split is the reported one
    roles: dict[str, str]
    drawn: dict | None = field(default=None)
    pool: list[Record] | None = None  # K-shot: the file drawn from, whose labels the task learns

    @property
    def label_source(self) -> list[Record]:
        """What the task learns its label set from: a K-shot draw can miss a label the reported split holds."""
        return self.pool if self.pool is not None else self.train

    def describe(self) -> str:
        return "; ".join(f"{role}: {source}" for role, source in self.roles.items())


def _source(records: list[Record], what: str | None = None) -> str:
    name = what or (Path(records[0].path).name if records else "-")
    return f"{name} ({len(records)} records)"


def plan_splits(task: Task, data: str, few_shot: int | None = None, few_shot_seed: int = 0) -> SplitPlan:
    """The split plan for a training run of ``task`` on ``data`` (module docstring)."""
    if few_shot is not None:
        return _k_shot(task, data, few_shot, few_shot_seed)
    selection = task.files.selection
    if selection and Path(data).is_dir() and any((Path(data) / f).is_file() for f in task.files.candidates(selection)):
        train, chosen = task.load_split(data, "train"), task.load_split(data, selection)
        reported = task.load_split(data, "validation")
        roles = {"train": _source(train), "selection": _source(chosen), "reported": _source(reported)}
        return SplitPlan(train, chosen, reported, roles)
    train, validation = task.training_records(data)
    roles = {"train": _source(train), "selection": _source(validation), "reported": "the selection split"}
    return SplitPlan(train, validation, None, roles)


def _k_shot(task: Task, data: str, k: int, seed: int) -> SplitPlan:
    """K training and K selection records drawn from the training file; the full validation file is reported."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise PTuningError(f"--few-shot {k!r}: give a number of examples >= 1")
    pool = task.load_split(data, "train")
    if 2 * k > len(pool):
        raise PTuningError(
            f"--few-shot {k} needs {2 * k} training records (K to train, K to select), the training file has "
            f"{len(pool)}: lower K"
        )
    rng = random.Random(seed)
    train = draw(task, pool, k, rng)
    taken, units = {id(r) for r in train}, {task.draw_unit(r) for r in train} - {None}
    rest = [r for r in pool if id(r) not in taken and task.draw_unit(r) not in units]
    if len(rest) < k:
        raise PTuningError(f"--few-shot {k}: after the training draw only {len(rest)} records share no input with it")
    selection = draw(task, rest, k, rng)
    reported = task.load_split(data, "validation")
    name = Path(pool[0].path).name
    roles = {
        "train": _source(train, f"{k} drawn from {name}"),
        "selection": _source(selection, f"{k} more drawn from {name}"),
        "reported": _source(reported),
    }
    drawn = {"k": k, "seed": seed, "file": pool[0].path, "train": _ids(train), "selection": _ids(selection)}
    return SplitPlan(train, selection, reported, roles, drawn, pool)


def draw(task: Task, records: list[Record], k: int, rng: random.Random) -> list[Record]:
    """``k`` records, stratified by ``task.stratum`` (proportional, largest remainders), in file order.

    Proportional allocation keeps the label distribution of the file; a label with at least one record in
    the file gets at least one slot when ``k`` allows, so a rare class is never silently missing.
    """
    strata: dict = defaultdict(list)
    for record in records:
        strata[task.stratum(record)].append(record)
    if len(strata) == 1:
        chosen = rng.sample(records, k)
    else:
        ties = random.Random()
        ties.setstate(rng.getstate())  # a copy: breaking ties leaves the draw's own sequence as it was
        quotas = _quotas({label: len(members) for label, members in strata.items()}, k, ties)
        chosen = [
            r
            for label, members in sorted(strata.items(), key=lambda x: str(x[0]))
            for r in rng.sample(members, quotas[label])
        ]
    order = {id(r): i for i, r in enumerate(records)}
    return sorted(chosen, key=lambda r: order[id(r)])


def _quotas(sizes: dict, k: int, ties: random.Random) -> dict:
    """Largest-remainder quotas; labels tied on their remainder (or on their quota, when a tiny ``k`` cannot
    give every label a slot) are ordered by the seeded ``ties``, so the seed, not the label's name, decides."""
    labels = sorted(sizes, key=str)
    rank = {label: position for position, label in enumerate(ties.sample(labels, len(labels)))}
    total = sum(sizes.values())
    exact = {label: k * sizes[label] / total for label in labels}
    quotas = {label: min(sizes[label], max(1 if k >= len(labels) else 0, int(exact[label]))) for label in labels}
    by_remainder = sorted(labels, key=lambda label: (-(exact[label] - int(exact[label])), rank[label]))
    while sum(quotas.values()) < k:
        for label in by_remainder:
            if sum(quotas.values()) < k and quotas[label] < sizes[label]:
                quotas[label] += 1
    while sum(quotas.values()) > k:  # the floor of one per label overshot a tiny k
        largest = min(labels, key=lambda label: (-quotas[label], rank[label]))
        quotas[largest] -= 1
    return quotas


def _ids(records: list[Record]) -> list:
    """How each drawn record is found again: its ``idx``/``id`` field when it has one, else its line number."""
    return [r.fields.get("idx", r.fields.get("id", f"line {r.line}")) for r in records]
