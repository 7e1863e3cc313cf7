"""SuperGLUE ReCoRD: pick the passage entity that fills ``@placeholder`` in the query.

Every candidate entity span of the passage is scored as a choice (the query
with the placeholder replaced by the entity, next to the passage); the best
scoring entity is the prediction, scored by max-over-gold EM and token F1 with
SQuAD normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import DataError, InputError
from . import metrics
from .base import Alignment, Example
from .multiple_choice import MultipleChoiceTask
from .readers import Record


def _candidates(passage: dict) -> list[str]:
    text = passage["text"]
    seen: dict[str, None] = {}
    for entity in passage["entities"]:
        seen.setdefault(text[entity["start"] : entity["end"] + 1], None)  # ReCoRD ends are inclusive
    return list(seen)


@dataclass(frozen=True)
class RecordTask(MultipleChoiceTask):
    metric_names: tuple[str, ...] = ("f1", "em")

    @property
    def data_format(self) -> str:
        return "train.jsonl/val.jsonl: passage{text, entities[{start, end}]}, qas[{query with @placeholder, answers}]"

    def records_to_examples(self, records: list[Record], *, labelled: bool) -> list[Example]:
        examples = []
        for record in records:
            try:
                passage = record.fields["passage"]
                candidates = _candidates(passage)
                for qa in record.fields["qas"]:
                    golds = [a["text"] for a in qa.get("answers", [])]
                    if labelled and not golds:
                        raise DataError("a query has no answers", record.path, record.line)
                    examples.append(
                        self._example(
                            passage["text"],
                            qa["query"],
                            candidates,
                            golds,
                            qa.get("idx"),
                            f"{record.path}:{record.line}",
                        )
                    )
            except (KeyError, TypeError) as exc:
                raise DataError(f"missing ReCoRD field {exc}", record.path, record.line) from None
        return examples

    @staticmethod
    def _example(passage: str, query: str, candidates: list[str], golds: list[str], idx, source: str) -> Example:
        if "@placeholder" not in query:
            raise KeyError("'@placeholder' in the query")
        if not candidates:
            raise KeyError("'entities' (none given)")
        label = next((i for i, c in enumerate(candidates) if c in golds), -100) if golds else None
        choices = [query.replace("@placeholder", c) for c in candidates]
        return Example((passage,), label, source, idx, {"choices": choices, "entities": candidates, "golds": golds})

    def example_from_input(self, value) -> Example:
        try:
            return self._example(value["passage"], value["query"], list(value["entities"]), [], None, "input")
        except (KeyError, TypeError) as exc:
            raise InputError(f"task {self.name} takes passage, query (with @placeholder) and entities: {exc}") from None

    def example_input(self):
        passage = "The cast of the film met in Paris, then flew to Rome."
        return {"passage": passage, "query": "The cast met in @placeholder.", "entities": ["Paris", "Rome"]}

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, labels, ignore_index=-100)

    def evaluate(self, logits: torch.Tensor, examples: list[Example], alignment: Alignment = ()) -> dict:
        em = f1 = 0.0
        for i, example in enumerate(examples):
            n = len(example.extra["entities"])
            guess = example.extra["entities"][int(logits[i, :n].argmax())]
            e, f = metrics.max_over_gold(guess, example.extra["golds"])
            em, f1 = em + e, f1 + f
        return {"f1": f1 / len(examples), "em": em / len(examples)}

    def predictions(self, logits: torch.Tensor, examples: list[Example], alignment: Alignment = ()) -> list[dict]:
        rows = []
        for i, example in enumerate(examples):
            n = len(example.extra["entities"])
            probs = logits[i, :n].float().softmax(dim=-1)
            best = int(probs.argmax())
            row = {"entity": example.extra["entities"][best], "score": round(float(probs[best]), 6)}
            rows.append({"id": example.id, **row} if example.id is not None else row)
        return rows


__all__ = ["DataError", "RecordTask"]
