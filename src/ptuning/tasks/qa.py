"""Extractive question answering: SQuAD 1.1 and 2.0.

Contexts longer than ``max_length`` are cut into windows ``doc_stride`` tokens
apart (the question is kept whole in every window, up to ``max_question_tokens``).
A span head scores start and end per token; post-processing follows the
reference implementations: the ``n_best`` starts and ends of every window,
answers at most ``max_answer_length`` tokens, mapped back through the
tokenizer's offsets to the exact context substring, best over windows. For
SQuAD 2.0 the null answer is scored at the first token and a null-score
threshold is tuned on the evaluation set: ``evaluate`` reports it with the
metrics and ``calibrated`` gives the task that uses it (the best-dev artifact's).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from ..errors import DataError, InputError
from . import metrics
from .base import Alignment, DataFiles, Example, Featurized, Task, Window, load_records, stack_windows
from .readers import Record


class SpanHead(nn.Module):
    """Start and end logits for every token."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.qa_outputs = nn.Linear(hidden_size, 2)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor, **_) -> torch.Tensor:
        logits = self.qa_outputs(hidden)  # (B, L, 2)
        return logits.masked_fill(~attention_mask.bool()[..., None], -1e4)


def article_side(title: str, fraction: float) -> str:
    """Which side of a split by article title an article falls on (stable hash of the title).

    A ``fraction`` of the articles is held out and halved: ``validation`` (early
    stopping, the best-dev checkpoint) and ``test`` (the reported figure), so the
    checkpoint is never chosen on the articles it is scored on."""
    value = int(hashlib.sha256(title.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    if value >= fraction:
        return "train"
    return "validation" if value < fraction / 2 else "test"


@dataclass(frozen=True)
class QATask(Task):
    name: str
    description: str
    files: DataFiles
    version_2: bool = False
    doc_stride: int = 128
    max_answer_length: int = 30
    n_best: int = 20
    max_question_tokens: int = 64
    null_threshold: float = 0.0
    tune_null_threshold: bool = True  # False for a reported split (for_reporting): the calibrated one is used
    split_by_article: float | None = None
    family: str = "qa"
    default_max_length: ClassVar[int] = 384  # the reference SQuAD setting
    sweep_prompt_lengths: ClassVar[tuple[int, int]] = (16, 512)  # hard sequence tasks want long prompts

    @property
    def metric_names(self) -> tuple[str, ...]:
        return ("f1", "exact", "HasAns_f1", "NoAns_exact") if self.version_2 else ("f1", "exact")

    @property
    def data_format(self) -> str:
        files = "/".join(self.files.train + self.files.validation)
        return f"{files}: official SQuAD JSON (data -> paragraphs -> qas), or JSONL id/question/context/answers"

    def with_options(self, **options) -> QATask:
        changes = {k: options[k] for k in ("doc_stride", "split_by_article") if options.get(k) is not None}
        return replace(self, **changes) if changes else self

    def state(self) -> dict:
        return {
            "doc_stride": self.doc_stride,
            "null_threshold": self.null_threshold,
            "max_answer_length": self.max_answer_length,
            "n_best": self.n_best,
            "split_by_article": self.split_by_article,
        }

    def from_state(self, state: dict) -> QATask:
        return replace(self, **state)

    def calibrated(self, metrics: dict) -> QATask:
        """SQuAD 2.0: the task that answers with the null threshold this evaluation tuned."""
        if not self.version_2 or "null_threshold" not in metrics:
            return self
        return replace(self, null_threshold=float(metrics["null_threshold"]))

    def for_reporting(self) -> QATask:
        return replace(self, tune_null_threshold=False)

    # -- reader -> examples ---------------------------------------------------------------
    def load_split(self, data: str | Path, split: str) -> list[Record]:
        """With ``split_by_article`` every split is one side of the validation file."""
        if self.split_by_article is None:
            return super().load_split(data, split)
        return self.select_split(load_records(self.files, data, "validation"), split)

    def training_records(self, data: str | Path) -> tuple[list[Record], list[Record]]:
        """With ``split_by_article`` the one file is read once and split by article title."""
        if self.split_by_article is None:
            return super().training_records(data)
        pooled = load_records(self.files, data, "validation")
        return self.select_split(pooled, "train"), self.select_split(pooled, "validation")

    def select_split(self, records: list[Record], split: str) -> list[Record]:
        """With ``split_by_article``, train, validation and test all come from one file, split by article title."""
        if self.split_by_article is None:
            return records
        if split not in ("train", "validation", "test"):
            raise DataError(f"--split-by-article gives the splits train, validation and test, not {split!r}")
        chosen = [r for r in records if article_side(r.fields.get("title", ""), self.split_by_article) == split]
        if not chosen:
            raise DataError(
                f"--split-by-article {self.split_by_article} leaves the {split} side empty; hold out more articles",
                records[0].path,
            )
        return chosen

    def records_to_examples(self, records: list[Record], *, labelled: bool) -> list[Example]:
        examples = []
        for record in records:
            f = record.fields
            question, context = f.get("question"), f.get("context")
            if not isinstance(question, str) or not isinstance(context, str) or not question.strip():
                raise DataError("each question needs 'question' and 'context' text", record.path, record.line)
            answers = f.get("answers") or {"text": [], "answer_start": []}
            texts, starts = list(answers.get("text", [])), list(answers.get("answer_start", []))
            for text, start in zip(texts, starts, strict=False):
                if context[start : start + len(text)] != text:
                    raise DataError(
                        f"answer {text!r} is not at offset {start} of its context", record.path, record.line
                    )
            if labelled and not texts and not (self.version_2 and f.get("is_impossible")):
                raise DataError(
                    f"question {f.get('id')!r} has no answer (use squad_v2 for unanswerable ones)",
                    record.path,
                    record.line,
                )
            label = {"text": texts, "start": starts} if (texts or f.get("is_impossible")) else None
            examples.append(
                Example(
                    (question, context),
                    label,
                    f"{record.path}:{record.line}",
                    f.get("id"),
                    {"title": f.get("title", "")},
                )
            )
        return examples

    def example_from_input(self, value) -> Example:
        if not isinstance(value, dict) or not all(isinstance(value.get(k), str) for k in ("question", "context")):
            raise InputError(f"task {self.name} takes an object with 'question' and 'context' texts")
        return Example((value["question"], value["context"]))

    def example_input(self):
        return {"question": "Where did the cast meet?", "context": "The cast met in Paris in June."}

    # -- features: windows over the context -------------------------------------------------
    def featurize(self, examples: list[Example], tokenizer, max_length: int) -> Featurized:
        """One feature per window; the alignment keeps each window's token -> context character offsets."""
        if not getattr(tokenizer, "is_fast", False):
            raise DataError(f"task {self.name} needs a fast tokenizer (offset mapping)")
        features: list[dict] = []
        alignment: list[tuple[Window, ...]] = []
        for example in examples:
            question, context = example.texts
            q_ids = tokenizer(question, add_special_tokens=False)["input_ids"]
            if len(q_ids) > self.max_question_tokens:
                question = tokenizer.decode(q_ids[: self.max_question_tokens])
            stride = min(self.doc_stride, max(1, max_length // 2))
            encoded = tokenizer(
                question,
                context,
                truncation="only_second",
                max_length=max_length,
                stride=stride,
                return_overflowing_tokens=True,
                return_offsets_mapping=True,
            )
            windows: list[Window] = []
            for w in range(len(encoded["input_ids"])):
                segments = encoded.sequence_ids(w)
                offsets = tuple(
                    tuple(o) if s == 1 else None for o, s in zip(encoded["offset_mapping"][w], segments, strict=True)
                )
                windows.append((len(features), offsets))
                row = {
                    k: encoded[k][w]
                    for k in encoded.keys()
                    if k not in ("offset_mapping", "overflow_to_sample_mapping")
                }
                if example.label is not None:
                    row["labels"] = self._positions(example.label, offsets)
                features.append(row)
            alignment.append(tuple(windows))
        return Featurized(features, tuple(alignment))

    @staticmethod
    def _positions(label: dict, offsets: tuple) -> list[int]:
        """Token start/end of the first gold answer in this window, or (0, 0) (the null position)."""
        if not label["text"]:
            return [0, 0]
        start_char = label["start"][0]
        end_char = start_char + len(label["text"][0])
        inside = [i for i, o in enumerate(offsets) if o is not None]
        if not inside or offsets[inside[0]][0] > start_char or offsets[inside[-1]][1] < end_char:
            return [0, 0]
        start = next(i for i in inside if offsets[i][1] > start_char)
        end = next(i for i in reversed(inside) if offsets[i][0] < end_char)
        return [start, end]

    def build_head(self, hidden_size: int, pooling: str) -> nn.Module:
        return SpanHead(hidden_size)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        start, end = logits.unbind(-1)  # (B, L) each
        return (nn.functional.cross_entropy(start, labels[:, 0]) + nn.functional.cross_entropy(end, labels[:, 1])) / 2

    def distillation_rows(self, logits: torch.Tensor, labels: torch.Tensor, batch: dict):
        """A start and an end distribution over each window's positions; padding positions take no part."""
        B, L, _ = logits.shape
        rows = logits.permute(0, 2, 1).reshape(B * 2, L)  # (B*2, L): start, end of each window
        real = batch["attention_mask"].bool()[:, None, :].expand(B, 2, L).reshape(B * 2, L)  # (B*2, L)
        return rows, None, real

    # -- post-processing -------------------------------------------------------------------
    def join_units(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return stack_windows(parts)  # (windows, L, 2)

    def best_answer(self, logits: torch.Tensor, example: Example, windows: tuple[Window, ...]) -> tuple[str, float]:
        """``(answer text, null score minus best span score)`` over all windows of an example."""
        context = example.texts[1]
        best_text, best_score, null_score = "", float("-inf"), float("inf")
        for feature, offsets in windows:
            start_logits, end_logits = logits[feature, : len(offsets)].unbind(-1)
            null_score = min(null_score, float(start_logits[0] + end_logits[0]))
            starts = torch.topk(start_logits, min(self.n_best, len(offsets))).indices.tolist()
            ends = torch.topk(end_logits, min(self.n_best, len(offsets))).indices.tolist()
            for s in starts:
                for e in ends:
                    if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > self.max_answer_length:
                        continue
                    score = float(start_logits[s] + end_logits[e])
                    if score > best_score:
                        best_score, best_text = score, context[offsets[s][0] : offsets[e][1]]
        return best_text, null_score - best_score

    def evaluate(self, logits: torch.Tensor, examples: list[Example], alignment: Alignment) -> dict:
        """EM and F1; SQuAD 2.0 also the null threshold tuned here (see :meth:`calibrated`)."""
        answers = [self.best_answer(logits, e, w) for e, w in zip(examples, alignment, strict=True)]
        if not self.version_2:
            return self._score([(text, e) for (text, _), e in zip(answers, examples, strict=True)])
        # SQuAD 2.0: tune the null threshold on this set (the caller adopts it with `calibrated`), unless the set
        # is only reported: then answer with the calibrated threshold
        thresholds = {diff for _, diff in answers} | {0.0} if self.tune_null_threshold else {self.null_threshold}
        best = None
        for threshold in sorted(thresholds):
            chosen = [("" if diff > threshold else text, e) for (text, diff), e in zip(answers, examples, strict=True)]
            scores = self._score(chosen)
            if best is None or scores["f1"] > best[1]["f1"]:
                best = (threshold, scores)
        return {**best[1], "null_threshold": best[0]}

    def _score(self, predictions: list[tuple[str, Example]]) -> dict:
        groups = {"all": [], "HasAns": [], "NoAns": []}
        for text, example in predictions:
            golds = example.label["text"] if example.label and example.label["text"] else [""]
            em, f1 = metrics.max_over_gold(text, golds)
            groups["all"].append((em, f1))
            groups["HasAns" if golds != [""] else "NoAns"].append((em, f1))
        scores = {
            "exact": sum(e for e, _ in groups["all"]) / len(groups["all"]),
            "f1": sum(f for _, f in groups["all"]) / len(groups["all"]),
        }
        if self.version_2:
            for name in ("HasAns", "NoAns"):
                rows = groups[name]
                scores[f"{name}_exact"] = sum(e for e, _ in rows) / len(rows) if rows else 0.0
                scores[f"{name}_f1"] = sum(f for _, f in rows) / len(rows) if rows else 0.0
        return scores

    def predictions(self, logits: torch.Tensor, examples: list[Example], alignment: Alignment) -> list[dict]:
        rows = []
        for example, windows in zip(examples, alignment, strict=True):
            text, diff = self.best_answer(logits, example, windows)
            if self.version_2 and diff > self.null_threshold:
                text = ""
            rows.append({"id": example.id, "answer": text, "null_odds": round(diff, 6)})
        return rows

    def write_predictions(self, rows: list[dict], examples: list[Example], source, target) -> str:
        """The official prediction map ``{id: answer}``; SQuAD 2.0 also writes ``null_odds.json`` beside it."""
        if self.version_2:
            odds = Path(target).parent / "null_odds.json"
            partial = odds.with_name(f".{odds.name}.tmp")
            partial.write_text(json.dumps({r["id"]: r["null_odds"] for r in rows}, indent=1))
            os.replace(partial, odds)  # atomic, like the prediction file itself
        return json.dumps({r["id"]: r["answer"] for r in rows}, indent=1, ensure_ascii=False) + "\n"
