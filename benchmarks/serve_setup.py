"""What the serving benchmark runs on: CB/RTE-length inputs and many prompt artifacts on the bundled MiniLM.

Inputs are the (premise, hypothesis) pairs of SuperGLUE CB and RTE validation, read at run time from the
shared data folder (never copied into the repository); without it, the package's sample sentences are
paired up instead, and the result file says which were used.

Artifacts are random (untrained) prompts: speed and memory depend on shapes, not values. One artifact per
task family is saved through the library (``save_artifact``); the others are clones with fresh random
prompt and head tensors, written with the same atomic writers and checksums, so 1,000 take seconds.
"""

from __future__ import annotations

import json
import math
import random
from importlib.resources import files
from pathlib import Path

import torch
from safetensors.torch import load_file

from ptuning import artifact, backbones
from ptuning.io import atomic_save_tensors, atomic_write_json
from ptuning.method import method_config
from ptuning.model import PTuningModel
from ptuning.tasks import get_task

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "superglue"
TASKS = ("cb", "rte")  # pair classification: CB's three labels, RTE's two
MAX_LENGTH = 256  # CB premises run to 273 MiniLM tokens, RTE's to 253


def pair_inputs(data: Path = DATA) -> tuple[list[list[str]], str]:
    """``[premise, hypothesis]`` inputs and a line saying where they came from."""
    pairs = []
    for task in TASKS:
        path = data / task / "val.jsonl"
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                pairs.append([row["premise"], row["hypothesis"]])
    if pairs:
        return pairs, f"SuperGLUE CB + RTE validation pairs ({len(pairs)}, read from {data.parent.name}/superglue)"
    text = (files("ptuning") / "samples" / "sentiment" / "train.tsv").read_text()
    sentences = [line.split("\t")[0].strip() for line in text.splitlines()[1:] if line.strip()]
    return [[a, b] for a, b in zip(sentences[::2], sentences[1::2], strict=False)], "sample sentences, paired"


def token_lengths(tokenizer, pairs: list[list[str]]) -> dict:
    lengths = sorted(len(tokenizer(a, b, truncation=True, max_length=MAX_LENGTH)["input_ids"]) for a, b in pairs)
    return {"mean": round(sum(lengths) / len(lengths), 1), "median": lengths[len(lengths) // 2], "max": lengths[-1]}


def template(root: Path, task_name: str, method: str, prompt_length: int, backbone=None) -> Path:
    """One artifact saved through the library: the pattern every clone follows."""
    backbone, name = backbone or backbones.load_backbone(None)[0], backbones.resolve_model_name(None)
    task = get_task(task_name)
    torch.manual_seed(0)
    config = method_config(method, strict=False, prompt_length=prompt_length)
    model = PTuningModel(backbone, config, task.build_head(backbone.config.hidden_size, "mean"))
    path = root / f"template-{task_name}-{method}-{prompt_length}"
    artifact.save_artifact(
        path,
        model,
        task=task,
        backbone_name=name,
        backbone_fingerprint=backbones.fingerprint(backbone),
        max_length=MAX_LENGTH,
        pooling="mean",
    )
    return path


def clones(source: Path, root: Path, count: int, prefix: str, seed: int = 0) -> list[Path]:
    """``count`` artifacts like ``source`` with random prompt and head tensors (scaled like trained ones)."""
    meta = artifact.read_meta(source)
    tensors = load_file(str(source / artifact.WEIGHTS))
    generator = torch.Generator().manual_seed(seed)
    paths = []
    for i in range(count):
        fresh = {
            k: torch.randn(v.shape, generator=generator) * v.float().std().clamp_min(1e-3) for k, v in tensors.items()
        }
        path = root / f"{prefix}-{i}"
        sha = atomic_save_tensors(path / artifact.WEIGHTS, fresh)
        atomic_write_json(path / artifact.META, {**meta, "weights_sha256": sha})
        paths.append(path)
    return paths


def make_tasks(root: Path, count: int, prompt_length: int, backbone=None, method: str = "ptv2") -> list[Path]:
    """``count`` artifacts alternating over :data:`TASKS` (CB, RTE, CB, ...), all of ``prompt_length`` slots."""
    per_task = {
        t: clones(
            template(root, t, method, prompt_length, backbone),
            root,
            (count + 1) // 2,
            f"{t}-{method}-{prompt_length}",
            seed=i,
        )
        for i, t in enumerate(TASKS)
    }
    return [per_task[TASKS[i % 2]][i // 2] for i in range(count)]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least ``q`` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def stream(names: list[str], pairs: list[list[str]], count: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    """An interleaved request stream: each request one input of a task drawn uniformly."""
    rng = random.Random(seed)
    return [(rng.choice(names), rng.choice(pairs)) for _ in range(count)]
