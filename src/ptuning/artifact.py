"""Prompt artifacts: a directory with ``prompt.safetensors`` and ``ptuning.json``.

Every artifact directory also gets a generated model card, ``README.md`` (``card.py``).

``prompt.safetensors`` holds what the method folds (:meth:`Method.fold`: the reparameterisation MLP or
prompt encoder already applied, so inference needs none of it) and the head; ``ptuning.json`` says how
to rebuild the model: the method's config, the task and its labels, the backbone's portable name and
weight fingerprint, the library version. A method that trains the backbone also writes
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
from .io import atomic_save_tensors, atomic_write_json, sha256_file
from .method import Method, build_method, config_from_dict, method_class
from .model import PTuningModel
from .tasks import Task, get_task

META = "ptuning.json"
WEIGHTS = "prompt.safetensors"
BACKBONE_WEIGHTS = "backbone.safetensors"
FORMAT_VERSION = 2  # 2: the method's own options only; backbone names portable. 1 is still read.


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
    directory = Path(directory)
    tensors = dict(model.method.fold())
    tensors.update({f"head.{k}": v for k, v in model.head.state_dict().items()})
    meta = {
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "method": model.config.to_dict(),
        "task": {"name": task.name, **task.state()},
        "backbone": {
            "name": backbones.portable_name(backbone_name),
            "fingerprint": backbone_fingerprint,
            "model_type": model.backbone.config.model_type,
        },
        "max_length": max_length,
        "pooling": pooling,
        **(extra or {}),
    }
    if model.method.trains_backbone:
        meta["backbone_sha256"] = atomic_save_tensors(directory / BACKBONE_WEIGHTS, model.backbone.state_dict())
    meta["weights_sha256"] = atomic_save_tensors(directory / WEIGHTS, tensors)
    atomic_write_json(directory / META, meta)
    card.write_card(directory, meta)


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


def load_prompt(directory: str | Path, encoder: Encoder, fingerprint: str | None = None) -> LoadedArtifact:
    """The artifact's prompt and head on ``encoder`` (which must be the backbone it was trained on)."""
    meta, tensors = read_verified(directory, encoder.backbone, fingerprint)
    return assemble_prompt(meta, tensors, encoder)


def assemble_prompt(meta: dict, tensors: dict[str, torch.Tensor], encoder: Encoder) -> LoadedArtifact:
    """The prompt and head from an artifact's verified ``(meta, tensors)``: the part of loading that touches
    ``encoder`` (a server reads and verifies files first, then assembles under its model lock)."""
    config = config_from_dict(meta["method"])
    method = build_method(method_class(config.method).inference_config(config), encoder)
    method.load_folded(tensors)
    task = get_task(meta["task"]["name"]).from_state(meta["task"])
    head = task.head_for(encoder, meta["pooling"])
    head.load_state_dict(head_state(tensors))
    return LoadedArtifact(meta=meta, task=task, method=method.eval(), head=head.eval())


def load_artifact(directory: str | Path, *, backbone=None, tokenizer=None, model_name: str | None = None):
    """Rebuild ``(model, tokenizer, task, meta)`` from an artifact.

    ``backbone``/``tokenizer`` may be passed in; otherwise the recorded backbone (or ``model_name``) is
    loaded. A backbone whose fingerprint differs from the recorded one is refused.
    """
    directory = Path(directory)
    meta = read_meta(directory)
    if backbone is None:
        lm_head = get_task(meta["task"]["name"]).uses_lm_head
        backbone, tokenizer, _ = backbones.load_recorded_backbone(meta["backbone"]["name"], model_name, lm_head=lm_head)
    if inference_method_class(meta).trains_backbone:
        read_verified(directory, backbone)  # the original weights first: the fingerprint is theirs
        backbone.load_state_dict(load_file(str(directory / BACKBONE_WEIGHTS)))
        fingerprint = meta["backbone"]["fingerprint"]
    else:
        fingerprint = None
    encoder = Encoder(backbone)
    loaded = load_prompt(directory, encoder, fingerprint)
    model = PTuningModel(encoder, loaded.method, loaded.head).eval()
    return model, tokenizer, loaded.task, loaded.meta


def head_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}
