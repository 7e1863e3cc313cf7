"""The rest of SuperGLUE and GLUE: readers, heads, metrics, every method and backbone family."""

from __future__ import annotations

import json
import subprocess
import sys

import fixtures
import pytest
import torch
from conftest import FAMILIES, tiny_backbone, train_tiny

from ptuning import pipeline
from ptuning.backbones import geometry
from ptuning.method import method_config
from ptuning.model import PTuningModel
from ptuning.tasks import get_task, load_records
from ptuning.tasks import metrics as m

SUITE = list(fixtures.WRITERS)


def train(task: str, data, out, model_dir, method: str = "ptv2", epochs: int = 1) -> dict:
    lr = 1e-2 if method != "finetune" else 1e-3
    return train_tiny(task, data, out, model_dir, method=method, epochs=epochs, lr=lr, max_length=48)


@pytest.mark.parametrize("task", SUITE)
def test_every_task_trains_evaluates_and_predicts(tmp_path, tiny_bert_dir, task):
    data = fixtures.write(task, tmp_path / "data")
    summary = train(task, data, tmp_path / "out", tiny_bert_dir)
    assert set(summary["best"]) == set(get_task(task).metric_names)
    scores = pipeline.evaluate(tmp_path / "out", str(data))
    for name in get_task(task).metric_names:
        assert scores[name] == pytest.approx(summary["best"][name], abs=1e-6)
    source = data / ("val.jsonl" if (data / "val.jsonl").exists() else "train.tsv")
    n = pipeline.predict(tmp_path / "out", source, tmp_path / "pred.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert len(rows) == n > 0
    expected_key = {"copa": "choice", "record": "entity", "stsb": "score"}.get(task, "label")
    assert all(expected_key in r for r in rows)
    if task == "copa":
        assert all(r["text"] in ("we left", "we stayed") for r in rows)


def test_mnli_mismatched_split(tmp_path, tiny_bert_dir):
    data = fixtures.write("mnli", tmp_path / "mnli")
    train("mnli", data, tmp_path / "out", tiny_bert_dir)
    assert pipeline.evaluate(tmp_path / "out", str(data), split="validation_mismatched")["examples"] == 6


@pytest.mark.parametrize("method", ["ptv2", "prompt-tuning", "ptv1", "finetune", "linear-probe"])
@pytest.mark.parametrize("task", ["copa", "wic", "stsb", "record"])
def test_every_method_on_each_family(tmp_path, tiny_bert_dir, task, method):
    data = fixtures.write(task, tmp_path / "data")
    summary = train(task, data, tmp_path / "out", tiny_bert_dir, method=method)
    assert summary["best"] is not None


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("task", ["copa", "wsc", "stsb"])
def test_every_backbone_family_runs_each_head(tmp_path, family, task):
    """Forward + backward on every backbone with the multiple-choice, span and regression heads."""
    from transformers import AutoTokenizer, BertTokenizerFast

    data = fixtures.write(task, tmp_path / "data")
    spec = get_task(task)
    backbone = tiny_backbone(family)
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *fixtures.WORDS])}
    tokenizer = BertTokenizerFast(vocab=vocab)
    assert isinstance(tokenizer, type(AutoTokenizer)) or tokenizer.is_fast
    pooling = "last" if geometry(backbone).is_decoder else "cls"
    model = PTuningModel(backbone, method_config("ptv2", prompt_length=3), spec.build_head(32, pooling))
    examples = spec.records_to_examples(load_records(spec.files, data, "validation"), labelled=True)[:3]
    batch = spec.collator(tokenizer)(spec.featurize(examples, tokenizer, 32).features)
    labels = batch.pop("labels")
    if family in ("gpt2", "llama", "qwen2", "modernbert"):
        batch.pop("token_type_ids", None)
    logits = model(**batch)
    spec.loss(logits, labels).backward()
    assert model.method.prefix_encoder.embedding.weight.grad.abs().sum() > 0
    expected = (3, 2) if task == "copa" else (3, 1) if task == "stsb" else (3, 2)
    assert tuple(logits.shape) == expected


def test_wic_and_wsc_span_masks_cover_the_marked_words(tmp_path, tiny_bert_dir):
    from ptuning.backbones import load_backbone

    _, tokenizer, _ = load_backbone(str(tiny_bert_dir))
    for task in ("wic", "wsc"):
        spec = get_task(task)
        data = fixtures.write(task, tmp_path / task)
        example = spec.records_to_examples(load_records(spec.files, data, "validation"), labelled=True)[1]
        features = spec.featurize([example], tokenizer, 48).features[0]
        tokens = tokenizer.convert_ids_to_tokens(features["input_ids"])
        one = [t for t, keep in zip(tokens, features["span_mask_1"], strict=True) if keep]
        two = [t for t, keep in zip(tokens, features["span_mask_2"], strict=True) if keep]
        if task == "wic":
            assert one == ["good"] and two == ["good"]
        else:
            assert one == ["the", "bad"] and two == ["it"]


def test_copa_puts_the_question_type_in_the_context(tmp_path):
    spec = get_task("copa")
    data = fixtures.write("copa", tmp_path / "copa")
    examples = spec.records_to_examples(load_records(spec.files, data, "validation"), labelled=True)
    assert examples[0].texts[0].endswith("What was the cause?")
    assert examples[1].texts[0].endswith("What happened as a result?")


def test_multirc_keeps_question_groups_and_scores_em_and_f1a():
    gold = ["1", "0", "1", "0", "1"]
    pred = ["1", "0", "0", "0", "1"]
    groups = ["q1", "q1", "q2", "q2", "q3"]
    scores = m.multirc(pred, gold, groups)
    # F1a on label 1: tp 2, fp 0, fn 1 -> 0.8; EM: q1 right, q2 wrong, q3 right -> 2/3
    assert scores["f1a"] == pytest.approx(0.8) and scores["em"] == pytest.approx(2 / 3)


def test_record_max_over_gold():
    assert m.max_over_gold("The Cast", ["cast", "movie"]) == (1.0, 1.0)
    em, f1 = m.max_over_gold("good cast", ["the cast", "plot"])
    assert em == 0.0 and f1 == pytest.approx(2 / 3)  # "good cast" vs "cast": p 1/2, r 1


def test_mcc_pearson_spearman_hand_computed():
    # tp 2 tn 1 fp 1 fn 0 -> (2*1 - 1*0) / sqrt(3*2*2*1)
    assert m.matthews([1, 1, 1, 0], [1, 1, 0, 0], 1) == pytest.approx(2 / 12**0.5)
    assert m.matthews([1, 1], [1, 1], 1) == 0.0  # undefined -> 0
    assert m.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert m.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # ranks with a tie: x -> [1, 2.5, 2.5, 4], y -> [1, 2, 3, 4]
    assert m.spearman([1, 5, 5, 9], [1, 2, 3, 4]) == pytest.approx(m.pearson([1, 2.5, 2.5, 4], [1, 2, 3, 4]))


def test_tasks_command_lists_every_task():
    out = subprocess.run([sys.executable, "-m", "ptuning.cli", "tasks"], capture_output=True, text=True).stdout
    for name in ["copa", "multirc", "record", "wic", "wsc", "mrpc", "qqp", "qnli", "mnli", "cola", "stsb"]:
        assert f"\n{name} " in f"\n{out}"
    assert "pearson, spearman" in out and "f1a, em" in out and "mcc" in out


def test_bad_fields_are_one_line_errors(tmp_path):
    from ptuning.errors import DataError

    (tmp_path / "val.jsonl").write_text(
        '{"premise": "a", "choice1": "b", "choice2": "c", "question": "why", "label": 0}\n'
    )
    with pytest.raises(DataError, match="val.jsonl:1: .*cause"):
        spec = get_task("copa")
        spec.records_to_examples(load_records(spec.files, tmp_path, "validation"), labelled=True)
    (tmp_path / "dev.tsv").write_text("index\tsentence1\tsentence2\tscore\n0\ta\tb\thigh\n")
    with pytest.raises(DataError, match="dev.tsv:2: label 'high' is not a number"):
        spec = get_task("stsb")
        spec.records_to_examples(load_records(spec.files, tmp_path, "validation"), labelled=True)


def test_mixed_pool_batch_with_multiple_choice_and_spans(tmp_path, tiny_bert_dir):
    from ptuning.serve.pool import PromptPool

    paths = {}
    for task in ("copa", "wic", "stsb"):
        data = fixtures.write(task, tmp_path / f"d-{task}")
        train(task, data, tmp_path / task, tiny_bert_dir)
        paths[task] = tmp_path / task
    pool = PromptPool.from_artifact(paths["copa"])
    for task, path in paths.items():
        pool.load(path, task)
    inputs = {
        "copa": {"premise": "the plot was bad", "question": "effect", "choices": ["we left", "we stayed"]},
        "wic": {
            "sentence1": "the good film",
            "sentence2": "good music",
            "start1": 4,
            "end1": 8,
            "start2": 0,
            "end2": 4,
        },
        "stsb": ["the film was good", "the movie was bad"],
    }
    rows = [(t, pool.to_example(t, v)) for t, v in inputs.items()]
    mixed = pool.predict(rows)
    for (task, example), got in zip(rows, mixed, strict=True):
        model, tokenizer, spec, meta = __import__("ptuning.artifact", fromlist=["x"]).load_artifact(paths[task])
        featurized = spec.featurize([example], tokenizer, meta["max_length"])
        batch = spec.collator(tokenizer)(featurized.features)
        with torch.no_grad():
            want = spec.predictions(model(**batch), [example], featurized.alignment)[0]
        assert got.keys() == want.keys()
        for key, value in want.items():
            assert (abs(got[key] - value) < 1e-5) if isinstance(value, float) else got[key] == value
