"""One frozen backbone, many prompts, mixed-task batches.

This is the practical payoff of P-Tuning v2: a task costs a few hundred KB, so
a server keeps one backbone in memory and any number of prompts beside it. A
batch whose rows belong to different tasks runs through the backbone **once**:
each row indexes its own deep prefix (shorter prompts are padded with masked
slots), then each row gets its own head and post-processing. Head-only
(linear-probe) artifacts join the same forward with a zero-length prefix. A
gated prefix (APT) joins it too: inside each layer every row is scaled by its
own task's gate (computed from that row's hidden states alone), ungated rows by 1.
Input-level prompts (prompt-tuning, ptv1) and late prompts (LPT) change the
input sequence itself, so their rows are batched per task; so are ptv2 prefixes
that shift positions or drop token types (adapters imported from PEFT). Fine-tuned
artifacts carry their own backbone weights and cannot share one: they are refused.

Padding is planned, not fixed: rows are cut into sub-batches by prompt and input length when the
measured cost model (``plan.py``) says the padding would cost more than another forward. Each prompt is
kept once, in its own tensor: loading or dropping one never rebuilds anything, and the model lock is held
only to insert it (files are read and verified before), so a load at run time waits for at most the batch
in flight and pauses none.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from .. import artifact, backbones
from ..encoders import Encoder, PrefixGate, PromptInputs
from ..errors import InputError, PTuningError
from ..method import PoolBatching
from ..tasks import Example, Task
from ..tasks.base import pad_collate
from .forward import Sequence, run_chunk, synthetic_forward
from .plan import CostModel, Unit, plan


class UnknownTask(PTuningError):
    """No prompt of that name is loaded."""


class DuplicateTask(PTuningError):
    """A prompt of that name is already loaded."""


class LoadLimitExceeded(PTuningError):
    """A prompt longer, or a weights file larger, than the pool's :class:`LoadLimits`."""


@dataclass(frozen=True)
class LoadLimits:
    """What the pool refuses to load: a prompt longer than ``max_prompt_length`` slots (every row sharing a
    forward with it would pay for them) or a weights file over ``max_artifact_bytes``."""

    max_prompt_length: int = 512
    max_artifact_bytes: int = 64 * 2**20

    def __post_init__(self) -> None:
        if self.max_prompt_length < 1 or self.max_artifact_bytes < 1:
            raise PTuningError("load limits must be positive: --max-prompt-length >= 1, --max-artifact-mb > 0")


@dataclass
class LoadedPrompt:
    name: str
    task: Task
    head: nn.Module
    prefix: torch.Tensor | None  # (layers, 2, kv_heads, P, head_dim) for shared forwards; zero-length for head-only
    prompt: PromptInputs | None  # the method's own inputs, for prompts batched per task
    token_budget: int
    meta: dict
    path: str
    gate: PrefixGate | None = None  # the prefix's gate (APT), applied to this prompt's rows of a shared forward

    @property
    def prompt_length(self) -> int:
        """Slots a forward is padded to for this prompt's rows: prefix slots, or input positions it adds."""
        if self.prefix is not None:
            return self.prefix.shape[-2]
        late = self.prompt.late if self.prompt is not None else None
        return self.prompt.input_positions + (late.length if late is not None else 0)

    @property
    def nbytes(self) -> int:
        tensors = [self.prefix] if self.prefix is not None else []
        if self.prompt is not None and self.prompt.embeds is not None:
            tensors.append(self.prompt.embeds)
        late = None if self.prompt is None else self.prompt.late
        for module in (self.gate, None if late is None else late.generator):  # APT's gates, LPT's generator
            if isinstance(module, nn.Module):
                tensors += list(module.state_dict().values())
        tensors += list(self.head.state_dict().values())
        return sum(t.numel() * t.element_size() for t in tensors)


@dataclass(frozen=True)
class PreparedRow:
    """One input, validated and tokenized against the prompt it was accepted for (before the model thread)."""

    prompt: LoadedPrompt
    example: Example
    features: tuple[dict, ...]  # one sequence each: a choice of a multiple-choice input, or a window
    alignment: object


class PromptPool:
    """Holds a backbone and loaded prompts; predicts for ``(task name, input)`` rows."""

    def __init__(
        self,
        backbone,
        tokenizer,
        *,
        max_batch: int = 64,
        device: str | torch.device = "cpu",
        limits: LoadLimits | None = None,
        cost_model: CostModel | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.encoder = Encoder(backbone.to(self.device)).eval()
        self.encoder.enable_prefix()
        self.encoder.requires_grad_(False)
        self.tokenizer = tokenizer
        self.fingerprint = backbones.fingerprint(backbone)
        self.max_batch = max_batch
        self.limits = limits or LoadLimits()
        self.cost_model = cost_model  # measured on first need (calibrate()), unless given
        self.prompts: dict[str, LoadedPrompt] = {}
        self._lock = threading.RLock()  # held by a forward, and briefly by a load or unload
        self._collate = pad_collate(tokenizer)

    @classmethod
    def from_artifact(cls, path: str | Path, model_name: str | None = None, **kwargs) -> PromptPool:
        """A pool on the backbone recorded in ``path`` (or ``model_name``)."""
        meta = artifact.read_meta(Path(path))
        backbone, tokenizer, _ = backbones.load_recorded_backbone(meta["backbone"]["name"], model_name)
        return cls(backbone, tokenizer, **kwargs)

    def calibrate(self, repeats: int = 3) -> CostModel:
        """Measure the forward-time model the planner cuts batches by (about a second for MiniLM on a CPU)."""
        with self._lock:
            positions = getattr(self.encoder.config, "max_position_embeddings", None)
            forward = synthetic_forward(self.encoder, self._collate, self.device)
            self.cost_model = CostModel.calibrate(forward, max_length=positions, repeats=repeats)
        return self.cost_model

    # -- loading ------------------------------------------------------------------
    def load(self, path: str | Path, name: str | None = None) -> LoadedPrompt:
        """Load an artifact; memory grows by its prompt and head only. Refuses duplicates and over-limit prompts."""
        path = Path(path)
        name = name or path.resolve().name
        self._refuse_duplicate(name)
        meta = artifact.read_meta(path)
        method_class = artifact.inference_method_class(meta)
        batching = method_class.pool_batching
        if batching is PoolBatching.REFUSED:
            raise PTuningError(f"{path}: {method_class.pool_refusal or 'this method cannot share a backbone'}")
        self._check_limits(path, meta.get("method", {}).get("prompt_length", 0))
        meta, tensors = artifact.read_verified(path, self.encoder.backbone, self.fingerprint)  # outside the lock
        with self._lock, torch.no_grad():  # building the method may attach hooks to the backbone: not mid-forward
            parts = artifact.assemble_prompt(meta, tensors, self.encoder)
            shared = parts.method.pool_batching is PoolBatching.SHARED  # the instance's: its config may narrow it
            loaded = LoadedPrompt(
                name=name,
                task=parts.task,
                head=parts.head.to(self.device),
                prefix=parts.method.serving_prefix().to(self.device) if shared else None,
                prompt=None if shared else _detached(parts.method.to(self.device).prompt_inputs()),
                token_budget=parts.token_budget(self.encoder),
                meta=parts.meta,
                path=str(path),
                gate=_on(parts.method.serving_gate(), self.device) if shared else None,
            )
            self._check_limits(path, loaded.prompt_length)  # the tensors, not only what the metadata says
            self._refuse_duplicate(name)
            self.prompts[name] = loaded
        return loaded

    def _refuse_duplicate(self, name: str) -> None:
        if name in self.prompts:
            raise DuplicateTask(
                f"a task named {name!r} is already loaded (from {self.prompts[name].path}); "
                "unload it first or give this one another name (NAME=PATH)"
            )

    def _check_limits(self, path: Path, prompt_length) -> None:
        weights = path / artifact.WEIGHTS
        size = weights.stat().st_size if weights.is_file() else 0
        if size > self.limits.max_artifact_bytes:
            raise LoadLimitExceeded(
                f"{path}: {artifact.WEIGHTS} is {size:,} bytes, over the limit of {self.limits.max_artifact_bytes:,}; "
                "raise --max-artifact-mb to serve it"
            )
        if not isinstance(prompt_length, int) or prompt_length > self.limits.max_prompt_length:
            raise LoadLimitExceeded(
                f"{path}: prompt length {prompt_length!r} is over the limit of {self.limits.max_prompt_length} "
                "(every row batched with it would pay for its slots); raise --max-prompt-length to serve it"
            )

    def unload(self, name: str) -> None:
        with self._lock:
            if name not in self.prompts:
                raise UnknownTask(f"no task named {name!r} is loaded")
            del self.prompts[name]

    # -- prediction ---------------------------------------------------------------
    def get(self, name: str) -> LoadedPrompt:
        try:
            return self.prompts[name]
        except KeyError:
            raise UnknownTask(f"no task named {name[:100]!r} is loaded (GET /v1/tasks lists them)") from None

    def to_example(self, name: str, value) -> Example:
        """Validate one input against its task; raises UnknownTask or InputError."""
        return self.get(name).task.example_from_input(value)

    def prepare(self, name: str, value, max_sequences: int | None = None) -> PreparedRow:
        """Validate and tokenize one input; raises UnknownTask, or InputError for any input its task cannot read."""
        prompt = self.get(name)
        try:
            example = prompt.task.example_from_input(value)
            return self._featurize(prompt, example, max_sequences)
        except InputError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:  # a shape the task cannot read
            raise InputError(f"task {prompt.task.name} cannot read this input ({type(exc).__name__})") from None

    def _featurize(self, prompt: LoadedPrompt, example: Example, max_sequences: int | None = None) -> PreparedRow:
        featurized = prompt.task.featurize([example], self.tokenizer, prompt.token_budget)
        sequences: list[dict] = []
        for features in featurized.features:  # windows
            features = {k: v for k, v in features.items() if k != "labels"}
            if isinstance(features["input_ids"][0], list):  # choices: one sequence each
                sequences += [{k: v[c] for k, v in features.items()} for c in range(len(features["input_ids"]))]
            else:
                sequences.append(features)
        if max_sequences is not None and len(sequences) > max_sequences:
            raise InputError(f"the input makes {len(sequences)} sequences (choices x windows); at most {max_sequences}")
        return PreparedRow(prompt, example, tuple(sequences), featurized.alignment)

    @torch.inference_mode()
    def predict(self, rows: list[tuple[str, Example]]) -> list[dict]:
        """Predictions for ``(task name, example)`` rows, in order (see :meth:`predict_prepared`)."""
        return self.predict_prepared([self._featurize(self.get(name), example) for name, example in rows])

    @torch.inference_mode()
    def predict_prepared(self, rows: list[PreparedRow]) -> list[dict]:
        """Predictions for prepared rows, in order.

        Each row is one or more sequences; sequences of all tasks with deep prefixes may share backbone
        forwards, cut into sub-batches by :func:`plan`; each task joins its sequences' logits back
        (``Task.join_units``). A row is predicted with the prompt it was prepared for, even if that prompt
        was unloaded since.
        """
        sequences = [Sequence(i, f, row.prompt) for i, row in enumerate(rows) for f in row.features]
        groups: dict[int, list[int]] = defaultdict(list)  # 0: shared forwards; else one group per per-task prompt
        for s, sequence in enumerate(sequences):
            groups[0 if sequence.prompt.prefix is not None else id(sequence.prompt)].append(s)
        scores: list[torch.Tensor | None] = [None] * len(sequences)
        with self._lock:
            cost = self.cost_model or self.calibrate()
            for members in groups.values():
                for batch in self.plan([sequences[s] for s in members], cost):
                    chunk = [members[b] for b in batch]
                    logits = run_chunk(self.encoder, self._collate, [sequences[s] for s in chunk], self.device)
                    for s, row_logits in zip(chunk, logits, strict=True):
                        scores[s] = row_logits
        per_row: dict[int, list[torch.Tensor]] = defaultdict(list)
        for sequence, logits in zip(sequences, scores, strict=True):
            per_row[sequence.row].append(logits)
        return [
            row.prompt.task.predictions(row.prompt.task.join_units(per_row[i]), [row.example], row.alignment)[0]
            for i, row in enumerate(rows)
        ]

    def plan(self, sequences: list[Sequence], cost: CostModel | None = None) -> list[list[int]]:
        """Sub-batches (indices into ``sequences``) that one group of sequences runs as."""
        units = [
            Unit(s.length, s.prompt.prompt_length) if s.prompt.prefix is not None else Unit(s.length, 0)
            for s in sequences
        ]
        return plan(units, cost or self.cost_model or self.calibrate(), self.max_batch)

    def describe(self, with_paths: bool = True) -> list[dict]:
        return [
            {
                "name": p.name,
                "task": p.task.name,
                "family": p.task.family,
                "method": p.meta["method"]["method"],
                "prompt_length": p.meta["method"].get("prompt_length", 0),
                "labels": p.meta["task"].get("labels"),
                "bytes": p.nbytes,
                **({"path": p.path} if with_paths else {}),
            }
            for p in list(self.prompts.values())
        ]


def _detached(inputs: PromptInputs) -> PromptInputs:
    """A method's inputs as constants: the pool never trains, and must not hold autograd graphs."""
    embeds = None if inputs.embeds is None else inputs.embeds.detach()
    return replace(inputs, embeds=embeds)  # a late prompt's generator: eval mode


def _on(gate: PrefixGate | None, device: torch.device) -> PrefixGate | None:
    return gate.to(device).eval() if isinstance(gate, nn.Module) else gate


__all__ = [
    "DuplicateTask",
    "InputError",
    "LoadLimitExceeded",
    "LoadLimits",
    "LoadedPrompt",
    "PreparedRow",
    "PromptPool",
    "UnknownTask",
]
