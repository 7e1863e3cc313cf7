"""The generation task family: readers, features (loss on target tokens only), metrics, train -> eval -> generate."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pytest
import torch
from gen_fixtures import save_tiny_decoder, tiny_tokenizer, write_dialogsum, write_e2e

from ptuning import pipeline
from ptuning.errors import PTuningError
from ptuning.loop import TrainConfig
from ptuning.method import method_config
from ptuning.tasks import get_task
from ptuning.tasks import text_metrics as tm

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny matrices run faster on one thread


@pytest.fixture(scope="module")
def decoder_dir(tmp_path_factory) -> Path:
    return save_tiny_decoder(tmp_path_factory.mktemp("tiny-llama"), "llama")


def e2e_request(data: Path, output: Path, model: Path, method: str = "ptv2", **changes) -> pipeline.TrainRequest:
    """A training request on toy E2E data with the tiny decoder: what each test changes is passed in."""
    fields = {"method": method_config(method, strict=False, prompt_length=4), "max_length": 64}
    fields.update(train=TrainConfig(epochs=1, batch_size=4, seed=1), max_eval_samples=2)
    fields.update(changes)
    return pipeline.TrainRequest(task="e2e", data=str(data), output=output, model=str(model), **fields)


def test_e2e_groups_the_references_of_one_mr_in_evaluation_splits_only(tmp_path):
    data = write_e2e(tmp_path / "e2e", n_train=6, n_dev=3)
    task = get_task("e2e")
    train = task.records_to_examples(task.load_split(data, "train"), labelled=True)
    dev = task.records_to_examples(task.load_split(data, "validation"), labelled=True)
    assert len(train) == 6 and all(len(e.label) == 1 for e in train)
    assert len(dev) == 3 and all(len(e.label) == 2 and e.label[1] == e.label[0] + " good" for e in dev)


def test_dialogsum_trains_on_dev_minus_its_last_50_and_reports_test_with_three_references(tmp_path, capsys):
    data = write_dialogsum(tmp_path / "ds", n_dev=60, n_test=4)
    task = get_task("dialogsum")
    train, selection = task.training_records(data)
    assert "no training file" in capsys.readouterr().out
    assert [r.fields["fname"] for r in train] == [f"dev_{i}" for i in range(10)]
    assert [r.fields["fname"] for r in selection] == [f"dev_{i}" for i in range(10, 60)]
    test = task.records_to_examples(task.load_split(data, "test"), labelled=True)
    assert len(test) == 4 and all(len(e.label) == 3 for e in test) and test[0].id == "test_0"


def test_features_put_the_loss_on_target_tokens_only():
    tokenizer = tiny_tokenizer()
    task = get_task("e2e")
    examples = task.records_to_examples(
        [_record({"mr": "name good , food bad", "ref": "the good bad ."}), _record({"mr": "name fine", "ref": "the"})],
        labelled=True,
    )
    features = task.featurize(examples, tokenizer, 64).features
    target = tokenizer("the good bad .", add_special_tokens=False)["input_ids"]
    first = features[0]
    n = first["prompt_length"]
    assert first["labels"][:n] == [-100] * n and first["labels"][n:] == [*target, tokenizer.eos_token_id]
    assert first["input_ids"][n:] == first["labels"][n:]
    batch = task.collator(tokenizer)(features)
    short = features[1]
    padding = batch["input_ids"].shape[1] - len(short["input_ids"])
    assert padding > 0 and batch["labels"][1, -padding:].tolist() == [-100] * padding  # padding: no loss
    ids, mask = task.collator(tokenizer).prompts(features)  # decoding: the prompt alone, padded on the left
    assert ids[1, -short["prompt_length"] :].tolist() == short["input_ids"][: short["prompt_length"]]
    assert mask[1].tolist() == [0] * (ids.shape[1] - short["prompt_length"]) + [1] * short["prompt_length"]


def test_the_loss_is_next_token_cross_entropy_on_the_target():
    task = get_task("e2e")
    logits = torch.randn(1, 4, 7)
    labels = torch.tensor([[-100, -100, 5, 2]])
    expected = torch.nn.functional.cross_entropy(logits[0, 1:3], torch.tensor([5, 2]))
    assert torch.allclose(task.loss(logits, labels), expected)


def _record(fields):
    from ptuning.tasks.readers import Record

    return Record(fields, "mem", 1)


def test_metrics_use_every_reference():
    refs = [["a cat sat on the mat .", "the dog ran in the park ."]]
    assert tm.bleu(["the dog ran in the park ."], refs) == pytest.approx(100.0)
    assert tm.bleu(["the dog ran in the park ."], [refs[0][:1]]) < 20  # only the first reference: far lower
    scores = tm.compute(("rougeL", "rouge1", "rouge2", "chrf"), ["the dog ran in the park ."], refs)
    assert scores["rougeL"] == pytest.approx(100.0) and scores["rouge2"] == pytest.approx(100.0)
    assert scores["chrf"] == pytest.approx(100.0)
    assert tm.compute(("rougeL",), ["x y z"], [["a b c"]])["rougeL"] == 0.0


def test_a_generation_task_on_an_encoder_backbone_is_refused(tmp_path, tiny_bert_dir):
    data = write_e2e(tmp_path / "e2e")
    request = pipeline.TrainRequest(
        task="e2e", data=str(data), output=tmp_path / "out", model=str(tiny_bert_dir), max_length=48
    )
    with pytest.raises(PTuningError, match="needs a decoder backbone"):
        pipeline.train(request)


def test_a_teacher_is_refused_for_a_generation_task_before_anything_is_written(tmp_path, decoder_dir):
    from ptuning.distill import DistillConfig

    data = write_e2e(tmp_path / "e2e")
    request = pipeline.TrainRequest(
        task="e2e", data=str(data), output=tmp_path / "out", model=str(decoder_dir), max_length=48,
        distill=DistillConfig(teacher=str(tmp_path / "teacher")),
    )  # fmt: skip
    with pytest.raises(PTuningError, match="--teacher distils a task head's outputs; e2e generates text"):
        pipeline.train(request)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("method", ["ptv2", "prompt-tuning", "finetune"])
def test_train_evaluate_generate_for_every_decoder_method(tmp_path, decoder_dir, method):
    data = write_e2e(tmp_path / "e2e")
    out = tmp_path / method
    lr = 5e-3 if method == "finetune" else None
    summary = pipeline.train(
        e2e_request(data, out, decoder_dir, method, train=TrainConfig(epochs=2, batch_size=4, lr=lr, seed=1))
    )
    losses = [row["train_loss"] for row in summary["history"]]
    assert losses[-1] < losses[0]  # the target tokens' loss falls
    assert set(summary["best"]) == {"bleu", "rougeL", "chrf", "rouge1", "rouge2"}
    scores = pipeline.evaluate(out, str(data), "test", max_eval_samples=3, decoding={"max_new_tokens": 6})
    assert scores["examples"] == 3 and 0 <= scores["bleu"] <= 100
    source = tmp_path / "in.jsonl"
    source.write_text('{"mr": "name good , food bad , area fine"}\n{"mr": "name the"}\n{"mr": "area poor"}\n')
    assert pipeline.generate(out, source, tmp_path / "out.jsonl", {"max_new_tokens": 5, "num_beams": 2}) == 3
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(isinstance(r["generated"], str) for r in rows)
    alone = tmp_path / "one.jsonl"
    alone.write_text('{"mr": "name the"}\n')
    pipeline.generate(out, alone, tmp_path / "one-out.jsonl", {"max_new_tokens": 5, "num_beams": 2})
    assert json.loads((tmp_path / "one-out.jsonl").read_text()) == rows[1]  # in order, batch-independent


def test_the_benchmarks_throughput_interleaves_rounds_with_and_without_the_prompt(tmp_path, decoder_dir):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import generation

    data = write_e2e(tmp_path / "e2e")
    pipeline.train(e2e_request(data, tmp_path / "ptv2", decoder_dir))
    args = argparse.Namespace(data=str(data), test_samples=3, batch_size=2)
    from ptuning import decoding

    calls = []
    real = decoding.generate_ids

    def spy(*a, **k):
        calls.append(k["eos_token_id"])
        return real(*a, **k)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(decoding, "generate_ids", spy)
        result = generation.throughput(tmp_path / "ptv2", args, rounds=2)
    assert [len(result["per_round"][k]) for k in ("with_prompt", "no_prompt")] == [2, 2]
    assert result["with_prompt"] > 0 and result["no_prompt"] > 0 and result["overhead"] > 0
    assert calls and set(calls) == {None}  # no stop at EOS: both settings decode the same number of tokens
    assert result["fixed_length"] and result["new_tokens"] > 0 and result["batch_size"] == 2
    out = tmp_path / "speed.json"
    argv = ["generation.py", "--task", "e2e", "--data", str(data), "--test-samples", "3", "--batch-size", "2"]
    argv += ["--throughput-of", str(tmp_path / "ptv2"), "--out", str(out)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", argv)
        generation.main()
    (row,) = json.loads(out.read_text())["results"]
    assert row["method"] == "ptv2" and row["prompt_length"] > 0 and row["throughput"]["fixed_length"]


def test_cli_generate_eval_and_refusals(tmp_path, decoder_dir, sst2_dir, tiny_bert_dir, monkeypatch, capsys):
    data = write_e2e(tmp_path / "e2e")
    out = tmp_path / "art"
    common = ["--model", str(decoder_dir), "--max-length", "64", "--batch-size", "4", "--prompt-length", "3"]
    train = ["train", "--task", "e2e", "--data", str(data), "--output", str(out), "--epochs", "1", *common]
    assert _cli(monkeypatch, capsys, *train, "--max-eval-samples", "2")[0] == 0
    source = tmp_path / "in.jsonl"
    source.write_text('{"mr": "name good"}\n{"mr": "food bad"}\n')
    args = ("generate", str(out), "--input", str(source), "--max-new-tokens", "4")
    code, stdout, _ = _cli(monkeypatch, capsys, *args, "--output", str(tmp_path / "o.jsonl"))
    assert code == 0 and "wrote 2 outputs" in stdout
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 2
    code, stdout, _ = _cli(
        monkeypatch, capsys, "eval", str(out), "--data", str(data), "--split", "test", "--max-eval-samples", "2"
    )
    assert code == 0 and json.loads(stdout)["examples"] == 2
    code, _, stderr = _cli(monkeypatch, capsys, *args, "--output", str(tmp_path / "x.jsonl"), "--top-p", "2")
    assert code == 2 and "--top-p" in stderr and "Traceback" not in stderr
    sst = tmp_path / "sst"
    pipeline.train(
        pipeline.TrainRequest(
            task="sst2",
            data=str(sst2_dir),
            output=sst,
            model=str(tiny_bert_dir),
            train=TrainConfig(epochs=1),
            max_length=32,
        )
    )
    code, _, stderr = _cli(monkeypatch, capsys, "generate", str(sst), "--input", str(source), "--output", "y.jsonl")
    assert code == 2 and "does not generate text" in stderr


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``ptuning ARGS`` in this process (a subprocess would spend most of the test importing torch)."""
    from ptuning import cli

    monkeypatch.setattr(sys, "argv", ["ptuning", *args])
    capsys.readouterr()
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.skipif(not (DATA / "e2e" / "testset_w_refs.csv").is_file(), reason="shared E2E data absent")
def test_real_e2e_and_dialogsum_splits():
    e2e = get_task("e2e")
    assert len(e2e.load_split(DATA / "e2e", "test")) == 630
    assert len(e2e.load_split(DATA / "e2e", "validation")) == 547
    dialogsum = get_task("dialogsum")
    assert [len(dialogsum.load_split(DATA / "dialogsum", s)) for s in ("train", "validation", "test")] == [450, 50, 500]


@pytest.mark.parametrize("method, message", [("linear-probe", "trains nothing"), ("apt", "cannot generate")])
def test_methods_that_cannot_generate_are_refused_before_training(tmp_path, decoder_dir, method, message):
    data = write_e2e(tmp_path / "e2e")
    request = e2e_request(data, tmp_path / "out", decoder_dir, method, train=TrainConfig())
    with pytest.raises(PTuningError, match=message):
        pipeline.train(request)
    assert not (tmp_path / "out").exists()


def test_the_report_renders_generation_results(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import report_generation
    import report_runs

    monkeypatch.setattr(report_runs, "RESULTS", tmp_path)
    assert report_generation.generation() == ""  # no file: no section
    rows = [
        {"method": "zero-shot", "task": "e2e", "examples": 16, "bleu": 5.0, "rougeL": 30.0, "chrf": 40.0},
        *(
            {"method": "ptv2", "seed": s, "task": "e2e", "examples": 16, "bleu": b, "rougeL": 50.0, "chrf": 60.0,
             "trainable_params": 115, "backbone_params": 115_000, "artifact_bytes": 4096,
             "seconds_per_step_with_evals": 2.5}
            for s, b in ((1, 40.0), (2, 44.0))
        ),
        {"method": "finetune", "seed": 1, "task": "e2e", "examples": 16, "bleu": 43.5, "rougeL": 55.0, "chrf": 61.0,
         "trainable_params": 115_000, "backbone_params": 115_000},
    ]  # fmt: skip
    (tmp_path / "generation").mkdir()
    data = {"kind": "generation", "task": "e2e", "args": {"max_train_samples": "48", "epochs": "1"}, "results": rows}
    (tmp_path / "generation" / "e2e.json").write_text(json.dumps(data))
    text = report_generation.generation()
    assert "| ptv2 | 2 | 16 | 42.0 ± 2.8 | 50.0 ± 0.0 | 60.0 ± 0.0 | 0.100 | 4 | 2.50 | - |" in text
    assert "| zero-shot | 1 | 16 | 5.0 | 30.0 | 40.0 |" in text
    goal = "**Goal:** ptv2 bleu 42.0 (2 seeds); -1.5 against fine-tuning at 0.10 % of its trainable parameters: not "
    assert goal + "within the goal (-1 bleu, ≤ 1 %); +37.0 against zero-shot (above it)." in text
    seed3 = {**rows[1], "seed": 3, "bleu": 45.0, "throughput": {"with_prompt": 9.0, "no_prompt": 10.0}}
    seed3["throughput"].update(overhead=1.08, rounds=3, fixed_length=True, new_tokens=8, batch_size=2)
    (tmp_path / "generation" / "e2e-seed3.json").write_text(json.dumps({**data, "results": [seed3]}))
    other = {**data, "args": {"max_train_samples": "96", "epochs": "1"}}  # another setup: its own table
    (tmp_path / "generation" / "e2e-more.json").write_text(json.dumps(other))
    text = report_generation.generation()
    assert text.count("### e2e") == 2 and re.search(r"generation/e2e-seed3\.json, \S+/e2e\.json;", text)
    assert "| ptv2 | 3 | 16 | 43.0 ± 2.6 |" in text  # seed 3 joined seeds 1-2 of the same setup
    assert "| 9.0 / 10.0 (1.08×) |" in text  # interleaved rounds: the median ratio shown
    assert "with the prefix at 1.08× the time per token without it (within the goal's 1.10×)" in text
    assert "‡" not in text and "Greedy decoding with and without" not in text
    eos = {**seed3["throughput"], "overhead": 1.26}
    del eos["fixed_length"]  # an early measurement that stopped at EOS: marked, kept out of the goal
    speed = {"method": "ptv2", "prompt_length": 10, "throughput": {**seed3["throughput"], "overhead": 1.02}}
    more = {**other, "results": [{**rows[1], "throughput": eos}, speed]}
    (tmp_path / "generation" / "e2e-more.json").write_text(json.dumps(more))
    text = report_generation.generation()
    assert "(1.26×) ‡ |" in text and "so the ratio compares output lengths" in text
    assert "/e2e-more.json | ptv2 | 10 | 2 | 8 | 9.0 | 10.0 | 1.020 (3 rounds) |" in text
    assert "at 1.02× the time per token" in text and "1.26× the time" not in text
    assert "bleu 40.0 (1 seed); -3.5 against fine-tuning (its own table) at 0.10 %" in text  # borrowed, named so


def test_a_long_source_is_cut_and_the_chat_templates_answer_cue_kept():
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}<s> {{ m['content'] }} </s>{% endfor %}"
        "{% if add_generation_prompt %} the end{% endif %}"
    )
    task = get_task("dialogsum")
    ids = task.prompt_ids(" ".join(["good movie"] * 100), tokenizer, 30)
    assert len(ids) == 30 and tokenizer.decode(ids[-3:]) == "</s> the end"  # the answer's cue survives the cut
    short = task.prompt_ids("good movie", tokenizer, 30)
    assert len(short) < 30 and tokenizer.decode(short).endswith("good movie </s> the end")


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--batch-size", "0"], "--batch-size must be at least 1"), (["--throughput-of", "nowhere"], "not a ptuning")],
)
def test_the_generation_benchmark_refuses_bad_values_in_one_line(tmp_path, monkeypatch, capsys, extra, message):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import generation

    out = tmp_path / "out.json"
    argv = ["generation.py", "--task", "e2e", "--data", str(tmp_path), "--out", str(out), *extra]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as stop:
        generation.main()
    assert stop.value.code == 2 and message in capsys.readouterr().err and not out.exists()
