"""Resume after an interruption, early stopping, and data-parallel training under Accelerate."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import train_argv
from safetensors.torch import load_file

from ptuning import pipeline
from ptuning.loop import TrainConfig, lr_lambda
from ptuning.method import method_config

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}


def request(data, out, model_dir, **train_kw):
    return pipeline.TrainRequest(
        task="sst2",
        data=str(data),
        output=out,
        model=str(model_dir),
        method=method_config("ptv2", prompt_length=4),
        train=TrainConfig(**{"epochs": 3, "lr": 1e-2, "batch_size": 8, "seed": 3, **train_kw}),
        max_length=32,
        pooling="mean",
    )


def test_resume_continues_exactly_where_it_stopped(tmp_path, sst2_dir, tiny_bert_dir):
    straight = tmp_path / "straight"
    pipeline.train(request(sst2_dir, straight, tiny_bert_dir))

    resumed = tmp_path / "resumed"
    partial = pipeline.train(request(sst2_dir, resumed, tiny_bert_dir, stop_after_steps=8 + 3))
    assert partial["interrupted"]  # 8 steps per epoch: killed 3 steps into epoch 2
    pipeline.train(request(sst2_dir, resumed, tiny_bert_dir, resume=True))

    a = load_file(str(straight / "checkpoint" / "trainable.safetensors"))
    b = load_file(str(resumed / "checkpoint" / "trainable.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] - b[key]).abs().max() < 1e-6, key
    history = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1.0, 2.0, 3.0]


def test_killed_cli_run_resumes(tmp_path, sst2_dir, tiny_bert_dir):
    out = tmp_path / "run"
    common = ("--prompt-length", "4", "--batch-size", "8", "--max-length", "32")
    args = [sys.executable, "-m", "ptuning.cli", *train_argv(sst2_dir, tiny_bert_dir, out, *common, "--epochs", "40")]
    process = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "checkpoint" / "state.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    done = state["loop"]["epoch"]
    assert 1 <= done < 40
    finished = subprocess.run([*args, "--resume", "--patience", "1"], env=ENV, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert f"resumed from {out / 'checkpoint'} at epoch {done}" in finished.stdout
    assert (out / "metrics.json").exists()


def test_early_stopping_patience(tmp_path, sst2_dir, tiny_bert_dir):
    summary = pipeline.train(request(sst2_dir, tmp_path / "run", tiny_bert_dir, epochs=30, lr=1e-9, patience=2))
    assert summary["stopped_early"] and summary["epochs_run"] < 30
    assert summary["stopped_by"] == "patience"


def test_time_cap_stops_at_the_first_evaluation_past_it(tmp_path, sst2_dir, tiny_bert_dir):
    capped = pipeline.train(request(sst2_dir, tmp_path / "capped", tiny_bert_dir, epochs=30, max_minutes=1e-6))
    assert capped["stopped_by"] == "time" and capped["epochs_run"] == 1
    assert (tmp_path / "capped" / "prompt.safetensors").exists()  # the best-dev artifact is kept
    uncapped = pipeline.train(request(sst2_dir, tmp_path / "uncapped", tiny_bert_dir, epochs=2, max_minutes=60))
    assert uncapped["stopped_by"] == "epochs" and uncapped["epochs_run"] == 2


def test_reparameterised_prefix_defaults_to_a_tenfold_smaller_learning_rate(tmp_path, sst2_dir, tiny_bert_dir):
    plain = request(sst2_dir, tmp_path / "plain", tiny_bert_dir, epochs=1, lr=None)
    reparam = request(sst2_dir, tmp_path / "reparam", tiny_bert_dir, epochs=1, lr=None)
    reparam.method = method_config("ptv2", prompt_length=4, reparam=True)
    assert pipeline.train(plain)["config"]["lr"] == 5e-3
    assert pipeline.train(reparam)["config"]["lr"] == 5e-4


def test_eval_steps_also_scores_the_steps_after_the_last_boundary(tmp_path, sst2_dir, tiny_bert_dir):
    """A run shorter than --eval-steps used to end with no evaluation and no artifact."""
    summary = pipeline.train(request(sst2_dir, tmp_path / "run", tiny_bert_dir, epochs=2, eval_steps=1000))
    history = summary["history"]
    assert len(history) == 1 and history[0]["epoch"] == 2.0 and history[0]["step"] == summary["steps"]
    assert (tmp_path / "run" / "prompt.safetensors").exists()


def test_schedules():
    linear = lr_lambda("linear", warmup=2, total=10, gamma=0.5, steps_per_epoch=4)
    assert [round(linear(s), 3) for s in (0, 1, 2, 6, 10)] == [0.5, 1.0, 1.0, 0.5, 0.0]
    exponential = lr_lambda("exponential", warmup=0, total=10, gamma=0.5, steps_per_epoch=4)
    assert exponential(4) == pytest.approx(0.5) and exponential(8) == pytest.approx(0.25)


def _launch(launcher_args: list[str], out, sst2_dir, tiny_bert_dir, env) -> dict:
    launcher = shutil.which("accelerate")
    if launcher is None:
        pytest.skip("accelerate CLI not on PATH")
    result = subprocess.run(
        [
            launcher,
            "launch",
            *launcher_args,
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "-m",
            "ptuning.cli",
            *train_argv(sst2_dir, tiny_bert_dir, out, "--method", "ptv2", "--prompt-length", "4"),
            *("--epochs", "10", "--lr", "0.05", "--batch-size", "8", "--max-length", "32", "--pooling", "mean"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads((out / "metrics.json").read_text())


def _trained_well(summary: dict, out, sst2_dir) -> None:
    history = summary["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert summary["best"]["accuracy"] >= 0.75
    evaluated = subprocess.run(
        [sys.executable, "-m", "ptuning.cli", "eval", str(out), "--data", str(sst2_dir)],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert json.loads(evaluated.stdout.splitlines()[-1])["accuracy"] == pytest.approx(summary["best"]["accuracy"])


@pytest.mark.slow
def test_accelerate_launch_cpu_command_trains(tmp_path, sst2_dir, tiny_bert_dir):
    """The documented `accelerate launch --num_processes 2 --cpu` (accelerate's CPU launcher runs one process)."""
    out = tmp_path / "cpu"
    summary = _launch(["--num_processes", "2", "--cpu"], out, sst2_dir, tiny_bert_dir, ENV)
    _trained_well(summary, out, sst2_dir)


@pytest.mark.slow
def test_accelerate_two_cpu_processes_data_parallel(tmp_path, sst2_dir, tiny_bert_dir):
    """Two real CPU processes (gloo DDP): each sees half of every epoch."""
    out = tmp_path / "ddp"
    env = {**ENV, "ACCELERATE_USE_CPU": "1"}
    summary = _launch(["--multi_gpu", "--num_processes", "2"], out, sst2_dir, tiny_bert_dir, env)
    assert summary["steps"] == 10 * 4  # 64 examples, 2 processes x batch 8 -> 4 steps per epoch
    _trained_well(summary, out, sst2_dir)


def test_bf16_autocasts_training_and_evaluation_but_keeps_fp32_prompts(tmp_path, sst2_dir, tiny_bert_dir, monkeypatch):
    from ptuning.model import PTuningModel

    seen = []
    original = PTuningModel.forward

    def spy(self, *args, **kwargs):
        enabled = torch.is_autocast_enabled("cpu")
        seen.append((self.training, enabled and torch.get_autocast_dtype("cpu")))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PTuningModel, "forward", spy)
    pipeline.train(request(sst2_dir, tmp_path / "fp32", tiny_bert_dir, epochs=1))  # same process, other precision
    assert seen and not any(dtype for _, dtype in seen)
    seen.clear()
    out = tmp_path / "bf16"
    summary = pipeline.train(request(sst2_dir, out, tiny_bert_dir, epochs=1, mixed_precision="bf16"))
    assert {(True, torch.bfloat16), (False, torch.bfloat16)} <= set(seen)  # both train and eval steps
    seen.clear()
    pipeline.train(request(sst2_dir, tmp_path / "fp32-again", tiny_bert_dir, epochs=1))
    assert seen and not any(dtype for _, dtype in seen)
    assert summary["best"]["accuracy"] >= 0
    prompt = load_file(str(out / "prompt.safetensors"))
    assert prompt and all(t.dtype == torch.float32 for t in prompt.values())


def test_unusable_precision_is_a_one_line_error(tmp_path, sst2_dir, tiny_bert_dir):
    common = train_argv(sst2_dir, tiny_bert_dir, tmp_path / "run", "--epochs", "1")
    for precision, message in [("fp8", "unknown --mixed-precision 'fp8'"), ("fp16", "needs a CUDA GPU")]:
        if precision == "fp16" and torch.cuda.is_available():
            continue
        result = subprocess.run(
            [sys.executable, "-m", "ptuning.cli", *common, "--mixed-precision", precision],
            env=ENV,
            capture_output=True,
            text=True,
        )
        assert result.returncode != 0
        assert message in result.stderr and "Traceback" not in result.stderr
        assert not (tmp_path / "run").exists()  # refused before anything was written


def _varied_features(n: int = 23, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 30, (n,), generator=g).tolist()
    return [
        {"input_ids": torch.randint(5, 100, (k,), generator=g).tolist(), "attention_mask": [1] * k} for k in lengths
    ]


@pytest.mark.parametrize("head_kind", ["sequence", "token"])
def test_length_sorted_evaluation_returns_logits_in_input_order(head_kind):
    from conftest import tiny_backbone

    from ptuning.heads import SequenceClassificationHead
    from ptuning.loop import predict_logits
    from ptuning.model import PTuningModel
    from ptuning.tasks.base import pad_collate
    from ptuning.tasks.tagging import TokenClassificationHead

    torch.manual_seed(0)
    head = SequenceClassificationHead(32, 3, "mean") if head_kind == "sequence" else TokenClassificationHead(32, 4)
    model = PTuningModel(tiny_backbone("bert"), method_config("ptv2", prompt_length=3), head)
    features = _varied_features()
    collate = pad_collate(type("Tok", (), {"pad_token_id": 0})())
    logits = predict_logits(model, features, collate, batch_size=4)
    with torch.no_grad():
        for i, feature in enumerate(features):
            alone = model(**collate([feature]))[0]  # (labels,) or (L, tags)
            got = logits[i] if alone.dim() == 1 else logits[i, : alone.shape[0]]
            assert torch.allclose(got, alone, atol=1e-5), i


def test_group_by_length_batches_similar_lengths_and_covers_every_feature_once():
    from ptuning.loop import _loader, feature_length

    features = [dict(f, idx=i) for i, f in enumerate(_varied_features(n=400, seed=1))]

    def epoch(seed, grouped):
        loader = _loader(features, lambda rows: rows, 16, seed, group_by_length=grouped)
        return [[f["idx"] for f in batch] for batch in loader]

    grouped, shuffled = epoch(7, True), epoch(7, False)
    assert sorted(i for b in grouped for i in b) == list(range(400))
    assert epoch(7, True) == grouped and epoch(8, True) != grouped  # deterministic per seed, new order per epoch

    def padding(batches):
        return sum(len(b) * max(feature_length(features[i]) for i in b) for b in batches)

    assert padding(grouped) < 0.8 * padding(shuffled)
