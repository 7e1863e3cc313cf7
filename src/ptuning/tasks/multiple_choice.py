"""Multiple choice: score every (context, choice) pair, softmax over the choices.

COPA puts the question type ("cause"/"effect") into the context; the generic
task reads SWAG-style JSONL (``context``, ``choices`` list, integer ``label``).
ReCoRD (``record.py``) reuses this family with a variable number of choices.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import DataError, InputError
from ..heads import SequenceClassificationHead
from . import metrics
from .base import Alignment, DataFiles, Example, Featurized, Task
from .readers import Record

COPA_QUESTION = {"cause": "What was the cause?", "effect": "What happened as a result?"}


@dataclass(frozen=True)
class MultipleChoiceTask(Task):
    name: str
    description: str
    files: DataFiles
    kind: str = "generic"  # "copa" or "generic"
    metric_names: tuple[str, ...] = ("accuracy",)
    family: str = "multiple-choice"

    @property
    def data_format(self) -> str:
        if self.kind == "copa":
            return "train.jsonl/val.jsonl: premise, question (cause|effect), choice1, choice2 -> label (0|1)"
        return "train/validation .jsonl: context, choices [..] -> label (index)"

    def _parse(self, fields: dict) -> tuple[str, list[str]]:
        if self.kind == "copa":
            question = COPA_QUESTION.get(fields["question"])
            if question is None:
                raise KeyError("question must be 'cause' or 'effect'")
            return f"{fields['premise']} {question}", [fields["choice1"], fields["choice2"]]
        choices = fields["choices"]
        if not isinstance(choices, list) or len(choices) < 2:
            raise KeyError("choices must be a list of at least two texts")
        return fields["context"], choices

    def stratum(self, record: Record) -> Hashable | None:
        value = record.fields.get("label")
        return None if value is None or isinstance(value, (list, dict)) else str(value)

    def records_to_examples(self, records: list[Record], *, labelled: bool) -> list[Example]:
        examples = []
        for record in records:
            try:
                context, choices = self._parse(record.fields)
            except KeyError as exc:
                raise DataError(f"missing or bad field: {exc}", record.path, record.line) from None
            if not all(isinstance(c, str) and c.strip() for c in [context, *choices]):
                raise DataError("context and choices must be non-empty text", record.path, record.line)
            label = None
            if labelled or "label" in record.fields:
                label = record.get("label")
                if not isinstance(label, int) or not 0 <= label < len(choices):
                    raise DataError(
                        f"label {label!r} is not a choice index 0..{len(choices) - 1}", record.path, record.line
                    )
            examples.append(
                Example(
                    (context,), label, f"{record.path}:{record.line}", record.fields.get("idx"), {"choices": choices}
                )
            )
        return examples

    def example_from_input(self, value) -> Example:
        if not isinstance(value, dict) or not isinstance(value.get("choices"), list):
            raise InputError(f"task {self.name} takes an object with 'context' (or COPA fields) and 'choices'")
        try:
            context, choices = (
                self._parse(value)
                if self.kind == "generic"
                else self._parse({**value, "choice1": value["choices"][0], "choice2": value["choices"][1]})
            )
        except (KeyError, IndexError) as exc:
            raise InputError(f"bad input: {exc}") from None
        return Example((context,), extra={"choices": choices})

    def example_input(self):
        if self.kind == "copa":
            return {"premise": "The ground was wet.", "question": "cause", "choices": ["It rained.", "The sun shone."]}
        return {"context": "She opened her umbrella", "choices": ["because it rained.", "because it was sunny."]}

    def featurize(self, examples: list[Example], tokenizer, max_length: int) -> Featurized:
        features = []
        for example in examples:
            contexts = [example.texts[0]] * len(example.extra["choices"])
            encoded = tokenizer(contexts, example.extra["choices"], truncation=True, max_length=max_length)
            row = {key: encoded[key] for key in encoded.keys()}  # each (C, L_c)
            if example.label is not None:
                row["labels"] = example.label
            features.append(row)
        return Featurized(features)

    def build_head(self, hidden_size: int, pooling: str) -> nn.Module:
        return SequenceClassificationHead(hidden_size, 1, pooling)  # one score per (context, choice)

    def evaluate(self, logits: torch.Tensor, examples: list[Example], alignment: Alignment = ()) -> dict:
        predicted = logits.argmax(dim=-1).tolist()
        return {"accuracy": metrics.accuracy(predicted, [e.label for e in examples])}

    def predictions(self, logits: torch.Tensor, examples: list[Example], alignment: Alignment = ()) -> list[dict]:
        rows = []
        for i, example in enumerate(examples):
            n = len(example.extra["choices"])
            probs = logits[i, :n].float().softmax(dim=-1)
            best = int(probs.argmax())
            row = {"choice": best, "text": example.extra["choices"][best], "score": round(float(probs[best]), 6)}
            rows.append({"id": example.id, **row} if example.id is not None else row)
        return rows
