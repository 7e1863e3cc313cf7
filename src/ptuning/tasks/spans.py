"""Classification with marked spans: WiC (target word in two sentences) and WSC (pronoun and noun phrase).

The spans arrive as character offsets (WiC ``start1/end1``, ``start2/end2``)
or word indices (WSC ``span1_index``/``span2_index`` into the space-split
text); the tokenizer's offset mapping turns them into token masks, and the head
reads the mean state of each span next to the pooled sentence state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import DataError, InputError
from ..heads import pool
from .base import Example, Featurized
from .classification import ClassificationTask, _label_key
from .readers import Record


class SpanClassificationHead(nn.Module):
    """Linear layer on [pooled; mean of span 1; mean of span 2]."""

    def __init__(self, hidden_size: int, num_labels: int, pooling: str, dropout: float = 0.1) -> None:
        super().__init__()
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(3 * hidden_size, num_labels)

    def forward(self, hidden, attention_mask, span_mask_1=None, span_mask_2=None, **_) -> torch.Tensor:
        parts = [pool(hidden, attention_mask, self.pooling)]  # (B, H)
        for mask in (span_mask_1, span_mask_2):
            weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
            parts.append((hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0))  # (B, H)
        return self.classifier(self.dropout(torch.cat(parts, dim=-1)))  # (B, num_labels)


def _word_span(text: str, index: int, span_text: str) -> tuple[int, int]:
    """Character range of the words starting at word ``index`` of the space-split ``text``."""
    words = text.split(" ")
    if not 0 <= index < len(words):
        raise ValueError(f"word index {index} outside the text ({len(words)} words)")
    start = sum(len(w) + 1 for w in words[:index])
    return start, start + len(span_text)


@dataclass(frozen=True)
class SpanClassificationTask(ClassificationTask):
    kind: str = "wic"  # "wic" | "wsc"

    @property
    def data_format(self) -> str:
        if self.kind == "wic":
            return "train.jsonl/val.jsonl: sentence1, sentence2, word, start1/end1, start2/end2 -> label"
        return "train.jsonl/val.jsonl: text, target{span1_index, span1_text, span2_index, span2_text} -> label"

    def _spans(self, fields: dict) -> tuple[tuple[str, ...], list[tuple[int, int, int]]]:
        """Texts and (segment, start, end) character spans."""
        if self.kind == "wic":
            texts = (fields["sentence1"], fields["sentence2"])
            return texts, [
                (0, int(fields["start1"]), int(fields["end1"])),
                (1, int(fields["start2"]), int(fields["end2"])),
            ]
        target = fields["target"]
        text = fields["text"]
        one = _word_span(text, int(target["span1_index"]), target["span1_text"])
        two = _word_span(text, int(target["span2_index"]), target["span2_text"])
        return (text,), [(0, *one), (0, *two)]

    def records_to_examples(self, records: list[Record], *, labelled: bool) -> list[Example]:
        examples = []
        for record in records:
            try:
                texts, spans = self._spans(record.fields)
            except (KeyError, TypeError, ValueError) as exc:
                raise DataError(f"missing or bad span field: {exc}", record.path, record.line) from None
            label = None
            if labelled or self.label_column in record.fields:
                label = self._label(record)
            examples.append(
                Example(texts, label, f"{record.path}:{record.line}", record.fields.get("idx"), {"spans": spans})
            )
        return examples

    def example_from_input(self, value) -> Example:
        if not isinstance(value, dict):
            raise InputError(f"task {self.name} takes an object with its span fields ({self.data_format})")
        try:
            texts, spans = self._spans(value)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"missing or bad span field: {exc}") from None
        return Example(texts, extra={"spans": spans})

    def example_input(self):
        if self.kind == "wic":
            one, two = "He sat on the bank.", "The bank closed early."
            return {"sentence1": one, "sentence2": two, "start1": 14, "end1": 18, "start2": 4, "end2": 8}
        target = {"span1_index": 0, "span1_text": "The cup", "span2_index": 7, "span2_text": "it"}
        return {"text": "The cup fell off the table because it was round.", "target": target}

    def featurize(self, examples: list[Example], tokenizer, max_length: int) -> Featurized:
        if not getattr(tokenizer, "is_fast", False):
            raise DataError(f"task {self.name} needs a fast tokenizer (offset mapping) for its spans")
        features = []
        for example in examples:
            encoded = tokenizer(*example.texts, truncation=True, max_length=max_length, return_offsets_mapping=True)
            segments = encoded.sequence_ids()
            row = {k: encoded[k] for k in encoded.keys() if k != "offset_mapping"}
            for n, (segment, start, end) in enumerate(example.extra["spans"], start=1):
                row[f"span_mask_{n}"] = [
                    int(seg == segment and a < end and b > start and b > a)
                    for seg, (a, b) in zip(segments, encoded["offset_mapping"], strict=True)
                ]
            if example.label is not None:
                row["labels"] = self.labels.index(example.label)
            features.append(row)
        return Featurized(features)

    def build_head(self, hidden_size: int, pooling: str) -> nn.Module:
        return SpanClassificationHead(hidden_size, len(self.labels), pooling)


__all__ = ["SpanClassificationHead", "SpanClassificationTask", "_label_key"]
