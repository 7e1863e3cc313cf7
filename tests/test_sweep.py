"""``ptuning sweep``: the search space, resume semantics, shared storage, pruning, the best artifact.

Tiny random BERT, toy SST-2 data, 1-3 epochs of 16 examples: each trial takes about a second.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import write_sst2

from ptuning import cli, pipeline
from ptuning.errors import PTuningError
from ptuning.loop import TrainConfig
from ptuning.method import method_class, method_config
from ptuning.pipeline import TrainRequest
from ptuning.sweep.space import build_space, suggest, without_fixed
from ptuning.sweep.storage import HOST
from ptuning.sweep.study import Sweep, SweepRequest, run_sweep
from ptuning.tasks import get_task

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
SRC = Path(__file__).resolve().parents[1] / "src" / "ptuning"
SMALL = {"prompt_length": {"low": 2, "high": 6}}  # short prompts: fast trials


@pytest.fixture
def toy(tmp_path) -> Path:
    return write_sst2(tmp_path / "sst2", n_train=16, n_dev=8)


def request(data, model_dir, out, trials=2, *, epochs=1, method="ptv2", space=SMALL, **kw) -> SweepRequest:
    base = TrainRequest(
        task="sst2",
        data=str(data),
        output=Path(out) / "trials",
        model=str(model_dir),
        method=method_config(method, **kw.pop("method_options", {})),
        train=TrainConfig(epochs=epochs, batch_size=8),
        max_length=32,
        pooling="mean",
    )
    return SweepRequest(base=base, output=Path(out), trials=trials, space=space, progress=False, **kw)


def load(out: Path, name: str = "ptuning-sst2-ptv2") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}")


def states(study) -> list[str]:
    return [t.state.name for t in study.get_trials()]


# -- the space -----------------------------------------------------------------------------------
def test_default_spaces_are_declared_per_method_and_task_family():
    ptv2 = {p.name: p for p in method_class("ptv2").search_space()}
    assert ptv2["lr"].when == ("reparam", False) and ptv2["lr_reparam"].when == ("reparam", True)
    assert ptv2["lr_reparam"].target == "lr" and ptv2["lr_reparam"].high <= ptv2["lr"].low * 5
    assert ptv2["prompt_length"].log and ptv2["prompt_length"].integer
    assert ptv2["backbone_dropout"].choices == (0.0, None)
    finetune = {p.name: p for p in method_class("finetune").search_space()}
    assert "prompt_length" not in finetune and finetune["lr"].high <= 1e-4
    for task, high in (("cb", 256), ("conll03", 512), ("squad", 512)):
        lengths = {p.name: p for p in build_space("ptv2", get_task(task).sweep_prompt_lengths)}["prompt_length"]
        assert lengths.high == high
    prompt = {p.name: p for p in method_class("prompt-tuning").search_space()}
    assert prompt["lr"].low == pytest.approx(3e-3) and "prompt_length" in prompt


def test_space_overrides_merge_drop_and_fixed_flags():
    space = build_space("ptv2", (4, 256), {"lr": {"high": 0.01}, "reparam": [False], "lr_reparam": None})
    named = {p.name: p for p in space}
    assert named["lr"].low == 1e-3 and named["lr"].high == 0.01 and named["lr"].when == ("reparam", False)
    assert named["reparam"].choices == (False,) and "lr_reparam" not in named
    kept, dropped = without_fixed(space, {"lr", "prompt_length"})
    assert dropped == ["lr", "prompt_length"] and {p.name for p in kept} == set(named) - {"lr", "prompt_length"}
    # a conditional parameter is sampled only when its condition holds
    trial = optuna.trial.FixedTrial({"reparam": True, "lr_reparam": 3e-4, "prompt_length": 8, "warmup_ratio": 0.1,
                                     "backbone_dropout": 0.0})  # fmt: skip
    values = suggest(trial, build_space("ptv2", (4, 256)), lambda option: None)
    assert values["lr_reparam"] == 3e-4 and "lr" not in values and "prefix_init_std" not in values


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"foo": {"low": 1, "high": 2}}, "unknown parameter 'foo'"),
        ({"prompt_lenght": {"low": 1, "high": 2}}, "did you mean 'prompt_length'"),
        ({"lr": {"low": float("nan"), "high": 0.1}}, "low must be a finite number"),
        ({"lr": {"low": 0.1, "high": 0.01}}, "low 0.1 must be below high 0.01"),
        ({"warmup_ratio": {"low": 0.0, "high": 0.1, "log": True}}, "a log range needs low > 0"),
        ({"prompt_length": {"low": 2.5, "high": 8}}, "low must be a whole number"),
        ({"lr": {"low": 1e-3, "hight": 1e-2}}, "unknown key 'hight'"),
        ({"reparam": []}, "choices must be a non-empty list"),
        ({"lr_reparam": {"when": None}}, "when must be one `name: value` pair"),
        ({"lr": {"when": {"reparam": True}}}, "lr and lr_reparam both set lr"),
        ({"nothere": None}, "not in the default space"),
    ],
)
def test_bad_space_overrides_are_one_line_errors(override, message):
    with pytest.raises(PTuningError, match=message) as caught:
        build_space("ptv2", (4, 256), override)
    assert "\n" not in str(caught.value)


def test_values_each_option_refuses_are_refused_before_the_study(toy, tiny_bert_dir, tmp_path):
    for override, message in (
        ({"warmup_ratio": {"low": 0.0, "high": 1.5}}, "warmup_ratio 1.5: --warmup-ratio must be in"),
        ({"prompt_length": {"low": 2, "high": 5000}}, "prompt_length 5000: --prompt-length 5000 is out of range"),
        ({"scheduler": ["linear", "cosine"]}, "scheduler 'cosine': unknown --scheduler"),
    ):
        with pytest.raises(PTuningError, match=message):
            Sweep(request(toy, tiny_bert_dir, tmp_path / "out", space=override))
    with pytest.raises(PTuningError, match="does not apply to --method finetune|unknown parameter 'prompt_length'"):
        Sweep(request(toy, tiny_bert_dir, tmp_path / "out", method="finetune"))
    assert not (tmp_path / "out").exists()


def test_the_cli_takes_every_train_option_and_refuses_bad_numbers_in_one_line(
    toy, tiny_bert_dir, tmp_path, monkeypatch, capsys
):
    import typer

    commands = typer.main.get_command(cli.app).commands
    train = {p.name for p in commands["train"].params} - {"resume", "overwrite", "max_minutes"}
    sweep = {p.name for p in commands["sweep"].params}
    assert train <= sweep and {"trial_max_minutes", "max_minutes", "trials", "space", "storage", "seeds"} <= sweep
    space = tmp_path / "space.yaml"
    space.write_text("lr: {low: .nan, high: 0.1}\n")
    base = ["ptuning", "sweep", "--task", "sst2", "--data", str(toy), "--model", str(tiny_bert_dir)]
    for extra, message in (
        (["--trials", "0"], "--trials must be at least 1, got 0"),
        (["--trials", "-2"], "--trials must be at least 1, got -2"),
        (["--trials", "2", "--method", "nope"], "unknown method 'nope'"),
        (["--trials", "2", "--space", str(space)], f"--space {space}: lr: low must be a finite number"),
        (["--trials", "2", "--seeds", "1,x"], "--seeds takes comma-separated whole numbers"),
        (["--trials", "2", "--max-minutes", "nan"], "--max-minutes must be a finite number > 0"),
        (["--trials", "2", "--storage", "not a url"], "--storage not a url is not a database URL"),
        (["--trials", "2", "--epochs", "0"], "--epochs must be at least 1"),
        (["--trials", "2", "--task", "sst2,cb"], "ptuning sweep searches one task"),
        (["--trials", "2", "--init-from", str(toy)], "--init-from: the stored prompt fixes reparam, prompt_length"),
    ):
        monkeypatch.setattr(sys, "argv", [*base, "--output", str(tmp_path / "o"), *extra])
        with pytest.raises(SystemExit) as exited:
            cli.main()
        err = capsys.readouterr().err.strip()
        assert exited.value.code == 2 and err.startswith("error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "o" / "study.db").exists()


# -- the study -----------------------------------------------------------------------------------
def test_sweep_keeps_only_the_best_artifact_and_writes_summary_and_plots(toy, tiny_bert_dir, tmp_path):
    out = tmp_path / "out"
    summary = run_sweep(request(toy, tiny_bert_dir, out, trials=3, sampler_seed=0, method_options={"prompt_length": 4}))
    study = load(out)
    assert states(study) == ["COMPLETE"] * 3
    first = study.trials[0]  # the fixed run's own values come first: the sweep never ends below the defaults on dev
    assert first.params == {"reparam": False, "lr": 5e-3, "prefix_init_std": 0.02, "prompt_length": 4,
                            "warmup_ratio": 0.06, "backbone_dropout": None}  # fmt: skip
    assert summary["best"]["value"] == max(t.value for t in study.trials)
    assert summary["best"]["trial"] == study.best_trial.number and summary["trials_finished"] == 3
    assert [row["state"] for row in summary["trials"]] == ["complete"] * 3
    assert json.loads((out / "summary.json").read_text())["best"]["trial"] == study.best_trial.number
    best = out / "best"
    assert json.loads((best / "sweep_trial.json").read_text())["trial"] == study.best_trial.number
    assert not (best / "checkpoint").exists() and not (out / "trials").exists()  # nothing large left behind
    scored = pipeline.evaluate(best, str(toy))
    assert scored["accuracy"] == pytest.approx(summary["best"]["value"], abs=1e-6)
    for name in ("plot_prompt_length.png", "plot_learning_rate.png", "plot_history.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_continues_the_study_and_trials_is_its_total(toy, tiny_bert_dir, tmp_path):
    out = tmp_path / "out"
    run_sweep(request(toy, tiny_bert_dir, out, trials=2))
    run_sweep(request(toy, tiny_bert_dir, out, trials=2))  # nothing missing: nothing runs
    assert states(load(out)) == ["COMPLETE"] * 2
    run_sweep(request(toy, tiny_bert_dir, out, trials=3))
    assert states(load(out)) == ["COMPLETE"] * 3
    with pytest.raises(PTuningError, match=r"made by another sweep \(epochs: 1 there, 2 here\)"):
        run_sweep(request(toy, tiny_bert_dir, out, trials=3, epochs=2))


class InterruptAt(optuna.pruners.BasePruner):
    """Ctrl-C in the middle of one trial (raised where the pruner is asked, after an evaluation)."""

    def __init__(self, number: int) -> None:
        self.number = number

    def prune(self, study, trial) -> bool:
        if trial.number == self.number:
            raise KeyboardInterrupt
        return False


def test_an_interrupted_trial_is_retried_from_its_checkpoint(toy, tiny_bert_dir, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt, match="during trial 1 of the sweep.*retried from its checkpoint"):
        run_sweep(request(toy, tiny_bert_dir, out, trials=2, epochs=3, pruner=InterruptAt(1)))
    study = load(out)
    interrupted, retry = study.trials[1], study.trials[2]
    assert interrupted.state.name == "FAIL" and interrupted.user_attrs["interrupted"]
    assert retry.state.name == "WAITING" and retry.user_attrs["retry_of"] == 1
    assert (out / "trials" / "trial-1" / "checkpoint").is_dir()
    summary = run_sweep(request(toy, tiny_bert_dir, out, trials=2, epochs=3))
    retry = load(out).trials[2]
    assert retry.state.name == "COMPLETE" and retry.params == interrupted.params
    assert sorted(retry.intermediate_values) == [1, 2, 3]  # epochs 1-2 from the first attempt, 3 after the resume
    assert retry.intermediate_values[2] == interrupted.intermediate_values[2]
    assert summary["trials_finished"] == 2 and not (out / "trials").exists()


def test_an_interrupt_before_any_score_leaves_a_summary_and_no_plots(toy, tiny_bert_dir, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt, match="during trial 0 of the sweep"):
        run_sweep(request(toy, tiny_bert_dir, out, trials=1, epochs=2, pruner=InterruptAt(0)))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"] is None and summary["plots"] == [] and not list(out.glob("*.png"))
    assert [row["state"] for row in summary["trials"]] == ["fail", "waiting"]  # interrupted, and queued again


def test_a_trial_whose_process_died_is_retried(toy, tiny_bert_dir, tmp_path):
    out = tmp_path / "out"
    sweep_request = request(toy, tiny_bert_dir, out, trials=1)
    run_sweep(sweep_request)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    study = load(out)
    orphan = study.ask()  # what kill -9 leaves: a RUNNING trial whose process is gone
    orphan.set_user_attr("host", HOST)
    orphan.set_user_attr("pid", dead.pid)
    sweep = Sweep(sweep_request)
    suggest(orphan, sweep.space, sweep.fixed)
    summary = run_sweep(request(toy, tiny_bert_dir, out, trials=2))
    trials = load(out).trials
    assert trials[orphan.number].state.name == "FAIL"
    retries = [t for t in trials if t.user_attrs.get("retry_of") == orphan.number]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE"
    assert retries[0].params == trials[orphan.number].params and summary["trials_finished"] == 2


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def test_pruned_trials_stop_early_and_leave_nothing(toy, tiny_bert_dir, tmp_path):
    out = tmp_path / "out"
    summary = run_sweep(request(toy, tiny_bert_dir, out, trials=2, epochs=3, pruner=AlwaysPrune()))
    study = load(out)
    assert states(study) == ["PRUNED", "PRUNED"]
    for trial in study.trials:
        assert sorted(trial.intermediate_values) == [1, 2]  # never at the first evaluation; stopped at the second
        assert trial.user_attrs["stopped_by"] == "pruned" and trial.user_attrs["epochs_run"] == 2
    assert summary["best"] is None and not (out / "best").exists() and not (out / "trials").exists()
    assert (out / "plot_history.png").is_file()  # pruned trials are drawn at their last score


def test_the_default_pruner_is_the_median_rule(toy, tiny_bert_dir, tmp_path):
    pruner = Sweep(request(toy, tiny_bert_dir, tmp_path / "out", trials=20)).pruner()
    assert isinstance(pruner, optuna.pruners.MedianPruner)


def test_the_training_hook_stops_a_run(toy, tiny_bert_dir, tmp_path):
    rows = []

    def hook(row):
        rows.append(row)
        return "pruned" if len(rows) == 2 else None

    base = request(toy, tiny_bert_dir, tmp_path, epochs=4).base
    summary = pipeline.train(base, on_evaluation=hook)
    assert summary["stopped_by"] == "pruned" and summary["epochs_run"] == 2
    assert [row["epoch"] for row in rows] == [1.0, 2.0] and math.isfinite(rows[0]["accuracy"])


def test_seeds_retrain_the_best_configuration(toy, tiny_bert_dir, tmp_path, capsys):
    out = tmp_path / "out"
    summary = run_sweep(request(toy, tiny_bert_dir, out, trials=1, seeds=(1, 2)))
    seeds = summary["seeds"]
    assert seeds["trial"] == 0 and seeds["seeds"] == [1, 2] and len(seeds["values"]) == 2
    assert seeds["mean"] == pytest.approx(sum(seeds["values"]) / 2)
    assert seeds["std"] == pytest.approx(abs(seeds["values"][0] - seeds["values"][1]) / math.sqrt(2))
    assert "over seeds 1,2: dev accuracy" in capsys.readouterr().out
    for seed in (1, 2):
        run = json.loads((out / "seeds" / f"seed-{seed}" / "metrics.json").read_text())
        assert run["config"]["seed"] == seed and not (out / "seeds" / f"seed-{seed}" / "checkpoint").exists()
    run_sweep(request(toy, tiny_bert_dir, out, trials=1, seeds=(1, 2)))
    assert "re-training" not in capsys.readouterr().out  # done seeds are not trained again


# -- several processes -----------------------------------------------------------------------------
def sweep_argv(data, model_dir, out, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ptuning.cli", "sweep", "--task", "sst2", "--data", str(data), "--model",
            str(model_dir), "--output", str(out), "--batch-size", "8", "--max-length", "32", "--pooling", "mean",
            *extra]  # fmt: skip


@pytest.mark.slow
def test_two_processes_share_one_sqlite_study(tmp_path, tiny_bert_dir):
    data = write_sst2(tmp_path / "sst2", n_train=16, n_dev=8)
    space = tmp_path / "space.yaml"
    space.write_text("prompt_length: {low: 2, high: 6}\n")
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    extra = ("--trials", "4", "--epochs", "2", "--space", str(space), "--storage", url)
    runs = [
        subprocess.Popen(
            sweep_argv(data, tiny_bert_dir, tmp_path / f"out{i}", *extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )  # fmt: skip
        for i in range(2)
    ]
    outputs = [run.communicate(timeout=600) for run in runs]
    for run, (_, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err
    study = optuna.load_study(study_name="ptuning-sst2-ptv2", storage=url)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 4  # N between them, not N each, not more
    ran = [int(line.split()[1]) for out, _ in outputs for line in out.splitlines() if line.startswith("trial ")]
    assert sorted(ran) == sorted(t.number for t in finished)  # every trial ran once, in one process
    assert {t.user_attrs["pid"] for t in finished} <= {run.pid for run in runs}


@pytest.mark.slow
def test_sigterm_mid_trial_then_the_same_command_finishes(tmp_path, tiny_bert_dir):
    data = write_sst2(tmp_path / "sst2", n_train=32, n_dev=8)
    out = tmp_path / "out"
    # 30 epochs that patience cannot cut short: on an idle machine 4 epochs of the tiny model ended between two
    # polls, so the signal came after the trial had finished (a flaky failure in a clean-clone CI run)
    extra = ("--trials", "1", "--epochs", "30", "--patience", "30", "--prompt-length", "4")
    argv = sweep_argv(data, tiny_bert_dir, out, *extra)
    run = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 300
    while not any(p.stat().st_size for p in out.glob("trials/trial-*/metrics.jsonl")):  # the first epoch ended
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.2)
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=300)
    assert run.returncode == 130 and "interrupted" in err and "the same command continues the study" in err, err
    again = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=600)
    assert again.returncode == 0, again.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials_finished"] == 1 and (out / "best" / "ptuning.json").is_file()
    assert any("retry_of" in row for row in summary["trials"])  # the interrupted trial ran again
    assert summary["fixed_by_flags"] == ["prompt_length"]
    assert json.loads((out / "best" / "ptuning.json").read_text())["method"]["prompt_length"] == 4


@pytest.mark.parametrize("name", [*(f"sweep/{p.name}" for p in (SRC / "sweep").glob("*.py")), "method/space.py"])
def test_sweep_modules_stay_readable(name):
    """No function over 80 lines, no module over 400 (the rule test_settings.py checks for the loop's modules)."""
    import ast

    source = (SRC / name).read_text()
    assert len(source.splitlines()) <= 400
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            assert node.end_lineno - start + 1 <= 80, f"{name}:{node.name}"
