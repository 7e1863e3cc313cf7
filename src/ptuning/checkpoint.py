"""Resumable training state, stored without pickles.

A checkpoint directory holds ``trainable.safetensors`` (the trained
parameters), ``optimizer.safetensors`` (AdamW moments) and ``state.json``
(optimizer hyper-parameters, scheduler, RNG states, loop counters, and the
settings of the run that made it). Only tensors and JSON: loading a checkpoint
never executes code. The directory is written beside the old one and swapped
in, so a kill mid-write leaves the previous checkpoint intact.

``--resume`` continues a run, not any run: :func:`check_resumable` compares the
recorded settings with the new command's and refuses, before anything is
written, a checkpoint made with another task, data, method, backbone or
training setting. Only :data:`MAY_CHANGE` may differ.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .errors import PTuningError
from .finite import json_safe
from .io import atomic_write_json

CHECKPOINT = "checkpoint"
# What a resumed run may change: how long it goes on and how it evaluates or saves memory, never what it learns
# from. With --scheduler linear a new --epochs re-spreads the remaining decay over the new total.
MAY_CHANGE = frozenset(
    {
        "epochs",
        "patience",
        "max_minutes",
        "eval_batch_size",
        "gradient_checkpointing",
        "output",
        "model",
        "activation_cache",  # the kept activations equal the computed ones: keeping them changes the time only
        "activation_cache_mb",
    }
)
# Recorded settings that are not command-line flags, as the refusal names them.
NOT_FLAGS = {"backbone_fingerprint": "backbone weights"}


def _optimizer_split(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for pid, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_join(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for flat, value in [*tensors.items(), *meta["scalars"].items()]:
        pid, key = flat.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    meta = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    return tensors, meta


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def save(
    directory: Path, trainable: dict[str, torch.Tensor], optimizer, scheduler, loop: dict, run: dict | None = None
) -> None:
    """Write the checkpoint beside the old one, then swap it in. ``run``: the settings :func:`check_resumable` reads."""
    final = Path(directory) / CHECKPOINT
    tmp = Path(directory) / f".{CHECKPOINT}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in trainable.items()}, str(tmp / "trainable.safetensors"))
    opt_tensors, opt_meta = _optimizer_split(optimizer.state_dict())
    rng_tensors, rng_meta = _rng_state()
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    save_file(rng_tensors, str(tmp / "rng.safetensors"))
    scheduler_state = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    atomic_write_json(
        tmp / "state.json",
        {"optimizer": opt_meta, "scheduler": scheduler_state, "rng": rng_meta, "loop": json_safe(loop), "run": run},
    )
    old = Path(directory) / f".{CHECKPOINT}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def exists(directory: Path) -> bool:
    return (Path(directory) / CHECKPOINT / "state.json").is_file()


def load(directory: Path, model: torch.nn.Module, optimizer, scheduler) -> dict:
    """Restore parameters, optimizer, scheduler and RNG; return the loop counters."""
    path = Path(directory) / CHECKPOINT
    state = json.loads((path / "state.json").read_text())
    trainable = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    _check_shapes({k: tuple(v.shape) for k, v in trainable.items()}, model)
    with torch.no_grad():
        for name, value in trainable.items():
            params[name].copy_(value)
    optimizer.load_state_dict(_optimizer_join(load_file(str(path / "optimizer.safetensors")), state["optimizer"]))
    scheduler.load_state_dict({**scheduler.state_dict(), **state["scheduler"]})
    _set_rng_state(load_file(str(path / "rng.safetensors")), state["rng"])
    return state["loop"]


def check_resumable(directory: Path, run: dict, model: torch.nn.Module) -> None:
    """Refuse, in one line and before anything is written, a checkpoint that another run made.

    Every recorded setting outside :data:`MAY_CHANGE` must equal the new run's. A checkpoint
    from before settings were recorded is checked by its parameters' names and shapes only.
    """
    path = Path(directory) / CHECKPOINT
    recorded = json.loads((path / "state.json").read_text()).get("run")
    if recorded:
        keys = [*run, *(k for k in recorded if k not in run)]
        if recorded.get("method") != run.get("method"):  # each method has its own options: name the method only
            keys = [k for k in keys if k in recorded and k in run]
        newer = _method_defaults(model)  # options added since: a checkpoint that predates one ran with its default
        differences = [
            f"{_name(key)} {_shown(recorded.get(key))}, not {_shown(run.get(key))}"
            for key in keys
            if key not in MAY_CHANGE
            and recorded.get(key) != run.get(key)
            and not (key not in recorded and key in newer and newer[key] == run.get(key))
        ]
        if differences:
            raise PTuningError(
                f"--resume: this checkpoint was made with {'; '.join(differences)} "
                "(resume with the same settings, or train into a new --output)"
            )
    else:
        print(
            "note: --resume: this checkpoint records no run settings; only its parameter shapes were checked",
            file=sys.stderr,
        )
    with safe_open(str(path / "trainable.safetensors"), framework="pt") as handle:
        shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    _check_shapes(shapes, model)


def _method_defaults(model: torch.nn.Module) -> dict:
    """``{option: default}`` of the model's method (``--prefix-layers all`` ...), or nothing for another module."""
    config = getattr(getattr(model, "method", None), "config", None)
    if config is None or not dataclasses.is_dataclass(config):
        return {}
    return {f.name: f.default for f in dataclasses.fields(config)}


def _check_shapes(saved: dict[str, tuple[int, ...]], model: torch.nn.Module) -> None:
    """The checkpoint's trained parameters must be exactly the model's, shape for shape."""
    wanted = {name: tuple(p.shape) for name, p in model.named_parameters() if p.requires_grad}
    extra, missing = sorted(set(saved) - set(wanted)), sorted(set(wanted) - set(saved))
    reshaped = sorted(n for n in set(saved) & set(wanted) if saved[n] != wanted[n])
    if extra or missing or reshaped:
        detail = [f"{n}: {saved[n]} in the checkpoint, {wanted[n]} here" for n in reshaped[:2]]
        detail += [f"{len(extra)} parameters only in the checkpoint ({extra[0]}...)"] if extra else []
        detail += [f"{len(missing)} parameters missing from it ({missing[0]}...)"] if missing else []
        raise PTuningError(f"--resume: this checkpoint was made for another model: {'; '.join(detail)}")


def _name(key: str) -> str:
    return NOT_FLAGS.get(key) or "--" + key.replace("_", "-")


def _shown(value) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)
