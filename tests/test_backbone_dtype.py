"""``--backbone-dtype``: a frozen backbone stored and run in bf16/fp16 while the prompt, head and optimizer stay fp32.

Tolerances. bf16 keeps 8 significant bits: one rounding changes a value by at most 2^-9 (0.2 %) of itself. Every
matmul, softmax and LayerNorm of the tiny 2-layer backbones rounds its output once, and these errors add up to
a few 2^-8 on logits of size ~1 (measured across the nine families: at most 0.0036). We allow 0.02, five times
that. fp16 keeps 11 bits, eight times finer: 0.005 (measured: at most 0.0003). That the prompt really goes
through the half-precision path (and not around it) is what the gradient test shows: the prompt's gradient
through the bf16 backbone points where the fp32 one does, cosine > 0.999 (measured > 0.9999), relative error
< 0.05 (measured < 0.014).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_backbone, train_argv
from safetensors.torch import load_file

from ptuning import artifact, backbones, pipeline
from ptuning.errors import PTuningError
from ptuning.heads import SequenceClassificationHead
from ptuning.loop import TrainConfig
from ptuning.method import method_config
from ptuning.model import PTuningModel
from ptuning.precision import cast_frozen, check_backbone_dtype
from ptuning.serve.pool import PromptPool

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
FAMILIES = ["bert", "deberta-v2", "gpt2", "llama"]  # attention interface (encoder, decoder, GQA), own attention
TOLERANCE = {"bf16": 0.02, "fp16": 0.005}


def pair(family: str, method: str, dtype: str):
    """The same model twice: float32, and with its backbone cast to ``dtype``."""
    torch.manual_seed(0)
    options = {"prefix_init_std": 1.0} if method == "ptv2" else {}  # a prefix that changes the outputs a lot
    head = SequenceClassificationHead(32, 3, "mean", dropout=0.0)
    full = PTuningModel(tiny_backbone(family), method_config(method, prompt_length=4, **options), head).eval()
    half = copy.deepcopy(full)
    cast_frozen(half.backbone, dtype)
    return full, half


def batch():
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 128, (4, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    return ids, mask, torch.tensor([0, 1, 2, 0])


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("method", ["ptv2", "prompt-tuning", "apt", "lpt"])
@pytest.mark.parametrize("family", FAMILIES)
def test_half_precision_backbone_logits_are_close_to_fp32(family, method, dtype):
    full, half = pair(family, method, dtype)
    ids, mask, _ = batch()
    expected, got = full(ids, mask), half(ids, mask)
    assert next(half.backbone.parameters()).dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    assert got.dtype == torch.float32 and all(p.dtype == torch.float32 for p in half.method.parameters())
    assert (got - expected).abs().max() < TOLERANCE[dtype]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["ptv2", "prompt-tuning"])
def test_bf16_backbone_gradients_reach_the_fp32_prompt(family, method):
    full, half = pair(family, method, "bf16")
    ids, mask, labels = batch()
    for model in (full, half):
        torch.nn.functional.cross_entropy(model(ids, mask), labels).backward()
    for a, b in zip(full.method.parameters(), half.method.parameters(), strict=True):
        assert b.grad is not None and b.grad.dtype == torch.float32 and torch.isfinite(b.grad).all()
        cosine = torch.nn.functional.cosine_similarity(a.grad.flatten(), b.grad.flatten(), dim=0)
        assert cosine > 0.999 and (b.grad - a.grad).norm() / a.grad.norm() < 0.05
    assert all(p.grad is None for p in half.backbone.parameters())  # frozen: no weight gradient at all


def test_cast_keeps_the_float32_fingerprint_and_refuses_trainable_weights():
    backbone = tiny_backbone("bert")
    before = backbones.fingerprint(backbone)
    cast_frozen(backbone.requires_grad_(False), "bf16")
    assert backbones.fingerprint(backbone) == before
    with pytest.raises(PTuningError, match="needs a frozen backbone"):
        cast_frozen(tiny_backbone("bert"), "bf16")  # requires_grad as loaded


def request(data, out, model_dir, method="ptv2", **train_kw):
    return pipeline.TrainRequest(
        task="sst2",
        data=str(data),
        output=out,
        model=str(model_dir),
        method=method_config(method, strict=False, prompt_length=4),
        train=TrainConfig(**{"epochs": 4, "lr": 3e-2, "batch_size": 8, "seed": 3, **train_kw}),
        max_length=32,
        pooling="mean",
    )


def test_bf16_training_keeps_prompt_head_and_optimizer_fp32_and_learns(tmp_path, sst2_dir, tiny_bert_dir):
    out = tmp_path / "bf16"
    summary = pipeline.train(request(sst2_dir, out, tiny_bert_dir, backbone_dtype="bf16"))
    losses = [row["train_loss"] for row in summary["history"]]
    assert losses[-1] < losses[0] - 0.05, losses
    moments = load_file(str(out / "checkpoint" / "optimizer.safetensors"))
    assert moments and all(t.dtype == torch.float32 for t in moments.values())  # AdamW's exp_avg, exp_avg_sq
    trained = load_file(str(out / "checkpoint" / "trainable.safetensors"))
    assert all(t.dtype == torch.float32 for t in trained.values())
    prompt = load_file(str(out / "prompt.safetensors"))
    assert all(t.dtype == torch.float32 for t in prompt.values())
    meta = json.loads((out / "ptuning.json").read_text())
    assert meta["backbone"]["dtype"] == "bf16" and "backbone_dtype: bf16" in (out / "config.yaml").read_text()
    model, *_ = artifact.load_artifact(out)  # loads as trained ...
    assert next(model.backbone.parameters()).dtype == torch.bfloat16
    as_trained = pipeline.evaluate(out, str(sst2_dir))
    assert as_trained["accuracy"] == pytest.approx(summary["best"]["accuracy"])
    in_fp32 = pipeline.evaluate(out, str(sst2_dir), backbone_dtype="fp32")  # ... or in fp32: same weights
    assert abs(in_fp32["accuracy"] - as_trained["accuracy"]) <= 2 / 32


def test_bf16_pool_predicts_like_the_fp32_pool(tmp_path, sst2_dir, tiny_bert_dir):
    out = tmp_path / "fp32"
    pipeline.train(request(sst2_dir, out, tiny_bert_dir, epochs=1))
    inputs = ["good film", "a very dull and weak plot , the end"]
    scores = []
    for dtype in ("fp32", "bf16"):
        pool = PromptPool.from_artifact(out, backbone_dtype=dtype)
        pool.load(out, "sst2")
        scores.append([p["score"] for p in pool.predict([("sst2", pool.to_example("sst2", v)) for v in inputs])])
    assert scores[0] == pytest.approx(scores[1], abs=0.01)


def test_refusals_are_one_line_errors(tmp_path, sst2_dir, tiny_bert_dir):
    with pytest.raises(PTuningError, match="--method finetune trains it"):
        pipeline.train(request(sst2_dir, tmp_path / "ft", tiny_bert_dir, method="finetune", backbone_dtype="bf16"))
    if importlib.util.find_spec("bitsandbytes") is None or not torch.cuda.is_available():
        with pytest.raises(PTuningError, match="int8 needs bitsandbytes and a CUDA GPU"):
            check_backbone_dtype("int8")
    if not torch.cuda.is_available():
        with pytest.raises(PTuningError, match="fp16 needs a CUDA GPU"):
            check_backbone_dtype("fp16")
    assert not (tmp_path / "ft").exists()
    args = train_argv(sst2_dir, tiny_bert_dir, tmp_path / "cli", "--method", "finetune", "--backbone-dtype", "bf16")
    done = subprocess.run([sys.executable, "-m", "ptuning.cli", *args], capture_output=True, text=True, env=ENV)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "needs a frozen backbone" in done.stderr


def test_efficiency_measures_a_bf16_backbone_and_autocast_fine_tuning(monkeypatch):
    """The GPU comparison's rows (ptv2-bf16, finetune-autocast) run on CPU at a tiny setting, with what they claim."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import efficiency
    import torch
    from conftest import tiny_backbone

    from ptuning import backbones

    monkeypatch.setattr(
        backbones, "load_backbone", lambda model, **_: (tiny_backbone("bert", vocab_size=30522), None, "t")
    )
    monkeypatch.setattr(efficiency, "artifact_bytes", lambda method, model, name: 0)
    built, _, _ = efficiency.build("ptv2-bf16", 4)
    assert next(built.backbone.parameters()).dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in built.method.parameters())
    assert efficiency.split_variant("prompt-tuning") == ("prompt-tuning", "")
    assert efficiency.split_variant("finetune-autocast") == ("finetune", "autocast")
    seen = []
    original = efficiency.timed_step

    def spy(model, optimizer, ids, mask, labels, autocast=False):
        seen.append(autocast)
        return original(model, optimizer, ids, mask, labels, autocast)

    monkeypatch.setattr(efficiency, "timed_step", spy)
    rows = [efficiency.worker(m, 4, batch=2, length=8, steps=1) for m in ("ptv2-bf16", "finetune-autocast")]
    assert all(row["step_s"] > 0 and "peak_cuda_mb" not in row for row in rows)
    assert seen == [False] * 4 + [True] * 4  # 3 warm-up steps + 1 timed step each
    pair = efficiency.paired(["ptv2", "ptv2-bf16"], 4, batch=2, length=8, steps=1)
    assert pair["methods"] == ["ptv2", "ptv2-bf16"] and pair["ratio"] > 0 and pair["device"] == "cpu"
