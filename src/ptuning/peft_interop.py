"""PEFT prefix-tuning adapters in and out: ``ptuning import-peft`` and ``ptuning export-peft``.

A PEFT prefix-tuning adapter is a directory holding ``adapter_config.json`` and ``adapter_model.safetensors``.
Its ``prompt_embeddings`` table ``(P, layers * 2 * kv_heads * head_dim)`` is laid out as ptv2's prefix table
(``benchmarks/peft_parity.py`` feeds one to the other), so both directions are reshapes and exact. PEFT saves
the table already through its projection MLP (``prefix_projection``); a state dict saved with the MLP itself
(``embedding`` + ``transform``) is folded here the same way, once.

Two of PEFT's conventions differ from ptv2's defaults, and an imported artifact records both in its ptv2 config
so that it gives PEFT's outputs: PEFT's cache numbers the real tokens from ``P`` (``shift_positions``), and its
prompt-learning models drop ``token_type_ids`` (``drop_token_types``). Either can be turned off on import.

The backbone is checked against the adapter's geometry (layers, key/value heads, widths) and, for an adapter
``export-peft`` wrote, against the fingerprint of the weights it was trained on. The artifact records the
fingerprint of the backbone it was imported onto, as ``train`` does, so every later load is checked too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from . import __version__, artifact, backbones, peft_heads
from .backbones import Geometry
from .encoders import Encoder
from .errors import PTuningError
from .io import atomic_save_tensors, atomic_write_json, sha256_file
from .method import config_from_dict
from .method.prefix import DeepPrompt, Ptv2Config
from .model import PTuningModel
from .tasks import Task, get_task

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
TABLE = "prompt_embeddings"
HEAD_WEIGHTS = "ptuning_head.safetensors"  # export-peft's head: PEFT's prefix models keep none
HEAD_META = "ptuning_head.json"
PREFIX_TUNING = "PREFIX_TUNING"
GEOMETRY_FIELDS = ("num_virtual_tokens", "num_layers", "num_attention_heads", "token_dim")


@dataclass(frozen=True)
class PeftAdapter:
    """What an adapter directory holds, read and checked."""

    path: Path
    config: dict
    table: torch.Tensor  # (P, layers * 2 * token_dim), float32, projection already applied
    modules: dict[str, torch.Tensor]  # saved modules (modules_to_save) by module path: "classifier.weight"
    exported: dict | None = None  # HEAD_META of an adapter export-peft wrote
    exported_head: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def prompt_length(self) -> int:
        return self.table.shape[0]


def read_adapter(directory: str | Path) -> PeftAdapter:
    """Read a PEFT prefix-tuning adapter, or say in one line why it is not one."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PTuningError(f"{directory}: no such adapter directory")
    config = _read_config(directory)
    weights = directory / ADAPTER_WEIGHTS
    if not weights.is_file():
        pickled = (directory / "adapter_model.bin").is_file()
        hint = ": it has adapter_model.bin, a pickle ptuning never loads; re-save it with safe_serialization=True"
        raise PTuningError(f"{directory}: no {ADAPTER_WEIGHTS}" + (hint if pickled else ""))
    tensors = _load_tensors(weights)
    table = _prompt_table(tensors, config, directory)
    modules = {}
    for key, value in tensors.items():
        path = _module_path(key)
        if path is not None:
            modules[path] = value
    exported, head = _read_exported(directory)
    return PeftAdapter(directory, config, table, modules, exported, head)


def _read_config(directory: Path) -> dict:
    path = directory / ADAPTER_CONFIG
    if not path.is_file():
        raise PTuningError(f"{directory}: not a PEFT adapter (no {ADAPTER_CONFIG})")
    try:
        config = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PTuningError(f"{path}: unreadable adapter config ({exc})") from None
    kind = config.get("peft_type") if isinstance(config, dict) else None
    if kind != PREFIX_TUNING:
        raise PTuningError(f"{directory}: a {kind or 'unknown'} adapter; import-peft reads prefix-tuning adapters only")
    if config.get("num_transformer_submodules", 1) != 1:
        raise PTuningError(f"{directory}: an encoder-decoder adapter (two prefixes per layer); not supported")
    bad = [f for f in GEOMETRY_FIELDS if isinstance(config.get(f), bool) or not isinstance(config.get(f), int)]
    if bad or any(config[f] <= 0 for f in GEOMETRY_FIELDS):
        raise PTuningError(f"{path}: {', '.join(bad or GEOMETRY_FIELDS)} must be positive integers")
    return config


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise PTuningError(f"{path}: not a readable safetensors file ({exc})") from None


def _prompt_table(tensors: dict[str, torch.Tensor], config: dict, directory: Path) -> torch.Tensor:
    """The prefix table ``(P, layers * 2 * token_dim)``: PEFT's saved one, or folded from a saved prompt encoder."""
    P, width = config["num_virtual_tokens"], config["num_layers"] * 2 * config["token_dim"]
    if TABLE in tensors:
        table = tensors[TABLE]
    else:
        stems = [k.removesuffix("embedding.weight") for k in tensors if k.endswith("embedding.weight")]
        stems = [stem for stem in stems if stem == "" or stem.endswith(".") and "prompt_encoder" in stem]
        if len(stems) != 1:
            raise PTuningError(f"{directory}: no {TABLE} (nor one prompt encoder) in {ADAPTER_WEIGHTS}")
        table = _fold_projection(tensors, stems[0], directory)
    if tuple(table.shape) != (P, width):
        raise PTuningError(
            f"{directory}: the prefix table is {tuple(table.shape)} but {ADAPTER_CONFIG} says ({P}, {width}) "
            "(num_virtual_tokens, num_layers * 2 * token_dim)"
        )
    table = table.detach().float()
    if not bool(table.isfinite().all()):
        raise PTuningError(f"{directory}: the prefix holds NaN or infinite values; the adapter is broken")
    return table


@torch.no_grad()
def _fold_projection(tensors: dict[str, torch.Tensor], stem: str, directory: Path) -> torch.Tensor:
    """PEFT's prefix encoder applied once: ``transform`` (Linear, Tanh, Linear) on the ``embedding``, if saved."""
    embedding = tensors[stem + "embedding.weight"].float()  # (P, E)
    names = [f"{stem}transform.{i}.{kind}" for i in (0, 2) for kind in ("weight", "bias")]
    present = [n in tensors for n in names]
    if not any(present):
        return embedding  # no projection: the embedding is the table
    if not all(present):
        raise PTuningError(f"{directory}: the prefix projection is incomplete (needs {', '.join(names)})")
    w0, b0, w2, b2 = (tensors[n].float() for n in names)
    return torch.tanh(embedding @ w0.T + b0) @ w2.T + b2  # (P, layers * 2 * token_dim)


def _module_path(key: str) -> str | None:
    """A saved module's parameter as its path in the base model (``classifier.weight``); None for the prompt."""
    if key == TABLE or "prompt_encoder" in key or ".original_module." in key:
        return None
    key = re.sub(r"\.modules_to_save\.[^.]+\.", ".", key)  # ModulesToSaveWrapper's copy
    return key.removeprefix("base_model.").removeprefix("model.")


def _read_exported(directory: Path) -> tuple[dict | None, dict[str, torch.Tensor]]:
    meta_path, weights = directory / HEAD_META, directory / HEAD_WEIGHTS
    if not meta_path.is_file():
        return None, {}
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PTuningError(f"{meta_path}: unreadable ({exc})") from None
    if not weights.is_file() or sha256_file(weights) != meta.get("head_sha256"):
        raise PTuningError(f"{directory}: {HEAD_WEIGHTS} is missing or does not match {HEAD_META}")
    return meta, _load_tensors(weights)


# -- layout ---------------------------------------------------------------------------------------------------
def check_geometry(adapter: PeftAdapter, geometry: Geometry) -> None:
    """Refuse an adapter made for a backbone of another shape, in one line naming both shapes."""
    c = adapter.config
    theirs = (c["num_layers"], c["num_attention_heads"], c["token_dim"])
    ours = (geometry.num_layers, geometry.num_kv_heads, geometry.num_kv_heads * geometry.head_dim)
    if theirs != ours:
        raise PTuningError(
            f"{adapter.path} was made for {theirs[0]} layers x {theirs[1]} key/value heads (width {theirs[2]}), "
            f"the backbone has {ours[0]} x {ours[1]} (width {ours[2]}): pass --model PATH to the backbone it was "
            "trained on"
        )


def table_to_prefix(table: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """PEFT's table ``(P, layers * 2 * kv * hd)`` as ptv2's folded prefix ``(layers, 2, kv, P, hd)``."""
    g = geometry
    P = table.shape[0]
    kv = table.reshape(P, g.num_layers, 2, g.num_kv_heads, g.head_dim)  # (P, layers, 2, kv, hd)
    return kv.permute(1, 2, 3, 0, 4).contiguous()  # (layers, 2, kv, P, hd)


def prefix_to_table(prefix: torch.Tensor) -> torch.Tensor:
    """ptv2's folded prefix ``(layers, 2, kv, P, hd)`` as PEFT's table ``(P, layers * 2 * kv * hd)``."""
    return prefix.permute(3, 0, 1, 2, 4).reshape(prefix.shape[3], -1).contiguous()  # (P, layers*2*kv*hd)


# -- import ---------------------------------------------------------------------------------------------------
@dataclass
class ImportRequest:
    """``ptuning import-peft``'s settings. None means: the exported adapter's own, else the default."""

    adapter: Path
    output: Path
    model: str | None = None
    task: str | None = None
    labels: list[str] | None = None
    task_options: dict = field(default_factory=dict)
    head: Path | None = None
    pooling: str = "auto"
    max_length: int | None = None
    shift_positions: bool | None = None  # default True: PEFT's numbering
    drop_token_types: bool | None = None  # default True: PEFT's inputs
    overwrite: bool = False


def import_adapter(request: ImportRequest) -> dict:
    """Write a ptv2 artifact holding the adapter's prefix and head; return what was imported."""
    from .pipeline import _pooling

    adapter = read_adapter(request.adapter)
    _check_empty(Path(request.output), request.overwrite)
    exported = adapter.exported or {}
    backbone, _, name = _load_backbone(adapter, request.model)
    fingerprint = backbones.fingerprint(backbone)
    recorded = exported.get("backbone", {}).get("fingerprint")
    if recorded is not None and recorded != fingerprint:
        raise PTuningError(
            f"{adapter.path} was exported from a prompt trained on backbone {exported['backbone']['name']!r} "
            f"(fingerprint {recorded}), but the given backbone has fingerprint {fingerprint}; pass --model PATH to it"
        )
    encoder = Encoder(backbone)
    check_geometry(adapter, encoder.geometry)
    task = _task_for(adapter, request)
    peft_heads.check_family(task)
    source = _head_source(adapter, request, task, backbone, _pooling(request.pooling, backbone, name))
    head = peft_heads.build(source, task, encoder.geometry.hidden_size)
    config = _prefix_config(adapter, request)
    model = PTuningModel(encoder, config, head).eval()
    model.method.load_folded({"prefix": table_to_prefix(adapter.table, encoder.geometry)})
    limit = getattr(backbone.config, "max_position_embeddings", None) or task.default_max_length
    max_length = request.max_length or exported.get("max_length") or min(task.default_max_length, limit)
    model.token_budget(max_length)  # a prefix that leaves the text no room is refused here, before writing
    origin = {k: adapter.config.get(k) for k in ("task_type", "peft_version", "base_model_name_or_path")}
    origin.update(adapter=str(Path(request.adapter).resolve()), head=source.origin)
    artifact.save_artifact(
        Path(request.output),
        model,
        task=task,
        backbone_name=name,
        backbone_fingerprint=fingerprint,
        max_length=max_length,
        pooling=source.pooling,
        extra={"imported_from": origin},
    )
    return {"task": task, "config": config, "backbone": backbones.portable_name(name), "fingerprint": fingerprint,
            "head": source.origin, "exported": adapter.exported is not None,
            "named_backbone": adapter.config.get("base_model_name_or_path")}  # fmt: skip


def _prefix_config(adapter: PeftAdapter, request: ImportRequest) -> Ptv2Config:
    """ptv2's inference config for the adapter's prefix: an exported adapter's own settings where it has them
    (so export and import give back the same artifact), PEFT's conventions otherwise, the user's flags first."""
    exported = (adapter.exported or {}).get("method", {})
    base = Ptv2Config(**{k: v for k, v in exported.items() if k in Ptv2Config.option_names()})
    shift = _first(request.shift_positions, exported.get("shift_positions"), True)
    drop = _first(request.drop_token_types, exported.get("drop_token_types"), True)
    config = DeepPrompt.inference_config(base)
    return replace(config, prompt_length=adapter.prompt_length, shift_positions=shift, drop_token_types=drop)


def _first(*values):
    return next(v for v in values if v is not None)


def _check_empty(output: Path, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise PTuningError(f"--output {output} is a file; give a directory")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise PTuningError(f"{output} is not empty; pass --overwrite to replace it")


def _load_backbone(adapter: PeftAdapter, model: str | None):
    """``--model``; else the backbone an exported adapter records; else the one the adapter names; else ours."""
    if model is None and adapter.exported:
        return backbones.load_recorded_backbone(adapter.exported["backbone"]["name"])
    return backbones.load_backbone(model or adapter.config.get("base_model_name_or_path"))


def _task_for(adapter: PeftAdapter, request: ImportRequest) -> Task:
    """``--task`` (with ``--labels`` and columns); else the exported one; else the generic task of its kind."""
    exported = (adapter.exported or {}).get("task")
    if request.task is None and exported is not None and not request.labels:
        return get_task(exported["name"]).from_state(exported)
    default = "token-classification" if adapter.config.get("task_type") == "TOKEN_CLS" else "text-classification"
    return get_task(request.task or default, labels=request.labels, **request.task_options)


def _head_source(adapter: PeftAdapter, request: ImportRequest, task: Task, backbone, pooling: str):
    """``--head FILE``; else the head export-peft saved beside the adapter; else the adapter's saved classifier."""
    if request.head is not None:
        return peft_heads.from_file(request.head, task, pooling)
    if adapter.exported_head:
        state = {k: v.float() for k, v in adapter.exported_head.items()}
        return peft_heads.HeadSource(state, adapter.exported["pooling"], f"the head exported with {adapter.path.name}")
    if request.pooling != "auto" and task.family != "tagging":
        raise PTuningError("--pooling applies to --head FILE; the adapter's own classifier fixes how it pools")
    return peft_heads.from_modules(adapter.modules, task, backbone, pooling, str(adapter.path))


# -- export ---------------------------------------------------------------------------------------------------
def export_artifact(artifact_dir: str | Path, out_dir: str | Path, overwrite: bool = False) -> list[str]:
    """Write a ptv2 artifact as a PEFT prefix-tuning adapter (feature extraction) plus its head beside it.

    Returns notes on where PEFT's outputs will differ from the artifact's (positions, token types).
    """
    artifact_dir, out_dir = Path(artifact_dir), Path(out_dir)
    meta = artifact.read_meta(artifact_dir)
    if not issubclass(artifact.inference_method_class(meta), DeepPrompt):
        raise PTuningError(
            f"{artifact_dir}: export-peft exports ptv2 artifacts (a plain per-layer prefix, which is what PEFT's "
            f"prefix tuning holds); this one is {meta['method']['method']}"
        )
    weights = artifact_dir / artifact.WEIGHTS
    if not weights.is_file() or sha256_file(weights) != meta.get("weights_sha256"):
        raise PTuningError(f"{artifact_dir}: {artifact.WEIGHTS} is missing or does not match {artifact.META}")
    tensors = load_file(str(weights))
    prefix = tensors["prefix"]  # (layers, 2, kv, P, hd)
    layers, _, kv_heads, P, head_dim = prefix.shape
    if P == 0:
        raise PTuningError(f"{artifact_dir}: the prompt has no prefix slots (P=0); there is nothing to export")
    _check_empty(out_dir, overwrite)
    config = config_from_dict(meta["method"])
    atomic_save_tensors(out_dir / ADAPTER_WEIGHTS, {TABLE: prefix_to_table(prefix)}, metadata={"format": "pt"})
    head_sha = atomic_save_tensors(out_dir / HEAD_WEIGHTS, artifact.head_state(tensors))
    keep = ("task", "pooling", "max_length", "method", "backbone")
    atomic_write_json(out_dir / HEAD_META, {**{k: meta[k] for k in keep}, "library_version": __version__,
                                            "head_sha256": head_sha})  # fmt: skip
    atomic_write_json(out_dir / ADAPTER_CONFIG, adapter_config(meta["backbone"]["name"], layers, kv_heads, P, head_dim))
    notes = []
    if not config.shift_positions:
        notes.append(
            "PEFT numbers the real tokens from P; this prompt was trained numbering them from 0 (no "
            "--shift-positions), so PEFT's outputs will differ from ptuning's"
        )
    if not config.drop_token_types:
        notes.append(
            "PEFT drops token_type_ids; this prompt was trained with them (no --drop-token-types), so on "
            "sentence pairs PEFT's outputs will differ from ptuning's"
        )
    return notes


def adapter_config(backbone: str, layers: int, kv_heads: int, prompt_length: int, head_dim: int) -> dict:
    """PEFT's ``PrefixTuningConfig`` for a prefix of this shape, as ``save_pretrained`` writes it.

    Feature extraction: the one PEFT prefix model that still runs encoders on current transformers (its
    sequence-classification model refuses them); the head travels beside it (``ptuning_head.*``).
    """
    return {
        "auto_mapping": None,
        "base_model_name_or_path": backbone,
        "encoder_hidden_size": kv_heads * head_dim,
        "inference_mode": True,
        "modules_to_save": None,
        "num_attention_heads": kv_heads,
        "num_layers": layers,
        "num_transformer_submodules": 1,
        "num_virtual_tokens": prompt_length,
        "peft_type": PREFIX_TUNING,
        "prefix_projection": False,
        "revision": None,
        "task_type": "FEATURE_EXTRACTION",
        "token_dim": kv_heads * head_dim,
    }
