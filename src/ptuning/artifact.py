"""Prompt artifacts: a directory with ``prompt.safetensors`` and ``ptuning.json``.

``prompt.safetensors`` holds the folded prompt (the reparameterisation MLP or
prompt encoder already applied, so inference needs none of it) and the head;
``ptuning.json`` says how to rebuild the model: method, prompt length, task and
its labels, backbone name and weight fingerprint, library version. Fine-tuned
models also carry ``backbone.safetensors``. Files are written to a temporary
name and renamed into place, ``ptuning.json`` last, with the weights' SHA-256
recorded in it, so a reader never accepts a half-written artifact.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from . import __version__, backbones
from .errors import PTuningError
from .model import MethodConfig, PTuningModel
from .tasks import get_task

META = "ptuning.json"
WEIGHTS = "prompt.safetensors"
BACKBONE_WEIGHTS = "backbone.safetensors"
FORMAT_VERSION = 1


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Results and reports too: a run killed mid-write must not leave half a file behind."""
    atomic_write_bytes(Path(path), text.encode())


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> str:
    """Save safetensors atomically; return the file's SHA-256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        digest = sha256_file(Path(tmp))
        os.replace(tmp, path)
        return digest
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    tensors = dict(model.folded_prompt())
    tensors.update({f"head.{k}": v for k, v in model.head.state_dict().items()})
    meta = {
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "method": model.config.to_dict(),
        "task": {"name": task.name, **task.state()},
        "backbone": {
            "name": backbone_name,
            "fingerprint": backbone_fingerprint,
            "model_type": model.backbone.config.model_type,
        },
        "max_length": max_length,
        "pooling": pooling,
        **(extra or {}),
    }
    if model.config.method == "finetune":
        meta["backbone_sha256"] = atomic_save_tensors(directory / BACKBONE_WEIGHTS, model.backbone.state_dict())
    meta["weights_sha256"] = atomic_save_tensors(directory / WEIGHTS, tensors)
    atomic_write_json(directory / META, meta)


def read_meta(directory: Path) -> dict:
    path = Path(directory) / META
    if not path.is_file():
        raise PTuningError(f"{directory}: not a ptuning artifact (no {META}); train one with `ptuning train`")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PTuningError(f"{path}: unreadable artifact metadata ({exc.msg})") from None
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise PTuningError(f"{directory}: artifact format {meta['format_version']} is newer; upgrade ptuning")
    return meta


def read_verified(directory: str | Path, backbone, fingerprint: str | None = None) -> tuple[dict, dict]:
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
            "load it onto the backbone it was trained on"
        )
    return meta, load_file(str(weights))


def inference_config(meta: dict) -> MethodConfig:
    """The method as inference sees it: reparam folded away, a ptv1 encoder folded into a soft prompt."""
    config = MethodConfig(**{**meta["method"], "reparam": False, "prefix_dropout": 0.0})
    if config.method == "ptv1":
        config = MethodConfig(**{**config.to_dict(), "method": "prompt-tuning"})
    return config


def load_artifact(directory: str | Path, *, backbone=None, tokenizer=None, model_name: str | None = None):
    """Rebuild ``(model, tokenizer, task, meta)`` from an artifact.

    ``backbone``/``tokenizer`` may be passed in; otherwise the recorded backbone
    (or ``model_name``) is loaded. A backbone whose fingerprint differs from the
    recorded one is refused.
    """
    directory = Path(directory)
    meta = read_meta(directory)
    if backbone is None:
        backbone, tokenizer, _ = backbones.load_backbone(model_name or meta["backbone"]["name"])
    meta, tensors = read_verified(directory, backbone)
    if meta["method"]["method"] == "finetune":
        backbone.load_state_dict(load_file(str(directory / BACKBONE_WEIGHTS)))
    task = get_task(meta["task"]["name"]).from_state(meta["task"])
    head = task.build_head(backbone.config.hidden_size, meta["pooling"])
    model = PTuningModel(backbone, inference_config(meta), head)
    model.load_folded_prompt(tensors)
    model.head.load_state_dict(head_state(tensors))
    model.eval()
    return model, tokenizer, task, meta


def head_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}
