"""Evaluate and predict with a saved artifact: ``ptuning eval``, ``predict`` and ``generate`` as functions.

Training is ``pipeline.py``'s; this half only loads artifacts, so it stays the short path a reader follows from
the command line to the task's metrics. Outputs are the head's logits, or a generation task's decoded texts
(``Task.outputs``).
"""

from __future__ import annotations

import shlex
from pathlib import Path

import torch

from . import artifact, backbones, card, runfile
from .errors import DataError, PTuningError
from .io import atomic_write_bytes
from .tasks import Task, get_task
from .tasks.readers import read_records
from .trainconfig import check_count


def artifact_size(directory: Path) -> int:
    names = (artifact.WEIGHTS, artifact.META, artifact.BACKBONE_WEIGHTS)
    return sum((Path(directory) / n).stat().st_size for n in names if (Path(directory) / n).exists())


def evaluate(
    artifact_dir: Path,
    data: str,
    split: str = "validation",
    model_name: str | None = None,
    batch_size: int = 64,
    device: str = "auto",
    task: str | None = None,
    max_eval_samples: int | None = None,
    decoding: dict | None = None,
    record: bool = True,
    backbone_dtype: str | None = None,
) -> dict:
    """The artifact's metrics on ``split`` of ``data`` (its first ``max_eval_samples`` examples; ``task``: one task
    of a multi-task artifact; ``decoding``: a generation task's options); ``record`` adds them (and the command) to
    its model card. ``backbone_dtype`` None: the dtype it was trained in."""
    check_count("--max-eval-samples", max_eval_samples)
    _decoding_task(artifact_dir, decoding, task)  # refused before the backbone loads
    model, tokenizer, task, meta = artifact.load_artifact(
        artifact_dir, model_name=model_name, task=task, backbone_dtype=backbone_dtype
    )
    task = task.with_decoding(**decoding) if decoding else task
    model.to(backbones.resolve_device(device))
    scores = score_split(model, tokenizer, task, data, split, meta["max_length"], batch_size, max_eval_samples)
    if record:
        name = shlex.quote(Path(artifact_dir).resolve().name)
        command = f"ptuning eval {name} --data {shlex.quote(runfile.local_path(data))} --split {split}"
        command += f" --task {task.name}" if "tasks" in meta else ""
        if max_eval_samples:
            command += f" --max-eval-samples {max_eval_samples}"
        card.record_evaluation(Path(artifact_dir), meta, scores, command)
    return scores


def _decoding_task(artifact_dir: Path, decoding: dict | None, task: str | None, required: bool = False) -> None:
    """Refuse decoding options for an artifact whose task does not generate (``required``: even without options)."""
    if decoding or required:
        entry, _ = artifact.select_task(artifact.read_meta(Path(artifact_dir)), artifact_dir, task)
        get_task(entry["name"]).with_decoding(**(decoding or {}))


def _finite_logits(logits):
    """Refuse outputs with NaN or infinity: they would become ``"score": NaN`` (not JSON) or meaningless metrics."""
    if not torch.is_tensor(logits):  # generated texts
        return logits
    bad = int((~logits.isfinite()).reshape(len(logits), -1).any(dim=1).sum()) if logits.numel() else 0
    if bad:
        raise PTuningError(
            f"the model's outputs are NaN or infinite for {bad} of {len(logits)} inputs; the artifact is broken "
            "(was it trained with a diverging loss?): retrain it, with a lower --lr"
        )
    return logits


def score_split(
    model, tokenizer, task: Task, data: str, split: str, max_length: int, batch_size: int = 64, limit: int | None = None
) -> dict:
    """The task's metrics on one labelled split of ``data`` (its first ``limit`` examples), for a model in memory."""
    examples = task.records_to_examples(task.load_split(data, split), labelled=True)[:limit]
    scores = score_examples(model, tokenizer, task, examples, {"max_length": max_length}, batch_size)
    return {"task": task.name, "split": split, "examples": len(examples), **scores}


def score_examples(model, tokenizer, task: Task, examples: list, meta: dict, batch_size: int = 64) -> dict:
    """The task's metrics on labelled ``examples`` at the artifact's ``max_length``."""
    featurized = task.featurize(examples, tokenizer, model.token_budget(meta["max_length"]))
    logits = _finite_logits(task.outputs(model, featurized.features, task.collator(tokenizer), batch_size))
    return task.evaluate(logits, examples, featurized.alignment)


def predict(
    artifact_dir: Path,
    input_file: Path,
    output_file: Path,
    model_name: str | None = None,
    batch_size: int = 64,
    device: str = "auto",
    task: str | None = None,
    backbone_dtype: str | None = None,
    decoding: dict | None = None,
) -> int:
    """Predictions for ``input_file`` in the task's own format (generation: ``{"generated": ...}`` lines); ``task``
    picks one task of a multi-task artifact."""
    input_file = Path(input_file)
    if not input_file.is_file():
        raise DataError("input file not found", input_file)
    _decoding_task(artifact_dir, decoding, task)
    model, tokenizer, task, meta = artifact.load_artifact(
        artifact_dir, model_name=model_name, task=task, backbone_dtype=backbone_dtype
    )
    task = task.with_decoding(**decoding) if decoding else task
    model.to(backbones.resolve_device(device))
    examples = task.records_to_examples(read_records(input_file, header=task.files.header), labelled=False)
    featurized = task.featurize(examples, tokenizer, model.token_budget(meta["max_length"]))
    logits = _finite_logits(task.outputs(model, featurized.features, task.collator(tokenizer), batch_size))
    rows = task.predictions(logits, examples, featurized.alignment)
    text = task.write_predictions(rows, examples, input_file, Path(output_file))  # JSONL, CoNLL, SQuAD's map
    atomic_write_bytes(Path(output_file), text.encode("utf-8"))
    return len(rows)


def generate(artifact_dir: Path, input_file: Path, output_file: Path, decoding: dict | None = None, **kwargs) -> int:
    """``ptuning generate``: :func:`predict` for a generation artifact, with decoding options; others are refused."""
    _decoding_task(artifact_dir, decoding, kwargs.get("task"), required=True)
    return predict(artifact_dir, input_file, output_file, decoding=decoding, **kwargs)
