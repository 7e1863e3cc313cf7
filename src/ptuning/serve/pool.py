"""One frozen backbone, many prompts, mixed-task batches.

This is the practical payoff of P-Tuning v2: a task costs a few hundred KB, so
a server keeps one backbone in memory and any number of prompts beside it. A
batch whose rows belong to different tasks runs through the backbone **once**:
each row indexes its own deep prefix in a :class:`PrefixStack` (shorter prompts
are padded with masked slots), then each row gets its own head and
post-processing. Head-only (linear-probe) artifacts join the same forward with
a zero-length prefix. A gated prefix (APT) joins it too: its gate is stacked
beside the prefix, and inside each layer every row is scaled by its own task's
gate (computed from that row's hidden states alone), ungated rows by 1.
Input-level prompts (prompt-tuning, ptv1) and late prompts (LPT) change the
input sequence itself, so their rows are batched per task. Fine-tuned
artifacts carry their own backbone weights and cannot share one: they are refused.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import artifact, backbones
from ..encoders import Encoder, PrefixBatch, PrefixGate, PrefixStack, PromptInputs
from ..errors import InputError, PTuningError
from ..method import PoolBatching
from ..precision import cast_frozen, check_backbone_dtype
from ..tasks import Example, Task
from ..tasks.base import pad_collate

BACKBONE_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class UnknownTask(PTuningError):
    """No prompt of that name is loaded."""


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


class PromptPool:
    """Holds a backbone and loaded prompts; predicts for ``(task name, input)`` rows."""

    def __init__(
        self,
        backbone,
        tokenizer,
        *,
        max_batch: int = 64,
        device: str | torch.device = "cpu",
        backbone_dtype: str = "fp32",
    ) -> None:
        """``backbone_dtype``: how the shared backbone is stored and run (``--backbone-dtype``, ``precision.py``);
        prompts and heads stay float32, and prompts trained in any dtype load (the fingerprint is the weights')."""
        self.device = torch.device(device)
        self.encoder = Encoder(backbone.to(self.device)).eval()
        self.encoder.enable_prefix()
        self.encoder.requires_grad_(False)
        self.tokenizer = tokenizer
        self.fingerprint = backbones.fingerprint(backbone)
        if check_backbone_dtype(backbone_dtype) in ("bf16", "fp16"):  # int8 is chosen when the backbone is loaded
            cast_frozen(backbone, backbone_dtype)
        self.max_batch = max_batch
        self.prompts: dict[str, LoadedPrompt] = {}
        self._stack: tuple[PrefixStack, dict[str, int]] | None = None
        self._lock = threading.RLock()
        self._collate = pad_collate(tokenizer)

    @classmethod
    def from_artifact(cls, path: str | Path, model_name: str | None = None, **kwargs) -> PromptPool:
        """A pool on the backbone recorded in ``path`` (or ``model_name``)."""
        meta = artifact.read_meta(Path(path))
        int8 = check_backbone_dtype(kwargs.get("backbone_dtype", "fp32")) == "int8"
        backbone, tokenizer, _ = backbones.load_recorded_backbone(meta["backbone"]["name"], model_name, int8=int8)
        return cls(backbone, tokenizer, **kwargs)

    # -- loading ------------------------------------------------------------------
    def load(self, path: str | Path, name: str | None = None) -> LoadedPrompt:
        """Load an artifact; memory grows by its prompt and head only."""
        path = Path(path)
        name = name or path.resolve().name
        method_class = artifact.inference_method_class(artifact.read_meta(path))
        batching = method_class.pool_batching
        if batching is PoolBatching.REFUSED:
            raise PTuningError(f"{path}: {method_class.pool_refusal or 'this method cannot share a backbone'}")
        parts = artifact.load_prompt(path, self.encoder, self.fingerprint)
        shared = batching is PoolBatching.SHARED
        with torch.no_grad():
            prefix = parts.method.serving_prefix().to(self.device) if shared else None
            gate = _on(parts.method.serving_gate(), self.device) if shared else None
            prompt = None if shared else _detached(parts.method.to(self.device).prompt_inputs())
        loaded = LoadedPrompt(
            name=name,
            task=parts.task,
            head=parts.head.to(self.device),
            prefix=prefix,
            prompt=prompt,
            token_budget=parts.token_budget(self.encoder),
            meta=parts.meta,
            path=str(path),
            gate=gate,
        )
        with self._lock:
            self.prompts[name] = loaded
            self._stack = None
        return loaded

    def unload(self, name: str) -> None:
        with self._lock:
            if name not in self.prompts:
                raise UnknownTask(f"no task named {name!r} is loaded")
            del self.prompts[name]
            self._stack = None

    def _prefix_stack(self) -> tuple[PrefixStack, dict[str, int]]:
        if self._stack is None:
            deep = [p for p in self.prompts.values() if p.prefix is not None]
            if deep:
                stack = PrefixStack.build([p.prefix for p in deep], [p.gate for p in deep])
                for i, p in enumerate(deep):  # keep one copy: each prompt becomes a view into the stack
                    p.prefix = stack.kv[i, ..., : p.prefix.shape[-2], :]
                self._stack = (stack, {p.name: i for i, p in enumerate(deep)})
            else:
                self._stack = (None, {})
        return self._stack

    # -- prediction ---------------------------------------------------------------
    def get(self, name: str) -> LoadedPrompt:
        try:
            return self.prompts[name]
        except KeyError:
            raise UnknownTask(f"no task named {name!r} is loaded (GET /v1/tasks lists them)") from None

    def to_example(self, name: str, value) -> Example:
        """Validate one input against its task; raises UnknownTask or InputError."""
        return self.get(name).task.example_from_input(value)

    @torch.inference_mode()
    def predict(self, rows: list[tuple[str, Example]]) -> list[dict]:
        """Predictions for ``(task name, example)`` rows, in order.

        Each row becomes one or more *units* (a multiple-choice row has one unit per
        choice, a long sentence or QA context one per window); units of all tasks with
        deep prefixes share backbone forwards; each task joins its units' logits back (``Task.join_units``).
        """
        with self._lock:
            loaded = [self.get(name) for name, _ in rows]
            units: list[tuple[int, dict]] = []  # (row, features of one sequence)
            alignments = []  # per row: how its task reads the joined logits back onto the example
            for i, (p, (_, example)) in enumerate(zip(loaded, rows, strict=True)):
                featurized = p.task.featurize([example], self.tokenizer, p.token_budget)
                alignments.append(featurized.alignment)
                for features in featurized.features:  # windows
                    features = {k: v for k, v in features.items() if k != "labels"}
                    if isinstance(features["input_ids"][0], list):  # choices: one unit each
                        n = len(features["input_ids"])
                        units += [(i, {k: v[c] for k, v in features.items()}) for c in range(n)]
                    else:
                        units.append((i, features))
            scores: list[torch.Tensor | None] = [None] * len(units)
            self._run([u for u, (i, _) in enumerate(units) if loaded[i].prefix is not None], units, loaded, scores)
            by_task: dict[str, list[int]] = defaultdict(list)
            for u, (i, _) in enumerate(units):
                if loaded[i].prompt is not None:
                    by_task[loaded[i].name].append(u)
            for members in by_task.values():
                self._run(members, units, loaded, scores)
            per_row: dict[int, list[torch.Tensor]] = defaultdict(list)
            for u, (i, _) in enumerate(units):
                per_row[i].append(scores[u])
            return [
                p.task.predictions(p.task.join_units(per_row[i]), [example], alignments[i])[0]
                for i, (p, (_, example)) in enumerate(zip(loaded, rows, strict=True))
            ]

    def _run(self, members: list[int], units, loaded, scores) -> None:
        # sort by length so each chunk pads to similar lengths
        members = sorted(members, key=lambda u: len(units[u][1]["input_ids"]))
        for start in range(0, len(members), self.max_batch):
            chunk = members[start : start + self.max_batch]
            feats = [units[u][1] for u in chunk]
            batch = self._collate([{k: f[k] for k in BACKBONE_INPUTS if k in f} for f in feats])
            batch = {k: v.to(self.device) for k, v in batch.items()}
            first = loaded[units[chunk[0]][0]]
            if first.prefix is not None:
                stack, position = self._prefix_stack()
                index = torch.tensor([position[loaded[units[u][0]].name] for u in chunk], device=self.device)
                hidden = self.encoder(**batch, prompt=PromptInputs(prefix=PrefixBatch.from_stack(stack, index)))
            else:
                hidden = self.encoder(**batch, prompt=first.prompt)
            groups: dict[str, list[int]] = defaultdict(list)
            for position_in_chunk, u in enumerate(chunk):
                groups[loaded[units[u][0]].name].append(position_in_chunk)
            length = batch["input_ids"].shape[1]
            for name, positions in groups.items():
                prompt = self.prompts[name]
                index = torch.tensor(positions, device=self.device)
                extra = {
                    key: torch.tensor(
                        [list(feats[j][key]) + [0] * (length - len(feats[j][key])) for j in positions],
                        device=self.device,
                    )
                    for key in feats[positions[0]]
                    if key not in BACKBONE_INPUTS
                }
                logits = prompt.head(hidden[index], batch["attention_mask"][index], **extra).float().cpu()
                for j, row_logits in zip(positions, logits, strict=True):
                    scores[chunk[j]] = row_logits

    def describe(self) -> list[dict]:
        return [
            {
                "name": p.name,
                "task": p.task.name,
                "family": p.task.family,
                "method": p.meta["method"]["method"],
                "prompt_length": p.meta["method"].get("prompt_length", 0),
                "labels": p.meta["task"].get("labels"),
                "bytes": p.nbytes,
                "path": p.path,
            }
            for p in self.prompts.values()
        ]


def _detached(inputs: PromptInputs) -> PromptInputs:
    """A method's inputs as constants: the pool never trains, and must not hold autograd graphs."""
    embeds = None if inputs.embeds is None else inputs.embeds.detach()
    return PromptInputs(prefix=inputs.prefix, embeds=embeds, late=inputs.late)  # a late prompt's generator: eval mode


def _on(gate: PrefixGate | None, device: torch.device) -> PrefixGate | None:
    return gate.to(device).eval() if isinstance(gate, nn.Module) else gate


__all__ = ["InputError", "LoadedPrompt", "PromptPool", "UnknownTask"]
