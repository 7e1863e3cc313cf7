"""Sequence labelling: NER (CoNLL-2003, CoNLL-2004, OntoNotes), SRL (CoNLL-2005/2012), any CoNLL file.

Words are labelled on their first sub-token (later sub-tokens are ignored by
the loss) and predicted from it. A sentence longer than ``max_length`` is not
truncated: it is cut into overlapping windows of words and every word takes its
prediction from the window where it sits furthest from an edge, so the number
of predicted tags always equals the number of words. Tags are IOB2 inside and
written back in the data's own scheme; metrics are entity-level micro P/R/F1
and per-type F1 as conlleval computes them (seqeval's default mode).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from ..errors import DataError, InputError
from . import schemes
from .base import Alignment, DataFiles, Example, Featurized, Task, Window, stack_windows
from .readers import Record

IGNORE = -100


class TokenClassificationHead(nn.Module):
    """Dropout and a linear layer on every token's last hidden state."""

    def __init__(self, hidden_size: int, num_tags: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_tags)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor, **_) -> torch.Tensor:
        return self.classifier(self.dropout(hidden))  # (B, L, tags)


class CRFTokenClassificationHead(TokenClassificationHead):
    """Token head with a constrained CRF: trained by its log-likelihood, decoded by Viterbi.

    In eval mode the returned scores are the emissions with the Viterbi path
    lifted far above them at the ``word_mask`` positions, so an argmax reads the path.
    """

    def __init__(self, hidden_size: int, labels: tuple[str, ...], dropout: float = 0.1) -> None:
        super().__init__(hidden_size, len(labels), dropout)
        from ..crf import CRF

        self.crf = CRF(labels)

    def forward(self, hidden, attention_mask, word_mask=None, **_) -> torch.Tensor:
        emissions = super().forward(hidden, attention_mask)  # (B, L, tags)
        if self.training:
            # touch the CRF parameters inside forward so data-parallel wrappers see them used
            touch = self.crf.transitions.sum() + self.crf.start.sum() + self.crf.end.sum()
            return emissions + 0.0 * touch
        if word_mask is None:
            return emissions
        path = self.crf.viterbi(emissions, word_mask.bool())  # (B, L), -1 elsewhere
        lifted = nn.functional.one_hot(path.clamp(min=0), emissions.shape[-1]).to(emissions.dtype) * 1e4
        return torch.where((path >= 0)[..., None], emissions + lifted, emissions)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.crf.nll(logits, labels, labels != IGNORE)


def brackets_to_bio(column: list[str]) -> list[str]:
    """CoNLL-2005/2012 argument brackets (``(A0*``, ``*``, ``*)``, ``(V*)``) to BIO tags."""
    tags, current = [], None
    for cell in column:
        opened = re.match(r"\(([^*()]+)\*", cell)
        if opened:
            current = opened.group(1)
            tags.append(f"B-{current}")
        else:
            tags.append(f"I-{current}" if current else "O")
        if cell.endswith(")"):
            current = None
    return tags


@dataclass(frozen=True)
class TaggingTask(Task):
    """A CoNLL-column task. ``tag_column`` and ``token_column`` index the whitespace-split columns.

    ``srl``: every argument column from ``first_arg_column`` on is one predicate's
    bracketed arguments; each becomes an instance with the predicate marked as a
    second segment, and the verb span (V) is excluded from the score.
    """

    name: str
    description: str
    files: DataFiles
    token_column: int = 0
    tag_column: int = -1
    labels: tuple[str, ...] | None = None
    scheme: str = "auto"
    type_map: dict = field(default_factory=dict)
    srl: bool = False
    first_arg_column: int = 11
    last_arg_column: int = -1
    stride: int = 32
    crf: bool = False
    hub_tag_field: str = "ner_tags"  # a hub dataset's per-token tag list (conll2003, wnut_17, ...)
    metric_names: tuple[str, ...] = ("f1", "precision", "recall")
    family: str = "tagging"

    @property
    def data_format(self) -> str:
        files = "/".join(self.files.train + self.files.validation + self.files.test)
        if self.srl:
            return f"{files}: CoNLL columns, token col {self.token_column}, bracketed argument columns"
        return (
            f"{files}: CoNLL columns, token col {self.token_column}, tag col {self.tag_column}, blank line = sentence"
        )

    def with_options(self, **options) -> TaggingTask:
        changes = {}
        if options.get("text_column") is not None:
            changes["token_column"] = int(options["text_column"])
        if options.get("label_column") is not None:
            changes["tag_column"] = int(options["label_column"])
        if options.get("labels"):
            changes["labels"] = tuple(options["labels"])
        if options.get("crf"):
            changes["crf"] = True
        return replace(self, **changes) if changes else self

    def state(self) -> dict:
        return {
            "labels": list(self.labels or ()),
            "scheme": self.scheme,
            "token_column": self.token_column,
            "tag_column": self.tag_column,
            "crf": self.crf,  # the head's layout: a CRF head has transition weights to load
        }

    def from_state(self, state: dict) -> TaggingTask:
        return replace(
            self,
            labels=tuple(state["labels"]),
            scheme=state["scheme"],
            token_column=state["token_column"],
            tag_column=state["tag_column"],
            crf=bool(state.get("crf", False)),  # artifacts from before it was recorded: no CRF
        )

    # -- reader -> examples ---------------------------------------------------------
    def _sentences(self, records: list[Record], labelled: bool):
        """(tokens, raw tags or None, record) per instance."""
        for record in records:
            if "rows" not in record.fields:
                record = self._columns_from_hub(record)
            rows = record.fields["rows"]
            width = min(len(r) for r in rows)
            needed = self.token_column + 1
            if labelled and not self.srl:  # the tag column must be another column than the token's
                needed = max(needed, self.tag_column + 1 if self.tag_column >= 0 else self.token_column + 2)
            if width < needed:
                bad = next(i for i, r in enumerate(rows) if len(r) == width)
                raise DataError(
                    f"expected at least {needed} columns, found {width}", record.path, record.fields["lines"][bad]
                )
            tokens = [r[self.token_column] for r in rows]
            if self.srl:
                last = len(rows[0]) + self.last_arg_column + 1 if self.last_arg_column < 0 else self.last_arg_column + 1
                for column in range(self.first_arg_column, last):
                    bio = brackets_to_bio([r[column] for r in rows])
                    if "B-V" not in bio:
                        raise DataError("argument column without a (V*) predicate", record.path, record.line)
                    yield tokens, bio, record, bio.index("B-V")
            else:
                has_tags = labelled or (width > self.token_column + 1)
                yield tokens, ([r[self.tag_column] for r in rows] if has_tags else None), record, None

    def _columns_from_hub(self, record: Record) -> Record:
        """A hub row (``tokens`` + tag list) as the column rows a CoNLL file gives (token, tag)."""
        tokens, tags = record.fields.get("tokens"), record.fields.get(self.hub_tag_field)
        if not isinstance(tokens, list) or not isinstance(tags, list) or len(tokens) != len(tags):
            wanted = f"`tokens` and `{self.hub_tag_field}`"
            raise DataError(f"a hub tagging row needs {wanted} lists of the same length", record.path, record.line)
        tag_at = self.tag_column if self.tag_column >= 0 else self.token_column + 1
        rows = []
        for token, tag in zip(tokens, tags, strict=True):
            row = [""] * (max(self.token_column, tag_at) + 1)
            row[self.token_column], row[tag_at] = token, tag
            rows.append(row)
        return Record({"rows": rows, "lines": [record.line] * len(rows)}, record.path, record.line)

    def records_to_examples(self, records: list[Record], *, labelled: bool) -> list[Example]:
        items = list(self._sentences(records, labelled))
        raw = [tags for _, tags, _, _ in items if tags is not None]
        scheme = (
            schemes.detect(raw) if self.scheme == "auto" and raw else ("iob2" if self.scheme == "auto" else self.scheme)
        )
        examples = []
        for tokens, tags, record, predicate in items:
            if tags is not None:
                tags = [self.type_map.get(t, t) for t in tags]
                tags = schemes.to_iob2([self._map_type(t) for t in tags], scheme)
                if self.labels is not None:
                    unknown = next((t for t in tags if t not in self.labels), None)
                    if unknown is not None:
                        raise DataError(
                            f"unknown tag {unknown!r} (labels: {', '.join(self.labels)})", record.path, record.line
                        )
            extra = {"scheme": scheme, "lines": record.fields["lines"], "predicate": predicate}
            examples.append(Example(tuple(tokens), tags, f"{record.path}:{record.line}", None, extra))
        return examples

    def _map_type(self, tag: str) -> str:
        prefix, kind = schemes.split(tag)
        return tag if prefix == "O" or kind not in self.type_map else f"{prefix}-{self.type_map[kind]}"

    def with_labels_from(self, records: list[Record]) -> TaggingTask:
        if self.labels is not None:
            return self
        tags = {t for e in self.records_to_examples(records, labelled=True) for t in e.label}
        kinds = sorted({schemes.split(t)[1] for t in tags if t != "O"})
        return replace(self, labels=("O", *[f"{p}-{k}" for k in kinds for p in "BI"]))

    def example_from_input(self, value) -> Example:
        if not isinstance(value, list) or not value or not all(isinstance(t, str) and t for t in value):
            raise InputError(f"task {self.name} takes a list of tokens")
        return Example(tuple(value), extra={"scheme": "iob2", "lines": None, "predicate": None})

    def example_input(self):
        return ["John", "lives", "in", "Paris", "."]

    # -- features: windows of words ---------------------------------------------------
    def featurize(self, examples: list[Example], tokenizer, max_length: int) -> Featurized:
        """One feature per window of words; the alignment keeps which positions hold the words each window owns."""
        if not getattr(tokenizer, "is_fast", False):
            raise DataError(f"task {self.name} needs a fast tokenizer (word ids)")
        index = {label: i for i, label in enumerate(self.labels)}
        features: list[dict] = []
        alignment: list[tuple[Window, ...]] = []
        for example in examples:
            words = list(example.texts)
            pieces = [len(tokenizer.tokenize(w)) or 1 for w in words]
            pair = [words[example.extra["predicate"]]] if example.extra.get("predicate") is not None else None
            budget = max_length - (2 if pair is None else 3 + len(tokenizer.tokenize(pair[0])))
            windows = _windows(pieces, max(budget, 1), self.stride)
            owners = _owners(len(words), windows)
            placed: list[Window] = []
            for w, (start, end) in enumerate(windows):
                encoded = tokenizer(
                    words[start:end], pair, is_split_into_words=True, truncation="only_first", max_length=max_length
                )
                word_ids = encoded.word_ids()
                segments = encoded.sequence_ids()
                positions, labels, word_mask, previous = [], [], [], None
                for pos, (word, segment) in enumerate(zip(word_ids, segments, strict=True)):
                    label, owned = IGNORE, 0
                    if word is not None and segment == 0 and word != previous:
                        absolute = start + word
                        if owners[absolute] == w:
                            positions.append((pos, absolute))
                            owned = 1
                            if example.label is not None:
                                label = index[example.label[absolute]]
                    previous = word if segment == 0 else None
                    labels.append(label)
                    word_mask.append(owned)
                placed.append((len(features), tuple(positions)))
                row = {k: encoded[k] for k in encoded.keys()}
                row["word_mask"] = word_mask
                if example.label is not None:
                    row["labels"] = labels
                features.append(row)
            alignment.append(tuple(placed))
        return Featurized(features, tuple(alignment))

    def build_head(self, hidden_size: int, pooling: str) -> nn.Module:
        if self.crf:
            return CRFTokenClassificationHead(hidden_size, self.labels)
        return TokenClassificationHead(hidden_size, len(self.labels))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)

    # -- outputs ----------------------------------------------------------------------
    def join_units(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return stack_windows(parts)  # (windows, L, tags)

    def decode(self, logits: torch.Tensor, example: Example, windows: tuple[Window, ...]) -> list[str]:
        """One IOB2 tag per word, from each word's owning window."""
        tags = ["O"] * len(example.texts)
        for feature, positions in windows:
            best = logits[feature].argmax(dim=-1).tolist()
            for pos, word in positions:
                tags[word] = self.labels[best[pos]]
        return schemes.repair(tags)

    def evaluate(self, logits: torch.Tensor, examples: list[Example], alignment: Alignment) -> dict:
        from seqeval.metrics import classification_report

        predicted = [self.decode(logits, e, w) for e, w in zip(examples, alignment, strict=True)]
        gold = [list(e.label) for e in examples]
        if self.srl:  # the predicate itself is given, not predicted: drop V from the score
            predicted = [[("O" if t.endswith("-V") else t) for t in s] for s in predicted]
            gold = [[("O" if t.endswith("-V") else t) for t in s] for s in gold]
        report = classification_report(gold, predicted, output_dict=True, zero_division=0)
        micro = report["micro avg"]
        scores = {"f1": micro["f1-score"], "precision": micro["precision"], "recall": micro["recall"]}
        for kind, values in report.items():
            if not kind.endswith("avg"):
                scores[f"f1_{kind}"] = values["f1-score"]
        return scores

    def predictions(self, logits: torch.Tensor, examples: list[Example], alignment: Alignment) -> list[dict]:
        return [
            {"tokens": list(e.texts), "tags": schemes.from_iob2(self.decode(logits, e, w), e.extra["scheme"])}
            for e, w in zip(examples, alignment, strict=True)
        ]

    def write_predictions(self, rows: list[dict], examples: list[Example], source, target) -> str:
        """The input file with a predicted-tag column appended to every token line."""
        lines = Path(source).read_text(encoding="utf-8-sig").splitlines()  # as the reader read it: no BOM
        for row, example in zip(rows, examples, strict=True):
            if self.srl:
                continue
            for number, tag in zip(example.extra["lines"], row["tags"], strict=True):
                lines[number - 1] = f"{lines[number - 1].rstrip()} {tag}"
        return "\n".join(lines) + "\n"


def _windows(pieces: list[int], budget: int, stride: int) -> list[tuple[int, int]]:
    """Word ranges whose sub-tokens fit ``budget``, each starting ``stride`` words or more apart
    but overlapping the previous one when a sentence does not fit at once."""
    windows, start = [], 0
    while True:
        end, used = start, 0
        while end < len(pieces) and (used + pieces[end] <= budget or end == start):
            used += pieces[end]
            end += 1
        windows.append((start, end))
        if end >= len(pieces):
            return windows
        overlap = min(stride, (end - start) // 2)
        start = max(end - overlap, start + 1)


def _owners(n_words: int, windows: list[tuple[int, int]]) -> list[int]:
    """For each word, the window in which it is furthest from an edge."""
    owners = []
    for word in range(n_words):
        best, margin = 0, -1
        for w, (start, end) in enumerate(windows):
            if start <= word < end:
                m = min(word - start, end - 1 - word)
                if m > margin:
                    best, margin = w, m
        owners.append(best)
    return owners
