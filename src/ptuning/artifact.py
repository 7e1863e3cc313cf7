"""Prompt artifacts: a directory with ``prompt.safetensors`` and ``ptuning.json``.

Every artifact directory also gets a generated model card, ``README.md`` (``card.py``).

``prompt.safetensors`` holds what the method folds (:meth:`Method.fold`: the reparameterisation MLP or
prompt encoder already applied, so inference needs none of it) and the head; ``ptuning.json`` says how
to rebuild the model: the method's config, the task and its labels, the backbone's portable name and
weight fingerprint, the library version. A multi-task artifact (format 3) holds one shared prompt and
one head per task (``heads.NAME.*``), its tasks listed under ``tasks``; loading it names one task, and
gives that task's model exactly as a single-task artifact would. A method that trains the backbone also writes
``backbone.safetensors``. Files are written atomically (``io.py``), ``ptuning.json`` last, with the
weights' SHA-256 recorded in it, so a reader never accepts a half-written artifact.

:func:`load_prompt` is the one loader: :func:`load_artifact` (a whole model) and the serving pool (many
prompts on one encoder) both use it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from . import __version__, backbones, card
from .encoders import Encoder
from .errors import PTuningError
from .heads import MultiTaskHead
from .io import atomic_save_tensors, atomic_write_json, sha256_file
from .method import Method, build_method, config_from_dict, method_class
from .model import PTuningModel
from .precision import TORCH_DTYPES, cast_frozen, check_backbone_dtype, dtype_name
from .tasks import Task, get_task

META = "ptuning.json"
WEIGHTS = "prompt.safetensors"
BACKBONE_WEIGHTS = "backbone.safetensors"
FORMAT_VERSION = 3  # 3: multi-task (`tasks`, a head per task). 2: the method's own options only. 1 is still read.
SINGLE_TASK_FORMAT = 2  # what single-task artifacts are written as, so that older versions read them


def save_artifact(
    directory: Path,
    model: PTuningModel,
    *,
    task,
    backbone_name: str,
    backbone_fingerprint: str,
    max_length: int,
    pooling: str,
    extra: dict | None = None,
) -> None:
    """Write the artifact. ``task``: the model's task, or for a :class:`MultiTaskHead` a ``{name: task}`` map."""
    directory = Path(directory)
    tensors = dict(model.method.fold())
    if isinstance(model.head, MultiTaskHead):
        for name, head in model.head.heads.items():
            tensors.update({f"heads.{name}.{k}": v for k, v in head.state_dict().items()})
        version, tasks = FORMAT_VERSION, {"tasks": [{"name": t.name, **t.state()} for t in task.values()]}
    else:
        tensors.update({f"head.{k}": v for k, v in model.head.state_dict().items()})
        version, tasks = SINGLE_TASK_FORMAT, {"task": {"name": task.name, **task.state()}}
    meta = {
        "format_version": version,
        "library_version": __version__,
        "method": model.config.to_dict(),
        **tasks,
        "backbone": {
            "name": backbones.portable_name(backbone_name),
            "fingerprint": backbone_fingerprint,
            "model_type": model.backbone.config.model_type,
            "dtype": dtype_name(model.backbone),  # what it was trained in (--backbone-dtype); loaders default to it
        },
        "max_length": max_length,
        "pooling": pooling,
        **(extra or {}),
    }
    if model.method.trains_backbone:
        meta["backbone_sha256"] = atomic_save_tensors(directory / BACKBONE_WEIGHTS, model.backbone.state_dict())
    meta["weights_sha256"] = atomic_save_tensors(directory / WEIGHTS, tensors)
    atomic_write_json(directory / META, meta)
    try:
        card.write_card(directory, meta)
    except (OSError, KeyError, TypeError, ValueError) as exc:  # the card documents; it must not end a training run
        print(f"warning: {directory}: model card not written ({type(exc).__name__}: {exc}); `ptuning card` retries")


def write_card(directory: str | Path) -> Path:
    """(Re)generate the model card of an artifact from its files (``ptuning card``; older artifacts have none)."""
    directory = Path(directory)
    meta = read_meta(directory)
    summary_path = directory / "metrics.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8-sig")) if summary_path.is_file() else None
    return card.write_card(directory, meta, summary)


def read_meta(directory: Path) -> dict:
    path = Path(directory) / META
    if not path.is_file():
        raise PTuningError(f"{directory}: not a ptuning artifact (no {META}); train one with `ptuning train`")
    try:
        meta = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise PTuningError(f"{path}: unreadable artifact metadata ({exc.msg})") from None
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise PTuningError(f"{directory}: artifact format {meta['format_version']} is newer; upgrade ptuning")
    return meta


def read_verified(directory: str | Path, backbone: nn.Module, fingerprint: str | None = None) -> tuple[dict, dict]:
    """``(meta, tensors)`` of an artifact, after checking it is complete and was trained on ``backbone``.

    Pass ``fingerprint`` when it is already known (a pool computes it once).
    """
    directory = Path(directory)
    meta = read_meta(directory)
    weights = directory / WEIGHTS
    if not weights.is_file() or sha256_file(weights) != meta.get("weights_sha256"):
        raise PTuningError(f"{directory}: {WEIGHTS} is missing or does not match {META}; the artifact is incomplete")
    expected = meta["backbone"]["fingerprint"]
    actual = fingerprint or backbones.fingerprint(backbone)
    if actual != expected:
        raise PTuningError(
            f"{directory}: this prompt was trained on backbone {meta['backbone']['name']!r} "
            f"(fingerprint {expected}), but the given backbone has fingerprint {actual}; "
            "load it onto the backbone it was trained on (--model PATH)"
        )
    return meta, load_file(str(weights))


@dataclass(frozen=True)
class LoadedArtifact:
    """One artifact on an encoder: its method (inference form), head and task, and its metadata."""

    meta: dict
    task: Task
    method: Method
    head: nn.Module

    def token_budget(self, encoder: Encoder) -> int:
        """Input tokens a feature may hold: the one place this is computed for a loaded artifact."""
        return encoder.token_budget(self.meta["max_length"], self.method.input_positions)


def inference_method_class(meta: dict) -> type[Method]:
    """The class the artifact's prompt is rebuilt as (ptv1 folds into prompt-tuning...)."""
    config = config_from_dict(meta["method"])
    return method_class(method_class(config.method).inference_config(config).method)


def task_names(meta: dict) -> list[str]:
    """The tasks an artifact has a head for (one, unless it is multi-task)."""
    return [entry["name"] for entry in meta["tasks"]] if "tasks" in meta else [meta["task"]["name"]]


def select_task(meta: dict, directory: str | Path, task: str | None) -> tuple[dict, str]:
    """``(the task's entry, its heads' tensor prefix)``; ``task`` None picks the only one, a name picks that one."""
    names = task_names(meta)
    if "tasks" not in meta:
        if task is not None and task != names[0]:
            raise PTuningError(f"{directory} was trained on {names[0]}, not {task}")
        return meta["task"], "head."
    if task is None and len(names) > 1:
        raise PTuningError(
            f"{directory} is a multi-task artifact ({', '.join(names)}): choose one of its tasks "
            f"(--task NAME; for serve, {directory}:NAME)"
        )
    task = names[0] if task is None else task
    if task not in names:
        raise PTuningError(f"{directory} holds no head for {task}; its tasks: {', '.join(names)}")
    return meta["tasks"][names.index(task)], f"heads.{task}."


def load_prompt(
    directory: str | Path, encoder: Encoder, fingerprint: str | None = None, task: str | None = None
) -> LoadedArtifact:
    """The artifact's prompt and head on ``encoder`` (which must be the backbone it was trained on).

    ``task`` names one task of a multi-task artifact; the result's ``meta["task"]`` is that task's entry.
    """
    meta, tensors = read_verified(directory, encoder.backbone, fingerprint)
    return assemble_prompt(meta, tensors, encoder, task, directory)


def assemble_prompt(
    meta: dict, tensors: dict[str, torch.Tensor], encoder: Encoder, task: str | None = None, directory="artifact"
) -> LoadedArtifact:
    """The prompt and head from an artifact's verified ``(meta, tensors)``: the part of loading that touches
    ``encoder`` (a server reads and verifies files first, then assembles under its model lock).

    ``task`` names one task of a multi-task artifact (``directory`` is how a refusal names the artifact).
    """
    entry, prefix = select_task(meta, directory, task)
    config = config_from_dict(meta["method"])
    method = build_method(method_class(config.method).inference_config(config), encoder)
    method.load_folded(tensors)
    chosen = get_task(entry["name"]).from_state(entry)
    head = chosen.head_for(encoder, meta["pooling"])
    head.load_state_dict(head_state(tensors, prefix))
    return LoadedArtifact(meta={**meta, "task": entry}, task=chosen, method=method.eval(), head=head.eval())


def recorded_dtype(meta: dict) -> str:
    """The ``--backbone-dtype`` an artifact was trained with (older artifacts: float32)."""
    return meta["backbone"].get("dtype", "fp32")


def load_artifact(
    directory: str | Path,
    *,
    backbone=None,
    tokenizer=None,
    model_name: str | None = None,
    task: str | None = None,
    backbone_dtype: str | None = None,
):
    """Rebuild ``(model, tokenizer, task, meta)`` from an artifact (``task``: one task of a multi-task one).

    ``backbone``/``tokenizer`` may be passed in; otherwise the recorded backbone (or ``model_name``) is
    loaded. A backbone whose fingerprint differs from the recorded one is refused. ``backbone_dtype``: how the
    backbone is stored and run (``precision.py``; default: the dtype the artifact was trained in). The prompt
    and head stay float32 whatever it is.
    """
    directory = Path(directory)
    meta = read_meta(directory)
    entry, _ = select_task(meta, directory, task)  # refuse a task it has no head for before loading a backbone
    dtype = check_backbone_dtype(backbone_dtype or recorded_dtype(meta))
    if backbone is None:
        lm_head = get_task(entry["name"]).uses_lm_head  # a generation task's head is the causal LM's own
        backbone, tokenizer, _ = backbones.load_recorded_backbone(
            meta["backbone"]["name"], model_name, int8=dtype == "int8", lm_head=lm_head
        )
    if inference_method_class(meta).trains_backbone:
        read_verified(directory, backbone)  # the original weights first: the fingerprint is theirs
        backbone.load_state_dict(load_file(str(directory / BACKBONE_WEIGHTS)))
        fingerprint = meta["backbone"]["fingerprint"]
    else:
        fingerprint = None
    encoder = Encoder(backbone)
    loaded = load_prompt(directory, encoder, fingerprint, task)
    model = PTuningModel(encoder, loaded.method, loaded.head).eval()
    if dtype in TORCH_DTYPES and dtype != "fp32":
        encoder.requires_grad_(False)  # inference: a fine-tuned backbone is frozen here too
        cast_frozen(encoder.backbone, dtype)
    return model, tokenizer, loaded.task, loaded.meta


def head_state(tensors: dict[str, torch.Tensor], prefix: str = "head.") -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}


def prompt_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the method folded: every tensor but the heads'."""
    return {k: v for k, v in tensors.items() if not k.startswith(("head.", "heads."))}
