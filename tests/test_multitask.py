"""Multi-task prompts: mixture sampling, one shared prompt with a head per task, multi-task artifacts
(eval, predict, serve any of their tasks), and --init-from (start a run from a stored prompt)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
import yaml
from conftest import tiny_backbone, write_cb, write_sst2
from test_settings import run_main

from ptuning import artifact, backbones, mixture, pipeline, warmstart
from ptuning.errors import PTuningError
from ptuning.loop import TrainConfig
from ptuning.method import method_config
from ptuning.model import PTuningModel
from ptuning.serve.launch import named_artifacts
from ptuning.serve.pool import PromptPool
from ptuning.tasks import get_task


def request(output, model_dir, **fields) -> pipeline.TrainRequest:
    fields.setdefault("method", method_config("ptv2", prompt_length=3))
    fields.setdefault("train", TrainConfig(epochs=1, lr=1e-2, batch_size=4))
    return pipeline.TrainRequest(output=output, model=str(model_dir), max_length=32, **fields)


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A folder with one sub-folder per task, as ``--task sst2,cb --data PARENT`` reads it."""
    root = tmp_path_factory.mktemp("mixture")
    write_sst2(root / "sst2", n_train=24, n_dev=12)
    write_cb(root / "cb")
    return root


@pytest.fixture(scope="module")
def mtl(parent, tiny_bert_dir, tmp_path_factory):
    """A multi-task artifact over sst2 and cb: ``(output, summary)``."""
    out = tmp_path_factory.mktemp("runs") / "mtl"
    summary = pipeline.train(request(out, tiny_bert_dir, task="sst2,cb", data=str(parent), mix_temperature=2.0))
    return out, summary


def test_mixture_probabilities_follow_the_temperature_and_weights():
    assert mixture.probabilities([900, 100], [1, 1], 1.0) == pytest.approx([0.9, 0.1])
    assert mixture.probabilities([900, 100], [1, 1], 2.0) == pytest.approx([0.75, 0.25])  # 30 : 10
    assert mixture.probabilities([900, 100], [1, 1], 1e6) == pytest.approx([0.5, 0.5], abs=1e-4)
    assert mixture.probabilities([900, 100], [1, 2], 1.0) == pytest.approx([900 / 1100, 200 / 1100])


def test_sampler_draws_single_task_batches_in_those_proportions():
    sizes, probs = [900, 100], mixture.probabilities([900, 100], [1, 1], 2.0)
    counts, passes = Counter(), Counter()
    for seed in range(20):
        sampler = mixture.MixtureBatchSampler(sizes, probs, 10, seed)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 100  # ceil(1000 / 10): what the schedule counts
        for batch in batches:
            task = int(batch[0] >= 900)
            assert all(int(i >= 900) == task for i in batch) and 0 < len(batch) <= 10  # one task per batch
            counts[task] += 1
        if seed == 0:
            passes.update(i for batch in batches if batch[0] < 900 for i in batch)
    assert counts[0] / sum(counts.values()) == pytest.approx(0.75, abs=0.03)
    assert max(passes.values()) == 1  # the big task's first pass has not wrapped: no example twice
    one = mixture.MixtureBatchSampler([10], [1.0], 4, seed=7)
    expected = torch.randperm(10, generator=torch.Generator().manual_seed(7)).tolist()
    assert [i for batch in one for i in batch] == expected and [len(b) for b in one] == [4, 4, 2]


def test_tasks_file_and_flags_errors_are_one_line(monkeypatch, capsys, tmp_path, parent):
    def refused(body, *extra) -> str:
        path = tmp_path / "mixture.yaml"
        path.write_text(body if isinstance(body, str) else yaml.safe_dump(body))
        args = ("--tasks-file", str(path)) if body is not None else ()
        code, _, err = run_main(monkeypatch, capsys, "train", *args, "--output", str(tmp_path / "o"), *extra)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert not (tmp_path / "o").exists()
        return err

    sst2 = str(parent / "sst2")
    assert "unknown task 'nope'" in refused({"tasks": [{"task": "nope", "data": sst2}]})
    assert "data for cb not found" in refused({"tasks": [{"task": "cb", "data": str(tmp_path / "absent")}]})
    for weight in (0, -1, "heavy", float("nan")):
        assert "weight must be a finite number > 0" in refused(
            {"tasks": [{"task": "sst2", "data": sst2, "weight": weight}]}
        )
    assert "listed twice" in refused({"tasks": [{"task": "sst2", "data": sst2}] * 2})
    assert "unknown key 'wieght'" in refused({"tasks": [{"task": "sst2", "data": sst2, "wieght": 2}]})
    assert "expected `tasks:`" in refused({"task": "sst2"})
    assert "not valid YAML" in refused("tasks: [")
    good = {"tasks": [{"task": "sst2", "data": sst2}]}
    for temperature in ("0", "nan", "inf", "-2"):
        assert "--mix-temperature must be a finite number > 0" in refused(good, "--mix-temperature", temperature)
    assert "drop --task and --data" in refused(good, "--task", "sst2")
    assert "has no rte/ folder" in refused(None, "--task", "sst2,rte", "--data", str(parent))
    assert "give --task and --data" in refused(None, "--task", "sst2")
    assert "--group-by-length does not apply" in refused(good, "--group-by-length")
    only = refused(None, "--task", "sst2", "--data", sst2, "--mix-temperature", "2")
    assert "--mix-temperature applies to a multi-task run" in only
    from gen_fixtures import write_e2e

    e2e = str(write_e2e(tmp_path / "e2e"))
    mixed_generation = refused({"tasks": [{"task": "sst2", "data": sst2}, {"task": "e2e", "data": e2e}]})
    assert "e2e generates text with the LM head: train it alone, not in a mixture" in mixed_generation


def test_one_task_mixture_trains_exactly_like_the_single_task_run(parent, tiny_bert_dir, tmp_path):
    """The mixture path (sampler, task-routed head, per-task loss and metrics) adds nothing of its own."""
    single = pipeline.train(request(tmp_path / "single", tiny_bert_dir, task="sst2", data=str(parent / "sst2")))
    tasks_file = tmp_path / "one.yaml"
    tasks_file.write_text(yaml.safe_dump({"tasks": [{"task": "sst2", "data": str(parent / "sst2")}]}))
    import ptuning  # the Python API, with the command line's options: the same request

    settings = {"model": str(tiny_bert_dir), "prompt_length": 3, "epochs": 1, "lr": 1e-2, "batch_size": 4}
    mixed = ptuning.train(tasks_file=str(tasks_file), output=tmp_path / "mixed", max_length=32, **settings)
    assert mixed["best"]["sst2/accuracy"] == single["best"]["accuracy"] == mixed["best"]["mean"]
    assert [row["train_loss"] for row in mixed["history"]] == pytest.approx(
        [r["train_loss"] for r in single["history"]]
    )
    _, a = artifact.read_verified(tmp_path / "single", tiny_backbone_of(tiny_bert_dir))
    _, b = artifact.read_verified(tmp_path / "mixed", tiny_backbone_of(tiny_bert_dir))
    assert torch.allclose(a["prefix"], b["prefix"], atol=1e-6)
    assert torch.allclose(a["head.classifier.weight"], b["heads.sst2.classifier.weight"], atol=1e-6)


def tiny_backbone_of(model_dir):
    from transformers import AutoModel

    return AutoModel.from_pretrained(model_dir)


def test_mtl_artifact_holds_the_shared_prompt_and_a_head_per_task(mtl, parent):
    out, summary = mtl
    meta = artifact.read_meta(out)
    assert meta["format_version"] == 3 and artifact.task_names(meta) == ["sst2", "cb"]
    assert meta["tasks"][1]["labels"] == ["entailment", "contradiction", "neutral"]
    best = summary["best"]
    assert best["mean"] == pytest.approx((best["sst2/accuracy"] + best["cb/accuracy"]) / 2)
    assert summary["main_metric"] == "mean" and [m["task"] for m in summary["mixture"]] == ["sst2", "cb"]
    assert summary["mixture"][0]["probability"] == pytest.approx(24**0.5 / (24**0.5 + 24**0.5))
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["task"] == "sst2,cb" and config["mix_temperature"] == 2.0


def test_eval_and_predict_pick_one_task_and_reproduce_the_training_scores(mtl, parent, tmp_path):
    out, summary = mtl
    for name in ("sst2", "cb"):
        scores = pipeline.evaluate(out, str(parent / name), task=name)
        assert scores["task"] == name and scores["accuracy"] == pytest.approx(summary["best"][f"{name}/accuracy"])
    with pytest.raises(PTuningError, match=r"multi-task artifact \(sst2, cb\): choose one"):
        pipeline.evaluate(out, str(parent / "cb"))
    with pytest.raises(PTuningError, match="holds no head for rte; its tasks: sst2, cb"):
        pipeline.evaluate(out, str(parent / "cb"), task="rte")
    source = tmp_path / "cb.jsonl"
    source.write_text(json.dumps({"premise": "the movie was good", "hypothesis": "the plot is good"}) + "\n")
    assert pipeline.predict(out, source, tmp_path / "cb-out.jsonl", task="cb") == 1
    row = json.loads((tmp_path / "cb-out.jsonl").read_text())
    assert row["label"] in ("entailment", "contradiction", "neutral")


def test_cli_eval_takes_task(monkeypatch, capsys, mtl, parent):
    out, summary = mtl
    code, stdout, err = run_main(monkeypatch, capsys, "eval", str(out), "--data", str(parent / "cb"), "--task", "cb")
    assert code == 0, err
    assert json.loads(stdout)["accuracy"] == pytest.approx(summary["best"]["cb/accuracy"])
    code, _, err = run_main(monkeypatch, capsys, "eval", str(out), "--data", str(parent / "cb"))
    assert code == 2 and "choose one of its tasks" in err and len(err.strip().splitlines()) == 1


def test_pool_serves_every_task_of_a_multitask_artifact(mtl, tiny_bert_dir):
    out, _ = mtl
    assert named_artifacts([str(out)]) == [("sst2", str(out), "sst2"), ("cb", str(out), "cb")]
    assert named_artifacts([f"m={out}"]) == [("m-sst2", str(out), "sst2"), ("m-cb", str(out), "cb")]
    assert named_artifacts([f"x={out}:cb", f"{out}:sst2"]) == [("x", str(out), "cb"), ("sst2", str(out), "sst2")]
    with pytest.raises(PTuningError, match="task name 'cb' is given twice"):
        named_artifacts([str(out), f"{out}:cb"])
    pool = PromptPool.from_artifact(out)
    for name, path, task in named_artifacts([str(out)]):
        pool.load(path, name, task=task)
    rows = [("cb", ["the movie was good", "the plot is good"]), ("sst2", "a good film"), ("cb", ["a b", "the"])]
    mixed = pool.predict([(name, pool.to_example(name, value)) for name, value in rows])
    for (name, value), got in zip(rows, mixed, strict=True):
        model, tokenizer, task, meta = artifact.load_artifact(out, task=name)
        example = task.example_from_input(value)
        featurized = task.featurize([example], tokenizer, model.token_budget(meta["max_length"]))
        with torch.no_grad():
            logits = model(**task.collator(tokenizer)(featurized.features))
        alone = task.predictions(logits, [example], featurized.alignment)[0]
        assert got["label"] == alone["label"]
        assert got["scores"] == pytest.approx(alone["scores"], abs=1e-5)
    assert {p["name"]: p["task"] for p in pool.describe()} == {"sst2": "sst2", "cb": "cb"}


def test_single_task_artifacts_still_load_and_refuse_another_task(parent, tiny_bert_dir, tmp_path):
    out = tmp_path / "single"
    pipeline.train(request(out, tiny_bert_dir, task="cb", data=str(parent / "cb")))
    assert artifact.read_meta(out)["format_version"] == 2  # older versions still read single-task artifacts
    assert pipeline.evaluate(out, str(parent / "cb"))["task"] == "cb"
    assert pipeline.evaluate(out, str(parent / "cb"), task="cb")["task"] == "cb"
    with pytest.raises(PTuningError, match="was trained on cb, not sst2"):
        pipeline.evaluate(out, str(parent / "sst2"), task="sst2")


# -- --init-from ---------------------------------------------------------------------------------


def fresh_model(model_dir, task_name: str, prompt_length: int = 3, method: str = "ptv2", **options):
    """A new model on the tiny backbone, as a run builds it before --init-from: ``(model, task, fingerprint)``."""
    task = get_task(task_name)
    config = method_config(method, prompt_length=prompt_length, **options)
    model = PTuningModel(tiny_backbone_of(model_dir), config, task.build_head(32, "cls"))
    return model, task, backbones.fingerprint(model.backbone)


def test_init_from_loads_the_stored_prompt_and_the_head_with_the_same_labels(mtl, tiny_bert_dir):
    out, _ = mtl
    _, stored = artifact.read_verified(out, tiny_backbone_of(tiny_bert_dir))
    model, task, fingerprint = fresh_model(tiny_bert_dir, "cb")
    lines = warmstart.start_from(out, model, [task], fingerprint)
    assert torch.equal(model.method.fold()["prefix"], stored["prefix"])  # step 0 is the stored prompt
    assert torch.equal(model.head.classifier.weight, stored["heads.cb.classifier.weight"])
    assert lines[1].endswith("head of cb loaded for cb")
    model, task, fingerprint = fresh_model(tiny_bert_dir, "rte")  # entailment / not_entailment: no stored head has it
    before = model.head.classifier.weight.clone()
    lines = warmstart.start_from(out, model, [task], fingerprint)
    assert torch.equal(model.method.fold()["prefix"], stored["prefix"]) and torch.equal(
        model.head.classifier.weight, before
    )
    assert "fresh head for rte" in lines[1] and "sst2, cb" in lines[1]


@pytest.mark.parametrize(
    "method,options,needle",
    [
        ("ptv2", {"prompt_length": 5}, "another shape than this run's"),
        ("ptv2", {"reparam": True}, "cannot be loaded into"),
        ("prompt-tuning", {}, "holds a ptv2 prompt; this run trains prompt-tuning"),
    ],
)
def test_init_from_refuses_another_method_or_prompt_shape(mtl, tiny_bert_dir, method, options, needle):
    out, _ = mtl
    options = dict(options)
    model, task, fingerprint = fresh_model(tiny_bert_dir, "cb", options.pop("prompt_length", 3), method, **options)
    with pytest.raises(PTuningError, match=needle):
        warmstart.start_from(out, model, [task], fingerprint)


def test_init_from_refuses_another_backbone(mtl):
    out, _ = mtl
    head = get_task("cb").build_head(32, "cls")
    model = PTuningModel(tiny_backbone("bert", seed=3), method_config("ptv2", prompt_length=3), head)
    with pytest.raises(PTuningError, match="this prompt was trained on backbone"):
        warmstart.start_from(out, model, [get_task("cb")], "0000")


def test_a_run_started_from_an_artifact_begins_at_its_prompt(mtl, parent, tiny_bert_dir, tmp_path, capsys):
    """MTL then per-task training: with a vanishing learning rate the trained prompt is still the stored one."""
    out, _ = mtl
    run = tmp_path / "cb"
    slow = TrainConfig(epochs=1, lr=1e-12, batch_size=4)
    pipeline.train(request(run, tiny_bert_dir, task="cb", data=str(parent / "cb"), init_from=str(out), train=slow))
    assert f"init-from {out}: ptv2 prompt loaded, P=3" in capsys.readouterr().out
    model = tiny_backbone_of(tiny_bert_dir)
    _, stored = artifact.read_verified(out, model)
    _, trained = artifact.read_verified(run, model)
    assert torch.allclose(trained["prefix"], stored["prefix"], atol=1e-6)
    assert torch.allclose(trained["head.classifier.weight"], stored["heads.cb.classifier.weight"], atol=1e-6)
    assert yaml.safe_load((run / "config.yaml").read_text())["init_from"] == str(out.resolve())


def test_a_killed_mixture_resumes_to_the_uninterrupted_result(parent, tiny_bert_dir, tmp_path):
    """Killed mid-epoch (after step 6; checkpoint at step 4): the resumed run skips the batches drawn before."""
    mix = {"task": "sst2,cb", "data": str(parent), "mix_temperature": 2.0}

    def config(**changes) -> TrainConfig:
        return TrainConfig(epochs=2, batch_size=4, eval_steps=4, **changes)

    whole = pipeline.train(request(tmp_path / "whole", tiny_bert_dir, train=config(), **mix))
    cut = pipeline.train(request(tmp_path / "cut", tiny_bert_dir, train=config(stop_after_steps=6), **mix))
    assert cut["stopped_by"] == "stop_after_steps"
    resumed = pipeline.train(request(tmp_path / "cut", tiny_bert_dir, train=config(resume=True), **mix))
    assert resumed["steps"] == whole["steps"] == 2 * 12
    # the second epoch's running losses (the first epoch's count only the resumed run's own batches)
    second = [[row["train_loss"] for row in run["history"] if row["epoch"] > 1] for run in (resumed, whole)]
    assert len(second[0]) == 3 and second[0] == pytest.approx(second[1])
    a, b = (artifact.read_verified(tmp_path / run, tiny_backbone_of(tiny_bert_dir))[1] for run in ("whole", "cut"))
    assert torch.allclose(a["prefix"], b["prefix"], atol=1e-6)


@pytest.mark.parametrize(
    "name", ["mixture.py", "multitask.py", "distill.py", "warmstart.py", "pipeline.py", "artifact.py", "card.py"]
)
def test_these_modules_stay_readable(name):
    """No function over 80 lines, no module over 400 (the rule test_settings.py checks for the loop's modules)."""
    import ast
    from pathlib import Path

    source = (Path(__file__).resolve().parents[1] / "src" / "ptuning" / name).read_text()
    assert len(source.splitlines()) <= 400
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.end_lineno - node.lineno + 1 <= 80, f"{name}:{node.name}"


def test_a_mixture_keeps_the_frozen_layers_output_like_a_single_task_run(parent, tiny_bert_dir, tmp_path):
    """--prefix-layers top:1: every task's inputs are numbered in one activation cache; the run is unchanged."""
    from test_activation_cache import same_history

    from ptuning.method import method_config as config_of

    def run(out, cache: bool) -> dict:
        method = config_of("ptv2", prompt_length=3, prefix_layers="top:1")
        train = TrainConfig(epochs=2, lr=1e-2, batch_size=4, activation_cache=cache)
        return pipeline.train(request(out, tiny_bert_dir, task="sst2,cb", data=str(parent), method=method, train=train))

    kept, plain = run(tmp_path / "kept", True), run(tmp_path / "plain", False)
    same_history(kept, plain)
    units = (24 + 12) + (24 + 12)  # sst2 and cb, training and evaluation features
    assert kept["activation_cache"]["units"] == kept["activation_cache"]["computed"] == units
    assert kept["activation_cache"]["reused"] > 0 and plain["activation_cache"]["used"] is False
