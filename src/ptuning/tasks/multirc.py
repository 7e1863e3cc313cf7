"""SuperGLUE MultiRC: one binary decision per (paragraph, question, answer option).

Each answer option is its own example, but the question grouping is kept so
evaluation can report EM over questions (every option of a question right) as
well as F1a over all options.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import DataError, InputError
from . import metrics
from .base import Alignment, Example
from .classification import ClassificationTask, _label_key
from .readers import Record


@dataclass(frozen=True)
class MultiRCTask(ClassificationTask):
    @property
    def data_format(self) -> str:
        return "train.jsonl/val.jsonl: passage{text, questions[{question, answers[{text, label}]}]}"

    def stratum(self, record: Record) -> None:
        """A record is a whole passage with many questions: drawn whole, not stratified."""
        return None

    def records_to_examples(self, records: list[Record], *, labelled: bool) -> list[Example]:
        examples = []
        for record in records:
            try:
                passage = record.fields["passage"]
                for q in passage["questions"]:
                    for a in q["answers"]:
                        label = None
                        if labelled or "label" in a:
                            label = _label_key(a["label"])
                            if label not in self.labels:
                                raise DataError(f"unknown answer label {a['label']!r}", record.path, record.line)
                        group = (record.fields.get("idx"), q.get("idx"))
                        examples.append(
                            Example(
                                (passage["text"], f"{q['question']} {a['text']}"),
                                label,
                                f"{record.path}:{record.line}",
                                (*group, a.get("idx")),
                                {"group": group},
                            )
                        )
            except (KeyError, TypeError) as exc:
                raise DataError(f"missing MultiRC field {exc}", record.path, record.line) from None
        if not examples:
            raise DataError("no answer options found", records[0].path)
        return examples

    def example_from_input(self, value) -> Example:
        if not isinstance(value, dict) or not all(
            isinstance(value.get(k), str) for k in ("passage", "question", "answer")
        ):
            raise InputError(f"task {self.name} takes an object with 'passage', 'question' and 'answer' texts")
        return Example((value["passage"], f"{value['question']} {value['answer']}"), extra={"group": None})

    def example_input(self):
        return {"passage": "The cast met in Paris. They filmed for a week.", "question": "Where?", "answer": "Paris"}

    def evaluate(self, logits: torch.Tensor, examples: list[Example], alignment: Alignment = ()) -> dict:
        predicted = [self.labels[i] for i in logits.argmax(dim=-1).tolist()]
        return metrics.multirc(predicted, [e.label for e in examples], [e.extra["group"] for e in examples])
