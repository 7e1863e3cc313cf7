"""Settings: every number checked once before anything is written, defaults in one place, --config files."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from conftest import cli_in_process, train_argv

from ptuning import cli, pipeline
from ptuning.errors import PTuningError
from ptuning.loop import TrainConfig

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
SRC = Path(__file__).resolve().parents[1] / "src" / "ptuning"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ptuning.cli", *args], capture_output=True, text=True, env=ENV)


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``ptuning ARGS`` in this process, through the real entry point (exit status, stdout, stderr)."""
    result = cli_in_process(*args)
    return result.returncode, result.stdout, result.stderr


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("scheduler", "cosine", "unknown --scheduler 'cosine'"),
        ("mixed_precision", "fp8", "unknown --mixed-precision 'fp8'"),
        ("lr", float("nan"), "--lr must be a finite number"),
        ("lr", float("inf"), "--lr must be a finite number"),
        ("lr", 0.0, "--lr must be > 0"),
        ("lr", -1.0, "--lr must be > 0"),
        ("lr", 1e35, "--lr 1e+35 is beyond any rate"),
        ("grad_accum", 0, "--grad-accum must be at least 1"),
        ("epochs", 0, "--epochs must be at least 1"),
        ("batch_size", 0, "--batch-size must be at least 1"),
        ("eval_batch_size", -4, "--eval-batch-size must be at least 1"),
        ("eval_steps", 0, "--eval-steps must be at least 1"),
        ("warmup_ratio", 1.0, "--warmup-ratio must be in [0, 1)"),
        ("warmup_ratio", -0.1, "--warmup-ratio must be in [0, 1)"),
        ("weight_decay", float("nan"), "--weight-decay must be a finite number"),
        ("weight_decay", -0.01, "--weight-decay must be >= 0"),
        ("max_grad_norm", 0.0, "--max-grad-norm must be > 0"),
        ("max_grad_norm", float("inf"), "--max-grad-norm must be a finite number"),
        ("patience", 0, "--patience must be at least 1"),
        ("max_minutes", 0.0, "--max-minutes must be > 0"),
        ("max_minutes", float("nan"), "--max-minutes must be a finite number"),
        ("decay_gamma", 0.0, "--decay-gamma must be in (0, 1]"),
        ("decay_gamma", 1.5, "--decay-gamma must be in (0, 1]"),
        ("backbone_dropout", 1.0, "--backbone-dropout 1 is not a rate"),
        ("backbone_dropout", -0.1, "--backbone-dropout -0.1 is not a rate"),
        ("epochs", 2.5, "--epochs must be a whole number"),
    ],
)
def test_train_config_refuses_bad_values_in_one_line(field, value, needle):
    with pytest.raises(PTuningError) as info:
        TrainConfig(**{field: value})
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_train_config_accepts_the_edges_and_none():
    TrainConfig(lr=None, eval_steps=None, patience=None, max_minutes=None, backbone_dropout=None)
    TrainConfig(warmup_ratio=0.0, decay_gamma=1.0, weight_decay=0.0, backbone_dropout=0.0, lr=1e30)


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("max_length", 0, "--max-length must be at least 8"),
        ("max_length", 7, "--max-length must be at least 8"),
        ("max_train_samples", 0, "--max-train-samples must be at least 1"),
        ("max_eval_samples", 0, "--max-eval-samples must be at least 1"),
    ],
)
def test_train_request_refuses_bad_sizes(tmp_path, field, value, needle):
    with pytest.raises(PTuningError, match=needle.replace("[", r"\[")):
        pipeline.TrainRequest(task="sst2", data="x", output=tmp_path / "out", **{field: value})


@pytest.mark.parametrize(
    "flags,needle",
    [
        (("--lr", "nan"), "--lr must be a finite number"),
        (("--lr", "-1"), "--lr must be > 0"),
        (("--grad-accum", "0"), "--grad-accum must be at least 1"),
        (("--max-train-samples", "0"), "--max-train-samples must be at least 1"),
        (("--max-length", "0"), "--max-length must be at least 8"),
        (("--eval-steps", "0"), "--eval-steps must be at least 1"),
        (("--warmup-ratio", "2"), "--warmup-ratio must be in [0, 1)"),
        (("--scheduler", "cosine"), "unknown --scheduler 'cosine'"),
    ],
)
def test_cli_flags_are_checked_before_the_output_exists(
    monkeypatch, capsys, tmp_path, sst2_dir, tiny_bert_dir, flags, needle
):
    out = tmp_path / "never"
    code, _, err = run_main(monkeypatch, capsys, *train_argv(sst2_dir, tiny_bert_dir, out), *flags)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in err
    assert "Traceback" not in err and not out.exists()


def test_bad_number_through_a_real_process_is_one_line_exit_2(tmp_path, sst2_dir, tiny_bert_dir):
    out = tmp_path / "never"
    result = run_cli(*train_argv(sst2_dir, tiny_bert_dir, out), "--grad-accum", "0")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == ["error: --grad-accum must be at least 1, got 0"]
    assert not out.exists()


def test_cli_defaults_are_the_dataclass_defaults():
    import typer

    command = typer.main.get_command(cli.app).commands["train"]
    defaults = {p.name: p.default for p in command.params}
    for f in fields(TrainConfig):
        if f.name != "stop_after_steps":
            assert defaults[f.name] == f.default, f.name
    source = (SRC / "cli.py").read_text()
    assert "epochs: opts.Epochs = TrainConfig.epochs" in source  # read from the dataclass, not copied


def write_yaml(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path


def test_config_file_flags_override_it_and_the_resolved_config_runs_again(tmp_path, sst2_dir, tiny_bert_dir):
    config = write_yaml(
        tmp_path / "run.yaml",
        {
            "task": "sst2",
            "data": str(sst2_dir),
            "model": str(tiny_bert_dir),
            "output": str(tmp_path / "from-file"),
            "prompt_length": 3,
            "epochs": 5,  # overridden below
            "lr": "1e-2",  # YAML 1.1 reads this as a string; the option converts it
            "batch_size": 16,
            "max_length": 32,
            "pooling": "mean",
        },
    )
    first = tmp_path / "first"
    result = cli_in_process("train", "--config", str(config), "--epochs", "1", "--output", str(first))
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "from-file").exists()  # --output on the command line won
    resolved = yaml.safe_load((first / "config.yaml").read_text())
    assert resolved["epochs"] == 1 and resolved["prompt_length"] == 3 and resolved["lr"] == 0.01
    assert resolved["task"] == "sst2" and resolved["max_length"] == 32 and resolved["pooling"] == "mean"
    assert resolved["data"] == str(sst2_dir.resolve()) and resolved["output"] == str(first.resolve())
    summary = json.loads((first / "metrics.json").read_text())
    assert summary["epochs_run"] == 1 and summary["method"]["prompt_length"] == 3

    again = tmp_path / "again"
    result = cli_in_process("train", "--config", str(first / "config.yaml"), "--output", str(again))
    assert result.returncode == 0, result.stderr
    rerun = json.loads((again / "metrics.json").read_text())
    assert rerun["best"] == summary["best"] and rerun["config"] == summary["config"]
    assert yaml.safe_load((again / "config.yaml").read_text()) == {**resolved, "output": str(again.resolve())}


def test_config_file_with_an_unknown_key_is_one_line_naming_it(monkeypatch, capsys, tmp_path, sst2_dir):
    config = write_yaml(tmp_path / "run.yaml", {"task": "sst2", "data": str(sst2_dir), "promt_length": 4})
    out = tmp_path / "never"
    code, _, err = run_main(monkeypatch, capsys, "train", "--config", str(config), "--output", str(out))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "unknown key 'promt_length'" in err and "did you mean 'prompt_length'" in err and not out.exists()
    for body, needle in (("[1, 2]", "expected `option: value` lines"), ("task: [", "not valid YAML")):
        (tmp_path / "bad.yaml").write_text(body)
        code, _, err = run_main(monkeypatch, capsys, "train", "--config", str(tmp_path / "bad.yaml"))
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    missing = run_main(monkeypatch, capsys, "train", "--config", str(tmp_path / "absent.yaml"))
    assert missing[0] == 2 and "no such file" in missing[2]


def test_config_file_cannot_make_a_whole_number_of_a_fraction(monkeypatch, capsys, tmp_path, sst2_dir):
    config = write_yaml(tmp_path / "run.yaml", {"task": "sst2", "data": str(sst2_dir), "epochs": 2.5})
    code, _, err = run_main(monkeypatch, capsys, "train", "--config", str(config), "--output", str(tmp_path / "x"))
    assert code == 2 and "epochs must be a whole number, got 2.5" in err


def test_required_options_may_come_from_the_file_and_are_still_required(monkeypatch, capsys, tmp_path, sst2_dir):
    config = write_yaml(tmp_path / "run.yaml", {"task": "sst2", "data": str(sst2_dir)})
    code, _, err = run_main(monkeypatch, capsys, "train", "--config", str(config))
    assert code == 2 and "Missing option '--output'" in err and "Traceback" not in err


def test_config_file_through_the_typer_runner(tmp_path, sst2_dir):
    """The runner (standalone click) sees the same merge: a file value fills a required option."""
    from typer.testing import CliRunner

    config = write_yaml(tmp_path / "run.yaml", {"task": "sst2", "data": str(sst2_dir), "max_length": 4})
    result = CliRunner().invoke(cli.app, ["train", "--config", str(config), "--output", str(tmp_path / "x")])
    assert isinstance(result.exception, PTuningError) and "--max-length must be at least 8" in str(result.exception)
    assert not (tmp_path / "x").exists()


def test_demo_refuses_a_non_empty_output_without_overwrite(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = run_cli("demo", "--output", str(out))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {out} is not empty; pass --overwrite to replace it"]
    assert (out / "notes.txt").read_text() == "keep me"
    assert "--overwrite" in run_cli("demo", "--help").stdout


OWNED = [
    "loop.py",
    "trainconfig.py",
    "optim.py",
    "batches.py",
    "stopping.py",
    "finite.py",
    "checkpoint.py",
    "runfile.py",
]
OWNED += ["cli.py", "cli_options.py", "serve/server.py"]


@pytest.mark.parametrize("name", OWNED)
def test_functions_and_modules_stay_readable(name):
    """No function over 80 lines, no module over 400: parts a reader can hold in mind."""
    source = (SRC / name).read_text()
    assert len(source.splitlines()) <= 400
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            assert node.end_lineno - start + 1 <= 80, f"{name}:{node.name}"
