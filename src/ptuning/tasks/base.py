"""What every task provides, and where its data comes from.

A task is declarative: a reader (official files or a hub id) -> features for
the tokenizer -> a head -> a metric. A task family (classification, multiple
choice, tagging, QA) subclasses :class:`Task` once; a new task of an existing
family is a few lines of data (see ``classification.py``).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import DataError, PTuningError
from ..finite import dumps
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
    # A split that, when its file is in the data directory, selects the checkpoint in place of ``validation``,
    # which is then only the reported split (FewGLUE's dev32: no peeking at the full dev set).
    selection: str | None = None

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


Window = tuple[int, tuple]
"""One window of an example: the index of its feature, and how that feature's tokens map back onto the
example (QA: each token's character offsets in the context; tagging: ``(token position, word index)`` pairs)."""

Alignment = tuple[tuple[Window, ...], ...]
"""Per example, its windows in order; empty for the families where example ``i`` is feature ``i``."""


@dataclass(frozen=True)
class Featurized:
    """Model inputs for a list of examples, and how to read the model's outputs back onto those examples.

    The alignment travels beside the features instead of inside the examples, so featurizing never
    changes its input: the same examples can be featurized again (another length, the server's budget)
    and every result evaluated against them.
    """

    features: list[dict]
    alignment: Alignment = ()


class Task(ABC):
    """Everything the pipeline, the training loop and the server ask of a task, with the common defaults.

    A family subclasses this as a frozen dataclass. Task objects are values: the registry's are shared by
    every caller, so anything that changes a task (options, labels learnt from data, an artifact's state,
    a threshold tuned by an evaluation) returns a new one.
    """

    name: str
    family: str
    description: str
    files: DataFiles
    metric_names: tuple[str, ...]
    default_max_length: ClassVar[int] = 128  # tokens per sequence when the user gives no --max-length
    # The prompt lengths `ptuning sweep` searches by default (log scale). The paper's best lengths are short
    # for simple classification and around 100+ for sequence labelling and QA (Liu et al. 2022, section 4.3).
    sweep_prompt_lengths: ClassVar[tuple[int, int]] = (4, 256)
    uses_lm_head: ClassVar[bool] = False  # the head is the backbone's LM head: load the causal-LM checkpoint
    serve_route: ClassVar[str] = "/v1/predict"  # the server's route for this task's inputs (model cards show it)

    @property
    def main_metric(self) -> str:
        """The metric that picks the best-dev checkpoint."""
        return self.metric_names[0]

    @property
    @abstractmethod
    def data_format(self) -> str:
        """The files and fields the task reads, as ``ptuning tasks`` lists them."""

    # -- new tasks from this one -----------------------------------------------------------
    def with_options(self, **options) -> Task:
        """This task with command-line options (columns, labels, strides) applied."""
        return self

    def with_decoding(self, **options) -> Task:
        """This task with decoding options (``max_new_tokens``, ``num_beams``...): only generating tasks take them."""
        raise PTuningError(f"task {self.name} ({self.family}) does not generate text: use `ptuning predict`")

    def state(self) -> dict:
        """What an artifact records to rebuild this exact task (JSON-serialisable)."""
        return {}

    def from_state(self, state: dict) -> Task:
        """The task an artifact recorded with :meth:`state`."""
        return self

    def with_labels_from(self, records: list[Record]) -> Task:
        """This task with its label set adopted from training records, for tasks that have none fixed."""
        return self

    def calibrated(self, metrics: dict) -> Task:
        """This task with what :meth:`evaluate` tuned on its data (SQuAD 2.0's null threshold) adopted,
        so the best-dev artifact keeps the value its score was measured with."""
        return self

    def for_reporting(self) -> Task:
        """This task scoring a split that is only reported: nothing may be tuned on it (SQuAD 2.0 answers with
        the null threshold the selection split calibrated, instead of tuning one on the reported split)."""
        return self

    # -- data ------------------------------------------------------------------------------
    def load_split(self, data: str | Path, split: str) -> list[Record]:
        """The records of one split of ``data`` (a directory, a file or a hub id)."""
        return self.select_split(load_records(self.files, data, split), split)

    def training_records(self, data: str | Path) -> tuple[list[Record], list[Record]]:
        """``(train, validation)`` records for a training run."""
        return self.load_split(data, "train"), self.load_split(data, "validation")

    def stratum(self, record: Record) -> Hashable | None:
        """The label a few-shot draw stratifies ``record`` by; None: no label to stratify by (passages, sentences)."""
        return None

    def draw_unit(self, record: Record) -> Hashable | None:
        """What ``record`` shares with others (a BoolQ passage, an E2E meaning representation): a K-shot selection
        draw leaves out every unit its training draw took, so no input is seen on both sides. None: itself."""
        return None

    def select_split(self, records: list[Record], split: str) -> list[Record]:
        """The records of ``split`` among those read for it (all of them unless a task splits one file)."""
        return records

    @abstractmethod
    def records_to_examples(self, records: list[Record], *, labelled: bool) -> list[Example]:
        """Examples from records; ``labelled`` makes a missing label an error."""

    @abstractmethod
    def example_from_input(self, value: Any) -> Example:
        """One serving input (JSON value) as an unlabelled example; raises InputError when malformed."""

    def example_input(self) -> Any:
        """A made-up input of the shape :meth:`example_from_input` reads: what model cards show in their usage
        examples (Python, ``curl``). None: the card points to ``ptuning tasks`` instead."""
        return None

    # -- model -----------------------------------------------------------------------------
    @abstractmethod
    def featurize(self, examples: list[Example], tokenizer, max_length: int) -> Featurized:
        """Tokenized features (with ``labels`` for labelled examples); never modifies ``examples``."""

    def collator(self, tokenizer):
        return pad_collate(tokenizer)

    @abstractmethod
    def build_head(self, hidden_size: int, pooling: str) -> nn.Module: ...

    def head_for(self, encoder, pooling: str) -> nn.Module:
        """The head on ``encoder`` (an :class:`~ptuning.encoders.Encoder`): what the pipeline, artifacts and the server
        call. A new head of ``build_head`` by default; generation uses the backbone's own LM head."""
        return self.build_head(encoder.geometry.hidden_size, pooling)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, labels)

    def distillation_rows(
        self, logits: torch.Tensor, labels: torch.Tensor, batch: dict
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The logits as distributions for distillation's KL (``distill.py``), and which of them count.

        ``(rows (N, K), row_mask (N,) or None, class_mask (N, K) or None)``: a row is one distribution over
        ``K`` classes; a False row or class takes no part (padding, ignored sub-tokens). The default is one
        row per feature: a sentence's labels, or a question's choices (padded choices already score -inf).
        """
        return logits, None, None

    def distillation_refusal(self) -> str | None:
        """Why a teacher's soft targets cannot train this task (None: they can)."""
        return None

    # -- outputs ---------------------------------------------------------------------------
    def outputs(
        self, model, features: list[dict], collate, batch_size: int, accelerator=None, desc: str = "predicting"
    ):
        """What :meth:`evaluate` and :meth:`predictions` read for ``features``, in their order.

        By default the head's logits, one row per feature (forward passes, ``batches.predict_logits``); a family
        that decodes returns its generated texts (``generation.py``). ``accelerator``: the training loop's, whose
        processes each hold part of the features.
        """
        from ..batches import predict_logits

        return predict_logits(model, features, collate, batch_size, accelerator, desc=desc)

    def join_units(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """One example's logits, in the layout :meth:`predictions` reads, from the logits of its units.

        The server scores every sequence of an example as a unit: a single-sequence example is one unit
        of ``(labels,)`` logits, a multiple-choice one a ``(1,)`` score per choice.
        """
        return torch.cat(parts).view(1, -1)  # (1, labels) or (1, choices)

    @abstractmethod
    def evaluate(self, logits: torch.Tensor, examples: list[Example], alignment: Alignment) -> dict:
        """Metrics of ``logits`` (one row per feature) against the labelled ``examples``."""

    @abstractmethod
    def predictions(self, logits: torch.Tensor, examples: list[Example], alignment: Alignment) -> list[dict]:
        """One JSON-serialisable prediction per example."""

    def write_predictions(self, rows: list[dict], examples: list[Example], source: Path, target: Path) -> str:
        """The text of the prediction file for ``source`` (default: one JSON object per line)."""
        return "".join(dumps(row, ensure_ascii=False) + "\n" for row in rows)


def stack_windows(parts: list[torch.Tensor]) -> torch.Tensor:
    """Per-token logits of an example's windows, padded to the longest: the ``join_units`` of windowed tasks."""
    longest = max(x.shape[0] for x in parts)
    return torch.stack([nn.functional.pad(x, (0, 0, 0, longest - x.shape[0])) for x in parts])  # (windows, L, k)
