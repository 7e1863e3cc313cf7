"""The activation cache: the frozen bottom layers' output, computed once per input and reused every epoch.

With ``--prefix-layers top:K`` the layers below the lowest prompted one run as the frozen backbone does: no
trained parameter reaches them and their dropout is off (``Encoder.freeze_below``), so the hidden states
entering the lowest prompted layer are a fixed function of the input. The first pass over an input (training
or evaluation) runs the whole backbone and keeps them; every later pass runs the prompted layers only
(``Encoder.run_upper``), with the family's own positions and masks. The results equal a run without the cache
(the same numbers enter the same layers); only the time spent below the prompt goes.

What is kept: one entry ("unit") per sequence the model runs (a feature; one per choice of a multiple-choice
feature; one per window of a long tagging or QA input), its real tokens only (``(tokens, H)``), in one flat
buffer. Batches carry each row's unit number (:data:`UNITS_KEY`), so shuffling, ``--group-by-length`` and the
evaluation's longest-first order all find their rows. Padding positions get zeros: no real token attends to them.

Where: in memory up to ``--activation-cache-mb``, else a memory-mapped raw file (``torch.from_file``, no pickle)
under ``OUT/activation-cache/``. Its name is a key over everything the kept values depend on: the backbone's
weights (fingerprint), the layer, ``max_length``, the precision, the device type, and every unit's tokens, token
types and mask. Another backbone, max length or data is another key: the old files are removed and the cache is
rebuilt. A manifest (JSON, written atomically) lists the units already filled; a file is written only by the
process that owns it (the process index is part of its name), so data-parallel processes never write each other's
files. A run resumed with ``--resume`` reopens its file and re-checks it before use: a few kept units are computed
again and compared, and any difference rebuilds the whole cache. An in-memory cache is simply rebuilt.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .encoders import Encoder, PromptInputs
from .encoders.depth import DepthPlan
from .errors import PTuningError
from .io import atomic_write_json

UNITS_KEY = "activation_units"
DIRECTORY = "activation-cache"
FORMAT = 1
CHECKED_UNITS = 4  # units recomputed to re-check a cache file before reusing it
TOKEN_KEYS = ("input_ids", "token_type_ids", "attention_mask")


def units_of(features: list[dict], first: int = 0) -> tuple[list[dict], list[dict]]:
    """``(features with their unit numbers, one token dict per unit)``; units are numbered from ``first``.

    A feature is one unit, or one per choice (``input_ids`` a list of lists). The features given are not changed.
    """
    numbered, tokens = [], []
    for feature in features:
        choices = bool(feature["input_ids"]) and isinstance(feature["input_ids"][0], list)
        count = len(feature["input_ids"]) if choices else 1
        numbers = list(range(first + len(tokens), first + len(tokens) + count))
        for c in range(count):
            tokens.append({k: feature[k][c] if choices else feature[k] for k in TOKEN_KEYS if k in feature})
        numbered.append({**feature, UNITS_KEY: numbers if choices else numbers[0]})
    return numbered, tokens


def with_units(collate):
    """``collate`` that also stacks the rows' unit numbers, ``(B,)`` or ``(B, C)`` (choices padded with the first,
    as :func:`~ptuning.tasks.base.pad_collate` pads them)."""

    def wrapped(features: list[dict]) -> dict:
        units = [f[UNITS_KEY] for f in features]
        batch = collate([{k: v for k, v in f.items() if k != UNITS_KEY} for f in features])
        if isinstance(units[0], list):
            width = max(len(u) for u in units)
            units = [u + [u[0]] * (width - len(u)) for u in units]
        batch[UNITS_KEY] = torch.tensor(units, dtype=torch.long)
        return batch

    return wrapped


def cache_key(units: list[dict], **identity) -> str:
    """A digest of the units' tokens and of everything else the kept values depend on (``identity``)."""
    digest = hashlib.sha256(json.dumps({"format": FORMAT, **identity}, sort_keys=True).encode())
    for unit in units:
        for key in TOKEN_KEYS:
            digest.update(key.encode() + repr(list(unit.get(key, ()))).encode())
    return digest.hexdigest()[:24]


@dataclass
class ActivationCache:
    """The kept hidden states entering layer ``depth`` of every unit, and which units are filled."""

    depth: int
    lengths: torch.Tensor  # (units,) real tokens of each unit
    hidden_size: int
    key: str
    budget_bytes: int
    directory: Path | None = None  # where the memory-mapped file goes when the cache is over budget
    process: int = 0
    tokens: list[dict] = field(default_factory=list, repr=False)  # each unit's tokens, to re-check a reopened file
    storage: torch.Tensor | None = None  # (total tokens, H), allocated at the first capture (its dtype)
    computed: int = 0  # units whose lower layers ran this run (batches that were not all kept yet)
    reused: int = 0  # units served from the cache
    note: str = ""  # how the cache was opened (rebuilt, reused, re-checked)

    def __post_init__(self) -> None:
        self.offsets = torch.cumsum(self.lengths, 0) - self.lengths  # (units,) first row of each unit
        self.filled = torch.zeros(len(self.lengths), dtype=torch.bool)

    @property
    def total_tokens(self) -> int:
        return int(self.lengths.sum())

    def nbytes(self, dtype: torch.dtype = torch.float32) -> int:
        return self.total_tokens * self.hidden_size * dtype.itemsize

    @property
    def on_disk(self) -> bool:
        return self.directory is not None and self.nbytes() > self.budget_bytes

    def _paths(self) -> tuple[Path, Path]:
        stem = f"{self.key}.p{self.process}"  # the process index: data-parallel processes never share a file
        return self.directory / f"{stem}.bin", self.directory / f"{stem}.json"

    # -- the forward pass ------------------------------------------------------------------------
    def encode(
        self,
        encoder: Encoder,
        units: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        prompt: PromptInputs,
    ) -> torch.Tensor:
        """The final hidden states ``(B, L, H)``: from the kept states when every row's are kept, else by a full
        forward pass that keeps them."""
        units = units.reshape(-1).cpu()  # (B,)
        if bool(self.filled[units].all()):
            self.reused += len(units)
            hidden = self.gather(units, input_ids.shape[1]).to(input_ids.device)  # (B, L, H)
            return encoder.run_upper(hidden, input_ids, attention_mask, token_type_ids, self.depth, prompt)
        plan = DepthPlan(capture=self.depth, no_grad_below=self.depth)
        out = encoder(input_ids, attention_mask, token_type_ids, prompt, plan=plan)
        self.put(units, plan.captured)
        return out

    def gather(self, units: torch.Tensor, length: int) -> torch.Tensor:
        """The kept states of ``units`` ``(B,)``, padded with zeros to ``length``: ``(B, length, H)``."""
        out = self.storage.new_zeros(len(units), length, self.hidden_size)  # (B, L, H)
        for row, unit in enumerate(units.tolist()):
            start, n = int(self.offsets[unit]), int(self.lengths[unit])
            out[row, :n] = self.storage[start : start + n]
        return out

    def put(self, units: torch.Tensor, hidden: torch.Tensor) -> None:
        """Keep the real tokens of each row of ``hidden`` ``(B, L, H)`` (the states entering layer ``depth``)."""
        if self.storage is None:
            self._allocate(hidden.dtype)
        hidden = hidden.detach().to("cpu", self.storage.dtype)
        for row, unit in enumerate(units.tolist()):
            if not self.filled[unit]:
                start, n = int(self.offsets[unit]), int(self.lengths[unit])
                self.storage[start : start + n] = hidden[row, :n]
                self.filled[unit] = True
                self.computed += 1

    # -- storage ---------------------------------------------------------------------------------
    def _allocate(self, dtype: torch.dtype) -> None:
        rows = (self.total_tokens, self.hidden_size)
        if not self.on_disk:
            self.storage = torch.empty(rows, dtype=dtype)
            return
        data, manifest = self._paths()
        data.parent.mkdir(parents=True, exist_ok=True)
        manifest.unlink(missing_ok=True)  # a manifest must never describe a file being rewritten
        with open(data, "wb") as handle:
            handle.truncate(self.nbytes(dtype))
        self.storage = torch.from_file(str(data), shared=True, size=rows[0] * rows[1], dtype=dtype).view(rows)

    def persist(self) -> None:
        """Write the manifest of a memory-mapped cache (which units its file holds), atomically."""
        if self.storage is None or not self.on_disk:
            return
        _, manifest = self._paths()
        filled = self.filled.nonzero().flatten().tolist()
        state = {"format": FORMAT, "key": self.key, "dtype": str(self.storage.dtype).removeprefix("torch.")}
        state.update(tokens=self.total_tokens, hidden=self.hidden_size, filled=filled)
        atomic_write_json(manifest, state)

    def reopen(self, encoder: Encoder) -> None:
        """Reuse this process's file for this key, if a manifest describes it and a re-check passes; remove every
        other key's files. Nothing in a file is trusted before the re-check."""
        if not self.on_disk:
            return
        data, manifest = self._paths()
        for stale in data.parent.glob(f"*.p{self.process}.*"):
            if not stale.name.startswith(self.key + "."):
                stale.unlink(missing_ok=True)
        if not manifest.is_file() or not data.is_file():
            self.note = "built from scratch"
            return
        try:
            state = json.loads(manifest.read_text())
            dtype = getattr(torch, state["dtype"])
            consistent = state["key"] == self.key and state["tokens"] == self.total_tokens
            consistent = consistent and state["hidden"] == self.hidden_size
            consistent = consistent and data.stat().st_size == self.nbytes(dtype)
        except (ValueError, KeyError, AttributeError, TypeError):
            consistent = False
        if not consistent:
            self.note = "rebuilt (its manifest did not describe this run)"
            return
        rows = (self.total_tokens, self.hidden_size)
        self.storage = torch.from_file(str(data), shared=True, size=rows[0] * rows[1], dtype=dtype).view(rows)
        self.filled[torch.tensor(state["filled"], dtype=torch.long)] = True
        self.note = self._recheck(encoder)

    def _recheck(self, encoder: Encoder) -> str:
        """Compute a few kept units again; on any difference forget every unit (they will be computed again)."""
        kept = self.filled.nonzero().flatten()
        if not len(kept):
            return "reopened, empty"
        sample = kept[torch.linspace(0, len(kept) - 1, min(CHECKED_UNITS, len(kept))).long()]  # (k,)
        device = next(encoder.parameters()).device
        length = int(self.lengths[sample].max())
        rows = [{k: list(v) + [0] * (length - len(v)) for k, v in self.tokens[u].items()} for u in sample.tolist()]
        batch = {k: torch.tensor([r[k] for r in rows], device=device) for k in rows[0]}
        if "attention_mask" not in batch:
            raise PTuningError("activation cache: a unit has no attention mask")
        was_training = encoder.training
        encoder.eval()
        try:
            types = batch.get("token_type_ids")
            fresh = encoder.run_lower(batch["input_ids"], batch["attention_mask"], types, self.depth)
        finally:
            encoder.train(was_training)
        stored = self.gather(sample, length).to(fresh.dtype)
        real = torch.stack([torch.arange(length) < self.lengths[u] for u in sample.tolist()]).to(device)  # (k, L)
        scale = stored[real].abs().max().clamp_min(1.0)
        tolerance = 1e-4 if fresh.dtype == torch.float32 else 2e-2
        if (fresh.cpu()[real.cpu()] - stored[real.cpu()]).abs().max() > tolerance * scale:
            self.filled[:] = False
            self._paths()[1].unlink(missing_ok=True)  # the file's units are being rewritten: no manifest until then
            return "rebuilt (kept units failed a re-check against a fresh computation)"
        return f"reopened: {len(kept)} kept units re-checked and reused"

    def describe(self) -> str:
        where = f"memory-mapped in {self._paths()[0]}" if self.on_disk else "in memory"
        size = self.nbytes(self.storage.dtype if self.storage is not None else torch.float32) / 2**20
        note = f"; {self.note}" if self.note else ""
        return f"{len(self.lengths)} units, {self.total_tokens:,} tokens, {size:.1f} MB {where}{note}"

    def summary(self) -> dict:
        """What ``metrics.json`` records: the cache was used, below which layer, and how much it served."""
        storage = "memory-mapped" if self.on_disk else "memory"
        counts = {"units": len(self.lengths), "computed": self.computed, "reused": self.reused}
        return {"used": True, "layers_cached": self.depth, "storage": storage, **counts}


def cache_depth(model, enabled: bool) -> tuple[int, str]:
    """How many bottom layers a training run of ``model`` can keep, or 0 and why not (for the run log)."""
    if not enabled:
        return 0, "turned off by --no-activation-cache"
    depth = model.method.training_frozen_layers()
    if depth == 0 and model.method.frozen_layers() > 0:
        return 0, "the method's training changes what enters its frozen layers at every step"
    if depth == 0:
        return 0, "nothing to keep: the prompt reaches layer 0 (keeping applies to --prefix-layers top:K or A-B)"
    if not model.encoder.support.partial_depth:
        return 0, f"the {model.encoder.injector.name} family cannot run part of its layers"
    return depth, ""


def attach(model, data, config, output_dir: Path, settings: dict, accelerator):
    """Give a training run of ``model`` its activation cache when one applies: ``(data, cache, log line)``.

    ``data`` (the loop's ``TrainData``, or a mixture's or a distillation's stand-in) comes back with numbered
    features and collates that batch the numbers: every task's training features first, then every task's
    evaluation features. Without a cache it comes back unchanged and ``cache`` is None. The line says which, and why.
    """
    depth, reason = cache_depth(model, config.activation_cache)
    if not depth:
        return data, None, f"activation cache: off ({reason})"
    from . import backbones

    sets = data.feature_sets()  # [(training features, evaluation features)] per task
    units: list[dict] = []
    numbered = [[], []]
    for side in (0, 1):
        for features in sets:
            done, tokens = units_of(features[side], first=len(units))
            numbered[side].append(done)
            units += tokens
    identity = {
        "backbone": settings.get("backbone_fingerprint") or backbones.fingerprint(model.backbone),
        "model_type": getattr(model.backbone.config, "model_type", ""),
        "layers": depth,
        "max_length": settings.get("max_length"),
        "precision": config.mixed_precision,
        "device": accelerator.device.type,
        "dtype": str(next(model.backbone.parameters()).dtype),
    }
    cache = ActivationCache(
        depth=depth,
        lengths=torch.tensor([len(u["input_ids"]) for u in units], dtype=torch.long),
        hidden_size=model.encoder.geometry.hidden_size,
        key=cache_key(units, **identity),
        budget_bytes=int(config.activation_cache_mb * 2**20),
        directory=Path(output_dir) / DIRECTORY,
        process=accelerator.process_index,
        tokens=units,
    )
    cache.reopen(model.encoder)
    model.activations = cache
    renumbered = data.renumbered(list(zip(*numbered, strict=True)), with_units)
    kept = f"layers 0-{depth - 1} of {model.encoder.geometry.num_layers} run once per input"
    return renumbered, cache, f"activation cache: on, {kept} ({cache.describe()})"
