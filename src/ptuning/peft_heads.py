"""The task head of an imported PEFT adapter: its saved classifier, a user's file, or our own export's.

PEFT keeps no head of its own. A sequence- or token-classification adapter saves the base model's classifier
(``modules_to_save``: ``classifier``, ``score``); a feature-extraction adapter saves none, so whoever trained it
kept their classifier elsewhere and says where (``--head FILE``). Each source becomes a state dict in the
layout of our task head (``classifier.*``, and ``dense.*`` for :data:`~ptuning.heads.DENSE_POOLING`) and is
loaded strictly, so a classifier that does not fit the task (another label count, another width) is a
one-line error, never a silently reshaped head.

Only layouts this library computes exactly are rebuilt:

* BERT-style ``classifier`` ``(N, H)`` on the backbone's pooler (first token, dense, tanh): the pooler's
  weights come from the backbone, whose own forward applied them;
* RoBERTa-style ``classifier.dense`` + ``classifier.out_proj`` (first token, dense, tanh, linear);
* decoder ``score`` ``(N, H)``, no bias, at the last real token;
* token classification: ``classifier`` ``(N, H)`` on every token.

Anything else (DistilBERT's ReLU pre-classifier, ELECTRA's GELU head...) asks for ``--head FILE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from .errors import PTuningError
from .heads import DENSE_POOLING
from .tasks import Task

HEAD_FAMILIES = ("classification", "tagging")
TANH_HEAD_TYPES = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text")  # dense, tanh, out_proj


@dataclass(frozen=True)
class HeadSource:
    """A head in our layout: ``state`` for ``task.build_head(H, pooling)``; ``origin`` says where it came from."""

    state: dict[str, torch.Tensor]
    pooling: str
    origin: str


def check_family(task: Task) -> None:
    if task.family not in HEAD_FAMILIES or getattr(task, "crf", False):
        kind = "CRF tagging" if getattr(task, "crf", False) else task.family
        raise PTuningError(
            f"import-peft makes classification and tagging artifacts (a linear head); {task.name} is a {kind} task"
        )


def from_file(path: Path, task: Task, pooling: str) -> HeadSource:
    """``--head FILE``: a safetensors file with a linear classifier's ``weight`` ``(N, H)`` (and ``bias`` ``(N,)``)."""
    if not Path(path).is_file():
        raise PTuningError(f"--head {path}: no such file; give a safetensors file with `weight` (and `bias`)")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise PTuningError(f"--head {path}: not a readable safetensors file ({exc})") from None
    if "weight" not in tensors or set(tensors) - {"weight", "bias"}:
        raise PTuningError(
            f"--head {path} holds {', '.join(sorted(tensors)) or 'nothing'}; give exactly a linear classifier's "
            "`weight` (labels x hidden) and optional `bias`"
        )
    return _linear(tensors["weight"], tensors.get("bias"), task, pooling, f"--head {Path(path).name}")


def from_modules(
    saved: dict[str, torch.Tensor], task: Task, backbone: nn.Module, pooling: str, what: str
) -> HeadSource:
    """The classifier the adapter saved (``modules_to_save``), in one of the layouts the module docstring lists.

    ``saved`` is keyed by module path (``classifier.weight``); ``pooling`` applies to a token head only when
    the layout fixes none; ``what`` names the adapter in errors.
    """
    keys = set(saved)
    if not keys:
        raise PTuningError(
            f"{what} holds no classifier (its head was trained outside PEFT); pass --head FILE.safetensors with "
            "that classifier's `weight` and `bias` (applied to --pooling)"
        )
    if keys == {"classifier.weight", "classifier.bias"} and task.family == "tagging":
        return _linear(saved["classifier.weight"], saved["classifier.bias"], task, pooling, "the adapter's classifier")
    if keys == {"classifier.weight", "classifier.bias"}:
        pooler = getattr(getattr(backbone, "pooler", None), "dense", None)
        if not isinstance(pooler, nn.Linear):
            raise PTuningError(f"{what}: its classifier sat on a pooler this backbone lacks; pass --head FILE")
        state = {"dense.weight": pooler.weight, "dense.bias": pooler.bias}
        state.update({"classifier.weight": saved["classifier.weight"], "classifier.bias": saved["classifier.bias"]})
        return _checked(state, DENSE_POOLING, task, "the adapter's classifier on the backbone's pooler")
    dense = {f"classifier.{layer}.{kind}" for layer in ("dense", "out_proj") for kind in ("weight", "bias")}
    if keys == dense and backbone.config.model_type in TANH_HEAD_TYPES:
        state = {k.replace("classifier.out_proj.", "classifier.").replace("classifier.dense.", "dense."): v
                 for k, v in saved.items()}  # fmt: skip
        return _checked(state, DENSE_POOLING, task, "the adapter's classification head (dense, tanh, out_proj)")
    if keys == {"score.weight"}:
        weight = saved["score.weight"]
        return _linear(weight, torch.zeros(weight.shape[0]), task, "last", "the adapter's score layer")
    found = ", ".join(sorted(keys)) or "no classifier"
    raise PTuningError(
        f"{what} saved {found}, not a head layout ptuning rebuilds exactly; pass --head FILE.safetensors "
        "(a linear classifier's `weight` and `bias`, applied to --pooling)"
    )


def _linear(weight: torch.Tensor, bias: torch.Tensor | None, task: Task, pooling: str, origin: str) -> HeadSource:
    bias = torch.zeros(weight.shape[0]) if bias is None else bias
    return _checked({"classifier.weight": weight, "classifier.bias": bias}, pooling, task, origin)


def _checked(state: dict[str, torch.Tensor], pooling: str, task: Task, origin: str) -> HeadSource:
    """``state`` as float32, refused in one line when it cannot be the task's head."""
    state = {k: v.detach().float().clone() for k, v in state.items()}
    weight = state["classifier.weight"]
    if weight.dim() != 2 or state["classifier.bias"].shape != weight.shape[:1]:
        raise PTuningError(f"{origin}: weight {tuple(weight.shape)} and bias do not make a linear classifier")
    if not all(bool(v.isfinite().all()) for v in state.values()):
        raise PTuningError(f"{origin} holds NaN or infinite values; the adapter is broken")
    return HeadSource(state=state, pooling=pooling, origin=origin)


def build(source: HeadSource, task: Task, hidden_size: int) -> nn.Module:
    """The task's head with ``source``'s weights, or one line saying why they do not fit."""
    outputs = source.state["classifier.weight"].shape
    expected = 1 if getattr(task, "regression", False) else len(task.labels or ())
    if outputs[0] != expected:
        raise PTuningError(
            f"{source.origin} has {outputs[0]} outputs but task {task.name} has {expected} labels; "
            "give --labels with one name per output, in order (or the task those outputs belong to)"
        )
    if outputs[1] != hidden_size:
        raise PTuningError(
            f"{source.origin} reads {outputs[1]}-wide hidden states but the backbone's are {hidden_size}: "
            "it belongs to another backbone"
        )
    head = task.build_head(hidden_size, source.pooling)
    try:
        head.load_state_dict(source.state)
    except RuntimeError as exc:  # a dense layer of another width...
        first = str(exc).strip().splitlines()[-1].strip()
        raise PTuningError(f"{source.origin} does not fit task {task.name}'s head: {first}") from None
    return head.eval()
