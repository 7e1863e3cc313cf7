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

    def candidates(self, split: str) -> tuple[str, ...]:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        return getattr(self, split)


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def load_records(files: DataFiles, data: str | Path, split: str) -> list[Record]:
    """Records of ``split`` from a directory of official files, a single file, or a hub id.

    A hub id takes the task's own hub config (``super_glue`` + ``cb``), so both
    ``super_glue`` and a mirror such as ``aps/super_glue`` work.
    """
    path = Path(data)
    if path.is_dir():
        return read_records(find_split_file(path, files.candidates(split), split))
    if path.is_file():
        return read_records(path)
    if not HUB_ID.match(str(data)):
        raise DataError(f"data directory not found: {data}")
    config = files.hub[1] if files.hub else None
    files.candidates(split)
    return read_hf(str(data), config, split)
