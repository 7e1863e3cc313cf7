"""``--init-from ARTIFACT``: start a run from a stored prompt, as the paper's multi-task stage does.

The paper trains one deep prompt on a mixture of tasks, then trains each task starting from it. Here the
first step is ``ptuning train --tasks-file …`` (``mixture.py``) and the second any run with
``--init-from`` that artifact (or any other: a single-task prompt starts a related task the same way).

The stored prompt goes into the run's method through the method's own :meth:`~ptuning.method.Method.load_folded`,
and is accepted only if the method then folds back exactly what was stored: a training form that is not
the stored one (``--reparam``'s MLP, ``--residual``, ptv1's prompt encoder) cannot start from it and is
refused in one line, like another method, another backbone or another prompt shape. Each head of the run
starts from a stored head of the same task family and label set (the same task first) when there is one,
and fresh otherwise; a log line says which.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from . import artifact
from .errors import PTuningError
from .heads import MultiTaskHead
from .method import method_class
from .model import PTuningModel
from .tasks import Task, get_task


def start_from(directory: str | Path, model: PTuningModel, tasks: list[Task], fingerprint: str) -> list[str]:
    """Load the stored prompt (and matching heads) into ``model``; the log lines that say what was loaded.

    ``tasks`` are the run's tasks, in the order of its heads (one, or a :class:`MultiTaskHead`'s).
    ``fingerprint`` is the run's backbone's, taken before anything changed it.
    """
    directory = Path(directory)
    where = f"--init-from {directory}"
    meta, tensors = artifact.read_verified(directory, model.backbone, fingerprint)
    stored = artifact.inference_method_class(meta)
    method = model.method
    ours = method_class(type(method).inference_config(method.config).method)
    if stored is not ours:
        raise PTuningError(
            f"{where} holds a {meta['method']['method']} prompt; this run trains {method.config.method} "
            f"(use --method {meta['method']['method']}, or another artifact)"
        )
    _load_prompt(where, meta, artifact.prompt_state(tensors), model)
    if stored.trains_backbone:
        model.backbone.load_state_dict(load_file(str(directory / artifact.BACKBONE_WEIGHTS)))
    shown = f", P={meta['method']['prompt_length']}" if "prompt_length" in meta["method"] else ""
    lines = [f"init-from {directory}: {meta['method']['method']} prompt loaded{shown}"]
    heads = dict(model.head.heads) if isinstance(model.head, MultiTaskHead) else {tasks[0].name: model.head}
    for task, head in zip(tasks, heads.values(), strict=True):
        lines.append(_load_head(directory, meta, tensors, task, head))
    return lines


def _load_prompt(where: str, meta: dict, stored: dict[str, torch.Tensor], model: PTuningModel) -> None:
    """Put the stored prompt into the method; refuse another shape, or a training form it cannot start from."""
    method = model.method
    expected = method.fold()
    if set(expected) != set(stored) or any(expected[k].shape != stored[k].shape for k in expected):
        detail = "; ".join(
            f"{k}: {tuple(stored[k].shape) if k in stored else 'none'} stored, {tuple(v.shape)} here"
            for k, v in expected.items()
        )
        length = meta["method"].get("prompt_length")
        hint = f" (it has --prompt-length {length})" if length is not None else ""
        raise PTuningError(f"{where}: the stored prompt has another shape than this run's ({detail}){hint}")
    try:
        method.load_folded(stored)
        same = all(torch.allclose(v, stored[k], atol=1e-6) for k, v in method.fold().items())
    except (RuntimeError, PTuningError):
        same = False
    if not same:
        raise PTuningError(
            f"{where}: --method {method.config.method} with these options trains its prompt through a device "
            "(--reparam's MLP, --residual, a prompt encoder) that a stored prompt cannot be loaded into; "
            "drop that option"
        )


def _load_head(directory: Path, meta: dict, tensors: dict, task: Task, head: torch.nn.Module) -> str:
    """The stored head of the same family and label set (preferring the same task) into ``head``; a log line."""
    entries = meta["tasks"] if "tasks" in meta else [meta["task"]]
    names = [entry["name"] for entry in entries]
    for entry in sorted(entries, key=lambda e: e["name"] != task.name):
        stored_task = get_task(entry["name"]).from_state(entry)
        if stored_task.family != task.family or stored_task.state().get("labels") != task.state().get("labels"):
            continue
        prefix = f"heads.{entry['name']}." if "tasks" in meta else "head."
        state = artifact.head_state(tensors, prefix)
        wanted = head.state_dict()
        if set(state) == set(wanted) and all(state[k].shape == wanted[k].shape for k in wanted):
            head.load_state_dict(state)
            return f"init-from {directory}: head of {entry['name']} loaded for {task.name}"
    return (
        f"init-from {directory}: fresh head for {task.name} (the stored heads, for {', '.join(names)}, "
        f"have another label set or shape)"
    )
