"""How runs stop: Ctrl-C (checkpoint, exit 130, resumable), a diverged loss (best artifact kept, exit 1), and
--resume refusing a checkpoint made by another run. No file or answer ever holds NaN."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import cli_in_process, save_artifact_of, train_argv, write_sst2
from safetensors.torch import load_file

from ptuning import backbones, batches, loop, pipeline
from ptuning.errors import PTuningError
from ptuning.loop import TrainConfig
from ptuning.method import method_config
from ptuning.model import PTuningModel
from ptuning.stopping import Interrupted, TrainingDiverged
from ptuning.tasks import get_task

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
COMMON = ("--prompt-length", "4", "--batch-size", "8", "--max-length", "32", "--pooling", "mean")


def request(data, out, model_dir, method=None, **train_kw):
    """64 examples, batch 8: 8 steps per epoch."""
    request_kw = {
        k: train_kw.pop(k) for k in ("max_length", "max_train_samples", "task", "task_options") if k in train_kw
    }
    return pipeline.TrainRequest(
        **{"task": "sst2", "max_length": 32, **request_kw},
        data=str(data),
        output=out,
        model=str(model_dir),
        method=method or method_config("ptv2", prompt_length=4),
        train=TrainConfig(**{"epochs": 3, "lr": 1e-2, "batch_size": 8, "seed": 3, **train_kw}),
        pooling="mean",
    )


def strict_json(text: str):
    """JSON as the standard defines it: ``NaN`` and ``Infinity`` are refused."""
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))


def interrupt_at(monkeypatch, step: int) -> None:
    """Deliver a real SIGINT to this process right after the ``step``-th training batch of the run."""
    original, calls = loop.Trainer._step, []

    def step_then_signal(self, batch):
        loss = original(self, batch)
        calls.append(1)
        if len(calls) == step:
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    monkeypatch.setattr(loop.Trainer, "_step", step_then_signal)


def test_ctrl_c_saves_a_checkpoint_at_that_step_and_resume_matches_a_straight_run(
    tmp_path, sst2_dir, tiny_bert_dir, monkeypatch
):
    straight = tmp_path / "straight"
    pipeline.train(request(sst2_dir, straight, tiny_bert_dir, eval_steps=4))

    out = tmp_path / "interrupted"
    interrupt_at(monkeypatch, 11)
    with pytest.raises(Interrupted, match="at step 11; .*--resume"):
        pipeline.train(request(sst2_dir, out, tiny_bert_dir, eval_steps=4))
    monkeypatch.undo()
    summary = strict_json((out / "metrics.json").read_text())
    assert summary["stopped_by"] == "interrupted" and summary["steps"] == 11
    assert strict_json((out / "checkpoint" / "state.json").read_text())["loop"]["step"] == 11

    bars = []

    class Bar(loop.tqdm):
        def __init__(self, *args, **kwargs):
            bars.append((kwargs.get("total"), kwargs.get("initial", 0)))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(loop, "tqdm", Bar)
    resumed = pipeline.train(request(sst2_dir, out, tiny_bert_dir, eval_steps=4, resume=True))
    assert bars[0] == (8, 3) and bars[1] == (8, 0)  # the epoch's full length, its done batches already counted
    assert resumed["stopped_by"] == "epochs" and resumed["steps"] == 24

    a = load_file(str(straight / "checkpoint" / "trainable.safetensors"))
    b = load_file(str(out / "checkpoint" / "trainable.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = [strict_json(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["epoch"]) for r in rows] == [(4, 0.5), (8, 1.0), (12, 1.5), (16, 2.0), (20, 2.5), (24, 3.0)]


def test_ctrl_c_during_an_evaluation_leaves_that_evaluation_to_the_resumed_run(
    tmp_path, sst2_dir, tiny_bert_dir, monkeypatch
):
    original, calls = batches.predict_logits, []

    def signal_during_second_evaluation(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # the guard raises at once inside an evaluation
        return original(*args, **kwargs)

    monkeypatch.setattr(batches, "predict_logits", signal_during_second_evaluation)  # what Task.outputs calls
    out = tmp_path / "run"
    with pytest.raises(Interrupted, match="at step 16; .* holds step 16"):
        pipeline.train(request(sst2_dir, out, tiny_bert_dir))
    monkeypatch.undo()
    assert strict_json((out / "checkpoint" / "state.json").read_text())["loop"]["pending_eval"] == 2.0
    summary = pipeline.train(request(sst2_dir, out, tiny_bert_dir, resume=True))
    assert [(r["epoch"], r["step"]) for r in summary["history"]] == [(1.0, 8), (2.0, 16), (3.0, 24)]
    assert summary["history"][1]["train_loss"] is None  # its batches ran before the interruption


def test_ctrl_c_on_the_command_line_exits_130_and_resume_continues(tmp_path, sst2_dir, tiny_bert_dir):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "ptuning.cli", *train_argv(sst2_dir, tiny_bert_dir, out, *COMMON, "--epochs", "40")]
    process = subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    for line in process.stdout:  # wait for the first evaluation, then press Ctrl-C
        if line.startswith("epoch 1.0:") or time.time() > deadline:
            break
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1].startswith("interrupted at step") and "Traceback" not in stderr
    summary = strict_json((out / "metrics.json").read_text())
    assert summary["stopped_by"] == "interrupted" and 8 <= summary["steps"] < 320
    done = strict_json((out / "checkpoint" / "state.json").read_text())["loop"]
    assert done["step"] == summary["steps"]

    finished = subprocess.run([*args[:-2], "--epochs", "2", "--resume"], env=ENV, capture_output=True, text=True)
    if done["epoch"] >= 2:  # a slow machine may have passed epoch 2 already: extend instead
        finished = subprocess.run([*args, "--resume"], env=ENV, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert f"resumed from {out / 'checkpoint'} at epoch {done['epoch']} step {done['step']}" in finished.stdout
    assert strict_json((out / "metrics.json").read_text())["stopped_by"] == "epochs"


def test_loss_turning_nan_stops_keeps_the_best_artifact_and_writes_no_nan(
    tmp_path, sst2_dir, tiny_bert_dir, monkeypatch, capsys
):
    task_class = type(get_task("sst2"))
    original, calls = task_class.loss, []

    def loss_nan_at_step_10(self, logits, labels):
        calls.append(1)
        loss = original(self, logits, labels)
        return loss * float("nan") if len(calls) >= 10 else loss

    monkeypatch.setattr(task_class, "loss", loss_nan_at_step_10)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as info:
        pipeline.train(request(sst2_dir, out, tiny_bert_dir))
    message = str(info.value)
    assert message.startswith("the training loss became nan at step 10 (epoch 2); lower --lr (this run used 0.01)")
    assert f"the best artifact so far (epoch 1.0) is kept in {out}" in message and "\n" not in message
    summary = strict_json((out / "metrics.json").read_text())
    assert summary["stopped_by"] == "nonfinite_loss" and summary["error"] == message and summary["best_epoch"] == 1.0
    prompt = load_file(str(out / "prompt.safetensors"))
    assert all(torch.isfinite(t).all() for t in prompt.values())
    monkeypatch.undo()
    assert pipeline.evaluate(out, str(sst2_dir))["accuracy"] == pytest.approx(summary["best"]["accuracy"])
    assert "nan" not in capsys.readouterr().out.lower()


def test_diverging_learning_rate_on_the_command_line_exits_1_in_one_line(tmp_path, sst2_dir, tiny_bert_dir):
    out = tmp_path / "run"
    args = train_argv(sst2_dir, tiny_bert_dir, out, *COMMON, "--epochs", "2", "--lr", "1e30")
    result = cli_in_process(*args)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the training loss became nan at step ")
    assert "lower --lr (this run used 1e+30)" in lines[0] and "no artifact was saved" in lines[0]
    summary = strict_json((out / "metrics.json").read_text())
    assert summary["stopped_by"] == "nonfinite_loss" and summary["best"] is None


def test_nan_metrics_are_null_in_files_and_n_a_on_the_console(tmp_path, sst2_dir, tiny_bert_dir, monkeypatch, capsys):
    task_class = type(get_task("sst2"))
    monkeypatch.setattr(task_class, "evaluate", lambda self, logits, examples, alignment=(): {"accuracy": float("nan")})
    out = tmp_path / "run"
    summary = pipeline.train(request(sst2_dir, out, tiny_bert_dir, epochs=2))
    assert summary["best_epoch"] == 2.0  # a NaN score never blocks a later one
    rows = [strict_json(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["accuracy"] for r in rows] == [None, None] and rows[0]["best_accuracy"] is None
    assert strict_json((out / "metrics.json").read_text())["best"] == {"accuracy": None}
    printed = capsys.readouterr().out
    assert "accuracy n/a" in printed and "nan" not in printed.lower()


def nan_artifact(directory: Path, model_dir: Path) -> Path:
    """An artifact whose prompt is NaN: what a diverged run used to leave behind."""
    backbone, _, name = backbones.load_backbone(str(model_dir))
    task = get_task("sst2")
    model = PTuningModel(
        backbone, method_config("ptv2", prompt_length=3), task.build_head(backbone.config.hidden_size, "mean")
    )
    with torch.no_grad():
        model.method.prefix_encoder.embedding.weight.fill_(float("nan"))
    save_artifact_of(directory, model, task, name, backbone, 32, "mean")
    return directory


def test_predict_and_eval_refuse_a_nan_artifact_instead_of_writing_nan(tmp_path, sst2_dir, tiny_bert_dir):
    broken = nan_artifact(tmp_path / "broken", tiny_bert_dir)
    predictions = tmp_path / "predictions.jsonl"
    for args in (
        ["predict", str(broken), "--input", str(sst2_dir / "dev.tsv"), "--output", str(predictions)],
        ["eval", str(broken), "--data", str(sst2_dir)],
    ):
        result = cli_in_process(*args)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "outputs are NaN or infinite for 32 of 32 inputs" in lines[0]
    assert not predictions.exists()


def test_server_answers_a_nan_prediction_with_a_500_not_null(tmp_path, tiny_bert_dir):
    from fastapi.testclient import TestClient

    from ptuning.serve.pool import PromptPool
    from ptuning.serve.server import create_app

    broken = nan_artifact(tmp_path / "broken", tiny_bert_dir)
    pool = PromptPool.from_artifact(broken)
    pool.load(broken, "broken")
    with TestClient(create_app(pool)) as client:
        response = client.post("/v1/predict", json={"task": "broken", "inputs": ["good film"]})
    assert response.status_code == 500
    assert response.json() == {"error": "task 'broken' produced a NaN or infinite score, scores for input 0"}


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory, tiny_bert_dir):
    """A run killed after 3 steps (the test hook): a checkpoint to resume, made with ``request``'s settings."""
    root = tmp_path_factory.mktemp("checkpointed")
    data = write_sst2(root / "sst2")
    out = root / "run"
    pipeline.train(request(data, out, tiny_bert_dir, epochs=1, eval_steps=2, stop_after_steps=3))
    return data, out


def snapshot(directory: Path) -> dict:
    return {
        str(p.relative_to(directory)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in directory.rglob("*")
        if p.is_file()
    }


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"method": method_config("prompt-tuning", prompt_length=4)}, "--method ptv2, not prompt-tuning"),
        ({"method": method_config("ptv2", prompt_length=5)}, "--prompt-length 4, not 5"),
        ({"lr": 2e-2}, "--lr 0.01, not 0.02"),
        ({"batch_size": 4}, "--batch-size 8, not 4"),
        ({"max_length": 24}, "--max-length 32, not 24"),
        ({"seed": 4}, "--seed 3, not 4"),
        ({"max_train_samples": 32}, "--max-train-samples (unset), not 32"),
        ({"eval_steps": None}, "--eval-steps 2, not (unset)"),
        (
            {"task": "text-classification", "task_options": {"text_column": "sentence", "label_column": "label"}},
            "--task sst2, not text-classification; --text-column (unset), not sentence",
        ),
    ],
)
def test_resume_refuses_a_checkpoint_made_with_other_settings(checkpointed, tiny_bert_dir, change, needle):
    data, out = checkpointed
    before = snapshot(out)
    with pytest.raises(PTuningError) as info:
        pipeline.train(request(data, out, tiny_bert_dir, **{"epochs": 1, "eval_steps": 2, "resume": True, **change}))
    message = str(info.value)
    assert message.startswith("--resume: this checkpoint was made with ") and needle in message
    assert "\n" not in message and snapshot(out) == before


def test_resume_refuses_other_data_and_may_extend_the_run(checkpointed, tiny_bert_dir, tmp_path):
    data, out = checkpointed
    other = shutil.copytree(data, tmp_path / "other")
    with pytest.raises(PTuningError, match=f"--data {data.resolve()}, not {other.resolve()}"):
        pipeline.train(request(other, out, tiny_bert_dir, epochs=1, eval_steps=2, resume=True))
    copy = shutil.copytree(out, tmp_path / "copy")
    summary = pipeline.train(
        request(data, copy, tiny_bert_dir, epochs=2, eval_steps=2, patience=50, max_minutes=60, resume=True)
    )
    assert summary["stopped_by"] == "epochs" and summary["steps"] == 16  # epochs, patience, time cap: may change


def test_resume_with_another_method_on_the_command_line_is_one_line_exit_2(checkpointed, tiny_bert_dir):
    data, out = checkpointed
    before = snapshot(out)
    args = train_argv(data, tiny_bert_dir, out, *COMMON, "--epochs", "1", "--eval-steps", "2", "--lr", "0.01")
    args += ["--seed", "3", "--method", "prompt-tuning", "--resume"]
    result = cli_in_process(*args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --resume: this checkpoint was made with --method ptv2, not prompt-tuning "
        "(resume with the same settings, or train into a new --output)"
    ]
    assert snapshot(out) == before


def test_checkpoint_without_recorded_settings_is_still_checked_by_shape(checkpointed, tiny_bert_dir, tmp_path, capsys):
    data, out = checkpointed
    legacy = shutil.copytree(out, tmp_path / "legacy")
    state_path = legacy / "checkpoint" / "state.json"
    state = json.loads(state_path.read_text())
    del state["run"]
    state_path.write_text(json.dumps(state))
    with pytest.raises(PTuningError, match="--resume: this checkpoint was made for another model: method.prefix"):
        pipeline.train(request(data, legacy, tiny_bert_dir, method=method_config("ptv2", prompt_length=5), resume=True))
    assert "records no run settings" in capsys.readouterr().err
