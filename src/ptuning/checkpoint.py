"""Resumable training state, stored without pickles.

A checkpoint directory holds ``trainable.safetensors`` (the trained
parameters), ``optimizer.safetensors`` (AdamW moments) and ``state.json``
(optimizer hyper-parameters, scheduler, RNG states, loop counters). Only
tensors and JSON: loading a checkpoint never executes code. The directory is
written beside the old one and swapped in, so a kill mid-write leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .io import atomic_write_json

CHECKPOINT = "checkpoint"


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


def save(directory: Path, trainable: dict[str, torch.Tensor], optimizer, scheduler, loop: dict) -> None:
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
        tmp / "state.json", {"optimizer": opt_meta, "scheduler": scheduler_state, "rng": rng_meta, "loop": loop}
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
    missing = set(trainable) - {n for n, _ in model.named_parameters()}
    if missing:
        raise KeyError(f"checkpoint has parameters the model lacks: {sorted(missing)[:3]}")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in trainable.items():
            params[name].copy_(value)
    optimizer.load_state_dict(_optimizer_join(load_file(str(path / "optimizer.safetensors")), state["optimizer"]))
    scheduler.load_state_dict({**scheduler.state_dict(), **state["scheduler"]})
    _set_rng_state(load_file(str(path / "rng.safetensors")), state["rng"])
    return state["loop"]
