"""What every task provides, and where its data comes from.

A task is declarative: a reader (official files or a hub id) -> features for
the tokenizer -> a head -> a metric. A task family (classification, multiple
choice, tagging, QA) implements this protocol once; a new task of an existing
family is a few lines of data (see ``classification.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ..errors import DataError
from .readers import Record, find_split_file, read_hf, read_records

SPLITS = ("train", "validation", "test")


@dataclass
class Example:
    """One input, its gold label (None when unlabelled) and where it came from."""

    texts: tuple[str, ...]
    label: Any = None
    source: str = ""
    id: Any = None
    extra: dict = field(default_factory=dict)


class Task(Protocol):
    name: str
    family: str
    description: str
    data_format: str
    metric_names: tuple[str, ...]

    @property
    def main_metric(self) -> str: ...

    def records_to_examples(self, records: list[Record], *, labelled: bool) -> list[Example]: ...

    def example_from_input(self, value: Any) -> Example: ...

    def build_head(self, hidden_size: int, pooling: str) -> nn.Module: ...

    def featurize(self, examples: list[Example], tokenizer, max_length: int) -> list[dict]: ...

    def collator(self, tokenizer): ...

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor: ...

    def evaluate(self, logits: torch.Tensor, examples: list[Example]) -> dict: ...

    def predictions(self, logits: torch.Tensor, examples: list[Example]) -> list[dict]: ...

    def state(self) -> dict: ...


@dataclass(frozen=True)
class DataFiles:
    """Official file names per split, and the hub id (``dataset``, ``config``) if any."""

    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...] = ()
    hub: tuple[str, str | None] | None = None
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()  # more splits, e.g. MNLI validation_mismatched
    header: tuple[str, ...] | None = None  # column names of header-less TSVs (CoLA)
    hub_columns: tuple[tuple[str, str], ...] = ()  # hub column -> official column
    hub_splits: tuple[tuple[str, str], ...] = ()  # our split -> hub split

    def candidates(self, split: str) -> tuple[str, ...]:
        extra = dict(self.extra)
        if split not in SPLITS and split not in extra:
            raise DataError(f"unknown split {split!r}; choose one of {', '.join([*SPLITS, *extra])}")
        return extra.get(split) or getattr(self, split)


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def load_records(files: DataFiles, data: str | Path, split: str) -> list[Record]:
    """Records of ``split`` from a directory of official files, a single file, or a hub id.

    A hub id takes the task's own hub config (``super_glue`` + ``cb``), so both
    ``super_glue`` and a mirror such as ``aps/super_glue`` work.
    """
    path = Path(data)
    if path.is_dir():
        return read_records(find_split_file(path, files.candidates(split), split), header=files.header)
    if path.is_file():
        return read_records(path, header=files.header)
    if not HUB_ID.match(str(data)):
        raise DataError(f"data directory not found: {data}")
    config = files.hub[1] if files.hub else None
    files.candidates(split)
    records = read_hf(str(data), config, dict(files.hub_splits).get(split, split))
    rename = dict(files.hub_columns)
    return (
        [Record({rename.get(k, k): v for k, v in r.fields.items()}, r.path, r.line) for r in records]
        if rename
        else records
    )


def pad_collate(tokenizer, label_dtype: torch.dtype = torch.long):
    """Pad every list-valued feature of a batch: ``(B, L)`` rows or ``(B, C, L)`` choices.

    ``input_ids`` pad with the tokenizer's pad id, everything else with 0; choice
    lists pad by repeating the first choice (never an all-padding row) and add a
    ``choice_mask``. One collator for every task family.
    """
    pad_id = tokenizer.pad_token_id or 0

    def pad_rows(rows: list[list], value, length: int) -> list[list]:
        return [list(r) + [value] * (length - len(r)) for r in rows]

    def collate(features: list[dict]) -> dict:
        batch: dict = {}
        keys = [k for k in features[0] if k != "labels"]
        choices = isinstance(features[0]["input_ids"][0], list)
        if choices:
            n = max(len(f["input_ids"]) for f in features)
            batch["choice_mask"] = torch.tensor(
                [[1] * len(f["input_ids"]) + [0] * (n - len(f["input_ids"])) for f in features], dtype=torch.bool
            )
            features = [
                {k: (list(f[k]) + [f[k][0]] * (n - len(f[k]))) if k != "labels" else f[k] for k in f} for f in features
            ]
            length = max(len(row) for f in features for row in f["input_ids"])
            for key in keys:
                value = pad_id if key == "input_ids" else 0
                batch[key] = torch.tensor([pad_rows(f[key], value, length) for f in features])
        else:
            length = max(len(f["input_ids"]) for f in features)
            for key in keys:
                value = pad_id if key == "input_ids" else 0
                batch[key] = torch.tensor(pad_rows([f[key] for f in features], value, length))
        if "labels" in features[0]:
            labels = [f["labels"] for f in features]
            if isinstance(labels[0], list) and all(len(f["labels"]) == len(f["input_ids"]) for f in features):
                # per-token labels: pad with the ignore index
                width = batch["input_ids"].shape[-1]
                labels = pad_rows(labels, -100, width)
            batch["labels"] = torch.tensor(labels, dtype=label_dtype)
        return batch

    return collate
