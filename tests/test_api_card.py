"""The Python API (`ptuning.load`, `ptuning.train`) and the generated model cards, on a tiny BERT."""

from __future__ import annotations

import json
import shlex

import pytest
import torch
from conftest import write_sst2
from typer.testing import CliRunner

import ptuning
from ptuning import artifact, backbones, card
from ptuning.cli import app
from ptuning.errors import InputError, PTuningError
from ptuning.method import method_config
from ptuning.model import PTuningModel
from ptuning.serve import PromptPool
from ptuning.tasks import TASKS, get_task

WORDS = ["the", "good", "cast", "was", "in", "the", "film", "."]


def save_random(directory, model_dir, task_name: str, method: str = "ptv2", P: int = 3, **state):
    """An artifact of ``task_name`` with a random prompt and head: predictions need no training."""
    backbone, _, name = backbones.load_backbone(str(model_dir))
    task = get_task(task_name)
    if state:
        task = task.from_state({**task.state(), **state})
    torch.manual_seed(0)
    model = PTuningModel(backbone, method_config(method, strict=False, prompt_length=P), task.build_head(32, "mean"))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(std=0.5)
    fingerprint = backbones.fingerprint(backbone)
    artifact.save_artifact(
        directory, model, task=task, backbone_name=name, backbone_fingerprint=fingerprint, max_length=24, pooling="mean"
    )
    return directory


FAMILY_INPUTS = {
    "sst2": ["the good film", "the bad plot was dull"],  # classification, one text
    "cb": [["the cast was good", "the film is good"]],  # classification, a pair
    "copa": [{"premise": "the film was bad", "question": "effect", "choices": ["we left", "we stayed"]}],
    "conll03": [WORDS, WORDS[:3]],  # tagging: a list of words, a tag each
    "squad": [{"question": "what was good ?", "context": "the good cast was in the film and the music was good ."}],
}


@pytest.mark.parametrize("task_name", list(FAMILY_INPUTS))
def test_load_predicts_every_family_as_the_server_does(task_name, tmp_path, tiny_bert_dir):
    path = save_random(tmp_path / task_name, tiny_bert_dir, task_name)
    predictor = ptuning.load(path)
    inputs = FAMILY_INPUTS[task_name]
    rows = predictor.predict(inputs)
    pool = PromptPool.from_artifact(path)
    pool.load(path, "t")
    served = pool.predict([("t", pool.to_example("t", x)) for x in inputs])
    assert len(rows) == len(inputs)
    for got, want in zip(rows, served, strict=True):
        assert got.keys() == want.keys()
        for key, value in want.items():
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, abs=1e-4)
            elif key != "scores":
                assert got[key] == value
    if task_name == "conll03":
        assert [len(r["tags"]) for r in rows] == [len(WORDS), 3]  # one tag per word
    assert predictor.predict([predictor.example])  # the card's example input is one the task takes


def test_predict_refuses_bad_inputs_in_one_line(tmp_path, tiny_bert_dir):
    predictor = ptuning.load(save_random(tmp_path / "cb", tiny_bert_dir, "cb"))
    with pytest.raises(PTuningError, match="list of inputs"):
        predictor.predict("one text, not a list")
    with pytest.raises(InputError, match="needs 2 non-empty"):
        predictor.predict(["only a premise"])
    assert predictor.predict([]) == []
    assert predictor.labels == ("entailment", "contradiction", "neutral") and "cb" in repr(predictor)


def test_every_task_has_an_example_input_it_reads():
    for task in TASKS.values():
        value = task.example_input()
        assert value is not None, task.name
        task.example_from_input(value)  # raises InputError when the example is not of the task's shape


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert_dir):
    """One tiny run through the Python API: (data, output, summary)."""
    root = tmp_path_factory.mktemp("api")
    data = write_sst2(root / "sst2", n_train=16, n_dev=8)
    out = root / "out"
    options = {"model": str(tiny_bert_dir), "prompt_length": 2, "epochs": 1, "batch_size": 4, "max_length": 24}
    summary = ptuning.train(task="sst2", data=data, output=out, lr=0.02, seed=7, **options)
    return data, out, summary


def test_train_takes_the_commands_options_and_load_scores_the_artifact(trained):
    data, out, summary = trained
    assert summary["task"] == "sst2" and summary["method"]["prompt_length"] == 2
    assert ptuning.load(out).evaluate(data)["accuracy"] == pytest.approx(summary["best"]["accuracy"])
    again = ptuning.train(config=out / "config.yaml", output=out.parent / "again", epochs=1)  # config + override
    assert again["best"] == summary["best"]  # the same run: config.yaml holds every setting


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"promt_length": 2}, "has no option promt_length"),
        ({"epochs": 0}, "--epochs"),
        ({"method": "finetune", "prompt_length": 2}, "does not apply to --method finetune"),
    ],
)
def test_train_refuses_what_the_command_refuses(kwargs, needle, tmp_path, sst2_dir):
    with pytest.raises(PTuningError, match=needle):
        ptuning.train(task="sst2", data=sst2_dir, output=tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()
    with pytest.raises(PTuningError, match="needs data, output"):
        ptuning.train(task="sst2")


def test_the_card_says_what_the_artifact_is_and_its_command_reproduces_it(trained, tmp_path):
    data, out, summary = trained
    text = (out / card.CARD_FILE).read_text()
    meta = artifact.read_meta(out)
    for needle in (
        "# sst2: a ptv2 prompt on",
        "| Labels | `0`, `1` |",
        "prompt_length `2`",
        f"weight fingerprint `{meta['backbone']['fingerprint']}`",
        f"| {summary['best']['accuracy']:.4f} |",
        'ptuning.load("out")',
        'print(predictor.predict(["a gripping, funny film"]))',
        "ptuning serve out=out",
        f"{summary['trainable_params']:,}",
    ):
        assert needle in text, needle
    assert meta["selection"]["metrics"] == summary["best"]  # recorded with the artifact, at save time
    command = next(line for line in text.splitlines() if line.startswith("- Equivalent command: `"))
    argv = shlex.split(command.split("`")[1])
    assert argv[:2] == ["ptuning", "train"] and "--lr" in argv and "--seed" in argv
    rerun = tmp_path / "rerun"
    argv[argv.index("--output") + 1] = str(rerun)
    result = CliRunner().invoke(app, argv[1:])
    assert result.exit_code == 0, result.output
    assert json.loads((rerun / "metrics.json").read_text())["best"] == summary["best"]


def test_eval_adds_its_row_and_card_regenerates_an_old_artifact(trained, tmp_path):
    data, out, _ = trained
    old = tmp_path / "old"
    old.mkdir()
    for name in (artifact.META, artifact.WEIGHTS, "metrics.json"):  # an artifact from before cards
        (old / name).write_bytes((out / name).read_bytes())
    result = CliRunner().invoke(app, ["card", str(old)])
    assert result.exit_code == 0, result.output
    text = (old / card.CARD_FILE).read_text()
    assert "No training record" in text and "selected the checkpoint" in text
    scores = CliRunner().invoke(app, ["eval", str(old), "--data", str(data)])
    assert scores.exit_code == 0, scores.output
    accuracy = json.loads(scores.output.strip().splitlines()[-1])["accuracy"]
    text = (old / card.CARD_FILE).read_text()
    assert f"| validation (8 examples) | {accuracy:.4f} |" in text and "`ptuning eval old --data " in text


def test_a_card_that_cannot_be_written_warns_and_keeps_the_artifact(tmp_path, tiny_bert_dir, monkeypatch, capsys):
    """The card documents the artifact; a failure writing it must not end the run that saved the weights."""

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(card, "write_card", broken)
    directory = save_random(tmp_path / "a", tiny_bert_dir, "sst2")
    assert "model card not written (OSError: disk full)" in capsys.readouterr().out
    assert not (directory / "README.md").exists()
    assert "label" in ptuning.load(directory).predict(["fine"])[0]
