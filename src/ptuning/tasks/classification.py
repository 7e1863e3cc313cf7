"""Sentence and sentence-pair classification (SuperGLUE CB/RTE/BoolQ, GLUE SST-2, any CSV/TSV/JSONL).

Adding a task of this family is one :class:`ClassificationTask` entry in
``tasks/__init__.py``: its columns, labels, files and metric.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ..errors import DataError, InputError
from ..heads import SequenceClassificationHead
from . import metrics
from .base import Alignment, DataFiles, Example, Featurized, Task, pad_collate
from .readers import Record


def _label_key(value) -> str:
    """Labels compare as strings: JSON ``true`` and TSV ``1`` become ``"True"`` and ``"1"``."""
    return str(value) if not isinstance(value, bool) else ("True" if value else "False")


@dataclass(frozen=True)
class ClassificationTask(Task):
    """A classification task described by data only.

    ``labels`` None means "whatever the training data holds" (generic task).
    ``aliases`` maps other spellings of a label (hub class names) to ours.
    """

    name: str
    description: str
    text_columns: tuple[str, ...]
    label_column: str
    labels: tuple[str, ...] | None
    files: DataFiles
    metric_names: tuple[str, ...] = ("accuracy",)
    aliases: dict = field(default_factory=dict)
    id_column: str | None = "idx"
    regression: bool = False
    positive: str = "1"
    shared_column: str | None = None  # an input several records share (BoolQ's passage): see draw_unit
    family: str = "classification"

    @property
    def data_format(self) -> str:
        cols = " + ".join(self.text_columns)
        files = "/".join(self.files.train + self.files.validation)
        return f"{files}: {cols} -> {self.label_column}"

    def draw_unit(self, record: Record) -> Hashable | None:
        return record.fields.get(self.shared_column) if self.shared_column else None

    def stratum(self, record: Record) -> Hashable | None:
        """The label; none for regression, whose scores are not classes (a draw by exact score would skew)."""
        value = record.fields.get(self.label_column)
        return None if value is None or self.regression else str(value)

    def with_options(self, **options) -> ClassificationTask:
        """The generic task takes its columns from the command line."""
        text = tuple(c for c in (options.get("text_column"), options.get("text_pair_column")) if c)
        changes = {}
        if text:
            changes["text_columns"] = text
        if options.get("label_column"):
            changes["label_column"] = options["label_column"]
        if options.get("labels"):
            changes["labels"] = tuple(options["labels"])
        return replace(self, **changes) if changes else self

    def with_labels_from(self, records: list[Record]) -> ClassificationTask:
        if self.labels is not None:
            return self
        if self.regression:
            return replace(self, labels=())
        found = sorted({_label_key(r.get(self.label_column)) for r in records})
        if len(found) < 2:
            raise DataError(f"the training data has {len(found)} distinct label(s); need at least 2", records[0].path)
        return replace(self, labels=tuple(found))

    # -- reader -> examples -------------------------------------------------------
    def records_to_examples(self, records: list[Record], *, labelled: bool) -> list[Example]:
        examples = []
        for record in records:
            texts = []
            for column in self.text_columns:
                value = record.get(column)
                if not isinstance(value, str) or not value.strip():
                    raise DataError(f"column {column!r} must be non-empty text", record.path, record.line)
                texts.append(value)
            label = None
            if labelled or self.label_column in record.fields:
                label = self._label(record)
            example_id = record.fields.get(self.id_column) if self.id_column else None
            examples.append(Example(tuple(texts), label, f"{record.path}:{record.line}", example_id))
        return examples

    def _label(self, record: Record):
        if self.regression:
            try:
                return float(record.get(self.label_column))
            except (TypeError, ValueError):
                raise DataError(
                    f"label {record.get(self.label_column)!r} is not a number", record.path, record.line
                ) from None
        raw = _label_key(record.get(self.label_column))
        label = self.aliases.get(raw, raw)
        if self.labels is not None and label not in self.labels:
            raise DataError(
                f"unknown label {raw!r} in column {self.label_column!r} (expected one of {', '.join(self.labels)})",
                record.path,
                record.line,
            )
        return label

    def example_from_input(self, value) -> Example:
        """One serving input: a string (one-text tasks), a list of texts, or an object keyed by column."""
        n = len(self.text_columns)
        if isinstance(value, str):
            texts = [value]
        elif isinstance(value, (list, tuple)):
            texts = list(value)
        elif isinstance(value, dict):
            missing = [c for c in self.text_columns if c not in value]
            if missing:
                raise InputError(f"input object lacks {', '.join(missing)}; task {self.name} reads {self.text_columns}")
            texts = [value[c] for c in self.text_columns]
        else:
            raise InputError(f"task {self.name} takes a string, a list of {n} strings or an object of its columns")
        if len(texts) != n or not all(isinstance(t, str) and t.strip() for t in texts):
            raise InputError(f"task {self.name} needs {n} non-empty text(s): {', '.join(self.text_columns)}")
        return Example(tuple(texts))

    def example_input(self):
        if len(self.text_columns) == 1:
            return "a gripping, funny film"
        pair = ["It rained all day.", "The ground is wet."]
        return pair if len(self.text_columns) == 2 else [f"text {i + 1}" for i in range(len(self.text_columns))]

    # -- features, head, loss -------------------------------------------------------
    def featurize(self, examples: list[Example], tokenizer, max_length: int) -> Featurized:
        columns = list(zip(*(e.texts for e in examples), strict=False))
        encoded = tokenizer(*columns, truncation=True, max_length=max_length)
        index = {label: i for i, label in enumerate(self.labels or ())}
        features = []
        for i, example in enumerate(examples):
            row = {key: encoded[key][i] for key in encoded.keys()}
            if example.label is not None:
                row["labels"] = example.label if self.regression else index[example.label]
            features.append(row)
        return Featurized(features)

    def collator(self, tokenizer):
        return pad_collate(tokenizer, torch.float if self.regression else torch.long)

    def build_head(self, hidden_size: int, pooling: str) -> nn.Module:
        return SequenceClassificationHead(hidden_size, 1 if self.regression else len(self.labels), pooling)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.regression:
            return nn.functional.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
        return nn.functional.cross_entropy(logits, labels)

    def distillation_refusal(self) -> str | None:
        if self.regression:
            return f"{self.name} is a regression task: it has no class distribution to distil"
        return None

    # -- outputs ------------------------------------------------------------------------
    def evaluate(self, logits: torch.Tensor, examples: list[Example], alignment: Alignment = ()) -> dict:
        gold = [e.label for e in examples]
        if self.regression:
            predicted = logits.squeeze(-1).tolist()
        else:
            predicted = [self.labels[i] for i in logits.argmax(dim=-1).tolist()]
        return metrics.compute(self.metric_names, predicted, gold, self.labels, self.positive)

    def predictions(self, logits: torch.Tensor, examples: list[Example], alignment: Alignment = ()) -> list[dict]:
        if self.regression:
            return [
                {"id": e.id, "score": round(float(v), 6)} if e.id is not None else {"score": round(float(v), 6)}
                for e, v in zip(examples, logits.squeeze(-1).tolist(), strict=True)
            ]
        probs = logits.float().softmax(dim=-1)
        rows = []
        for i, example in enumerate(examples):
            best = int(probs[i].argmax())
            row = {"label": self.labels[best], "score": round(float(probs[i, best]), 6)}
            row["scores"] = {
                label: round(float(p), 6) for label, p in zip(self.labels, probs[i].tolist(), strict=False)
            }
            if example.id is not None:
                row = {"id": example.id, **row}
            rows.append(row)
        return rows

    def state(self) -> dict:
        return {
            "text_columns": list(self.text_columns),
            "label_column": self.label_column,
            "labels": list(self.labels or ()),
        }

    def from_state(self, state: dict) -> ClassificationTask:
        return replace(
            self,
            text_columns=tuple(state["text_columns"]),
            label_column=state["label_column"],
            labels=tuple(state["labels"]),
        )
