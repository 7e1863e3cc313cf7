"""One artifact's inspection as a JSON-ready report: what ``inspect.json`` holds and the plots and table show.

The data comes from ``--data`` or, by default, from the data the artifact was trained on (its ``config.yaml``).
Without data only what the stored prompt says by itself is reported (its norms, its nearest tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .. import artifact, backbones
from ..errors import DataError, PTuningError
from ..runfile import CONFIG_FILE
from ..trainconfig import check_count
from .ablation import layer_ablation
from .attention import AttentionSummary, attention_statistics
from .prompts import PromptVectors, nearest_tokens, prompt_vectors

TOP_SLOTS = 3


@dataclass(frozen=True)
class InspectOptions:
    """``ptuning inspect``'s settings; numbers are checked on creation."""

    data: str | None = None
    split: str = "validation"
    samples: int = 200
    top_k: int = 5
    batch_size: int = 32
    model: str | None = None
    device: str = "auto"
    plots: bool = True

    def __post_init__(self) -> None:
        check_count("--samples", self.samples)
        check_count("--top-k", self.top_k)
        check_count("--batch-size", self.batch_size)


def recorded_data(directory: Path) -> str | None:
    """The ``data`` the artifact's run recorded in ``config.yaml`` (None: no such file or no such data here)."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        return None
    import yaml

    try:
        data = (yaml.safe_load(path.read_text()) or {}).get("data")
    except (yaml.YAMLError, AttributeError):
        return None
    return str(data) if data and Path(str(data)).exists() else None


def inspect_artifact(
    directory: Path, options: InspectOptions, name: str | None = None
) -> tuple[dict, PromptVectors | None]:
    """``(report, prompt vectors)`` of the artifact in ``directory`` (the vectors feed the comparison of several).

    ``name`` (default: the directory's name) labels it in tables, plots and comparisons.
    """
    directory = Path(directory)
    model, tokenizer, task, meta = artifact.load_artifact(directory, model_name=options.model)
    model.to(backbones.resolve_device(options.device)).eval()
    g = model.encoder.geometry
    with torch.no_grad():
        prefix, embeds = model.method.deep_prefix(), model.method.input_prompt()
    report = {
        "artifact": str(directory),
        "name": name or directory.resolve().name,
        "task": {"name": task.name, "family": task.family, "labels": meta["task"].get("labels")},
        "method": meta["method"],
        "backbone": meta["backbone"],
        "geometry": {"layers": g.num_layers, "heads": g.num_heads, "kv_heads": g.num_kv_heads, "head_dim": g.head_dim},
        "prompt": _describe_prompt(prefix, embeds),
        "data": None,
        "attention": None,
        "norms": _stored_norms(prefix),
        "ablation": None,
        "nearest_tokens": None,
        "notes": [],
    }
    notes = report["notes"]
    if report["prompt"]["kind"] == "none":
        notes.append(
            f"method {meta['method']['method']} has no deep prefix or input-level prompt to look into "
            "(a late prompt is generated per input; a head-only or fine-tuned model has no prompt)"
        )
    data = options.data or recorded_data(directory)
    if data is None:
        notes.append("no --data given and none recorded in config.yaml: attention and ablation need real inputs")
    else:
        _measure(report, model, tokenizer, task, meta, data, options)
    if embeds is not None and embeds.shape[0]:
        vocabulary = model.encoder.word_embeddings().weight.detach()  # (V, H)
        report["nearest_tokens"] = nearest_tokens(embeds.detach(), vocabulary, tokenizer, options.top_k)
    return report, prompt_vectors(report["name"], model.method, meta["backbone"]["fingerprint"])


def _describe_prompt(prefix: torch.Tensor | None, embeds: torch.Tensor | None) -> dict:
    if prefix is not None and prefix.shape[-2] > 0:
        return {"kind": "deep prefix", "slots": prefix.shape[-2], "shape": list(prefix.shape)}
    if embeds is not None and embeds.shape[0] > 0:
        return {"kind": "input prompt", "slots": embeds.shape[0], "shape": list(embeds.shape)}
    return {"kind": "none", "slots": 0, "shape": []}


def _stored_norms(prefix: torch.Tensor | None) -> dict | None:
    """The stored prefix's norms (replaced by the measured ones when there is data; a gate may scale them)."""
    if prefix is None or prefix.shape[-2] == 0:
        return None
    norms = prefix.double().norm(dim=-1).mean(dim=-1)  # (layers, 2, kv, P, hd) -> (layers, 2, kv)
    return _norms_json("stored prefix", norms[:, 0], norms[:, 1], None, None)


def _norms_json(source: str, prompt_key, prompt_value, token_key, token_value) -> dict:
    per_head = {
        "prompt_key": prompt_key,
        "prompt_value": prompt_value,
        "token_key": token_key,
        "token_value": token_value,
    }
    return {
        "source": source,
        "unit": "mean L2 norm of one head's vector",
        "per_head": {k: None if v is None else v.tolist() for k, v in per_head.items()},
        "by_layer": {k: None if v is None else v.mean(dim=-1).tolist() for k, v in per_head.items()},
    }


def _load_examples(task, data: str, options: InspectOptions) -> tuple[list, bool]:
    """The first ``samples`` examples of the split, labelled when the split has labels."""
    records = task.load_split(data, options.split)
    try:
        return task.records_to_examples(records, labelled=True)[: options.samples], True
    except DataError:
        return task.records_to_examples(records, labelled=False)[: options.samples], False


def _measure(report: dict, model, tokenizer, task, meta: dict, data: str, options: InspectOptions) -> None:
    """Attention statistics and the ablation on the data's split (notes say what could not be measured)."""
    notes = report["notes"]
    examples, labelled = _load_examples(task, data, options)
    if not examples:
        raise PTuningError(f"{data}: split {options.split!r} has no examples to inspect")
    featurized = task.featurize(examples, tokenizer, model.token_budget(meta["max_length"]))
    collate = task.collator(tokenizer)
    report["data"] = {"path": str(data), "split": options.split, "examples": len(examples), "labelled": labelled}
    if report["prompt"]["kind"] != "none":
        try:
            summary = attention_statistics(model, featurized.features, collate, options.batch_size)
        except PTuningError as exc:
            notes.append(f"attention not measured: {exc}")
        else:
            report["data"]["tokens"] = summary.tokens
            report["attention"] = _attention_json(summary)
            report["norms"] = _norms_json(
                "measured on the inputs",
                summary.prompt_key_norm,
                summary.prompt_value_norm,
                summary.token_key_norm,
                summary.token_value_norm,
            )
            if not summary.probabilities:
                notes.append(
                    f"the {report['backbone']['model_type']} attention kernel returns no probabilities: "
                    "attention shares are not available (norms are)"
                )
    if not labelled:
        notes.append(f"split {options.split!r} has no labels: no ablation")
        return
    ablation = layer_ablation(model, task, examples, featurized, collate, options.batch_size)
    if ablation is None:
        notes.append("the prompt is not made of per-layer parts: no per-layer ablation")
        return
    report["ablation"] = {
        "metric": ablation.metric,
        "all_layers": ablation.all_layers,
        "no_layer": ablation.no_layer,
        "without_layer": ablation.without_layer,
        "only_layer": ablation.only_layer,
        "all_layers_metrics": ablation.all_layers_metrics,
    }


def _attention_json(summary: AttentionSummary) -> dict:
    top = []
    for row in summary.slot_share:  # (slots,) per layer
        count = min(TOP_SLOTS, row.shape[0])
        values, slots = row.nan_to_num(-1.0).topk(count) if count else (row, row.long())
        top.append([{"slot": int(s), "share": float(v)} for v, s in zip(values, slots, strict=True) if v >= 0])
    return {
        "probabilities": summary.probabilities,
        "unit": "fraction of a real token's attention (0-1), mean over real tokens",
        "share": summary.share.tolist(),  # (layers, heads)
        "share_by_layer": summary.share.mean(dim=-1).tolist(),
        "slot_share": summary.slot_share.tolist(),  # (layers, slots)
        "top_slots": top,
    }
