"""Extractive QA: SQuAD reader, windows, post-processing, official EM/F1, SQuAD 2.0 threshold."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import train_tiny

from ptuning import artifact, pipeline
from ptuning.errors import DataError
from ptuning.loop import TrainConfig
from ptuning.method import method_config
from ptuning.tasks import get_task, load_records
from ptuning.tasks import metrics as m

CONTEXT = "the good cast was in the film and the plot was dull but the music was good and the scene was fine ."


def squad_file(path, impossible: bool = False, articles: int = 4):
    data = []
    for a in range(articles):
        qas = []
        for q, answer in enumerate(["the plot", "the music", "dull"]):
            start = CONTEXT.index(answer)
            qas.append(
                {
                    "id": f"a{a}q{q}",
                    "question": f"what was {answer} ?",
                    "answers": [{"text": answer, "answer_start": start}] * 2,
                }
            )
        if impossible:
            qas.append({"id": f"a{a}none", "question": "who was bad ?", "answers": [], "is_impossible": True})
        data.append({"title": f"Article_{a}", "paragraphs": [{"context": CONTEXT, "qas": qas}]})
    path.write_text(json.dumps({"version": "ours", "data": data}))
    return path


def test_official_normalisation_and_scores():
    assert m.normalize_answer("The  Cat, sat!") == "cat sat"
    assert m.normalize_answer("an apple a day") == "apple day"
    assert m.max_over_gold("the Denver Broncos", ["Denver Broncos", "Broncos"]) == (1.0, 1.0)
    em, f1 = m.max_over_gold("Denver", ["Denver Broncos", "the Carolina Panthers"])
    assert em == 0.0 and f1 == pytest.approx(2 / 3)  # precision 1, recall 1/2
    assert m.max_over_gold("", [""]) == (1.0, 1.0)  # official v2 script: two empty answers agree fully
    assert m.max_over_gold("", ["cat"]) == (0.0, 0.0)
    assert m.max_over_gold("the", ["cat"]) == (0.0, 0.0)  # "the" normalises to nothing


def test_reader_and_bad_offsets(tmp_path):
    task = get_task("squad")
    records = load_records(task.files, squad_file(tmp_path / "dev-v1.1.json"), "validation")
    examples = task.records_to_examples(records, labelled=True)
    assert len(examples) == 12 and examples[0].label["text"][0] == "the plot"
    bad = json.loads((tmp_path / "dev-v1.1.json").read_text())
    bad["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 3
    (tmp_path / "dev-v1.1.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match="is not at offset 3"):
        task.records_to_examples(load_records(task.files, tmp_path, "validation"), labelled=True)


def test_split_by_article_gives_three_disjoint_sides(tmp_path):
    task = get_task("squad", split_by_article=0.6)
    records = load_records(task.files, squad_file(tmp_path / "dev-v1.1.json", articles=20), "validation")
    sides = {split: task.select_split(records, split) for split in ("train", "validation", "test")}
    assert sum(len(side) for side in sides.values()) == len(records) and all(sides.values())
    titles = {split: {r.fields["title"] for r in side} for split, side in sides.items()}
    assert not titles["train"] & titles["validation"] and not titles["train"] & titles["test"]
    assert not titles["validation"] & titles["test"]
    with pytest.raises(DataError, match="train, validation and test"):
        task.select_split(records, "dev")


def test_windows_keep_the_answer_and_postprocessing_returns_the_exact_substring(tiny_bert_dir):
    from ptuning.backbones import load_backbone

    tokenizer = load_backbone(str(tiny_bert_dir))[1]
    task = get_task("squad", doc_stride=4)
    example = task.example_from_input({"question": "what was good ?", "context": CONTEXT})
    example.label = {"text": ["the music"], "start": [CONTEXT.index("the music")]}
    featurized = task.featurize([example], tokenizer, max_length=16)
    features, (windows,) = featurized.features, featurized.alignment
    assert len(features) > 2  # the context does not fit one window
    found = []
    for (_, offsets), feature in zip(windows, features, strict=True):
        start, end = feature["labels"]
        if start:
            found.append(CONTEXT[offsets[start][0] : offsets[end][1]])
    assert found and set(found) == {"the music"}
    logits = torch.full((len(features), 16, 2), -5.0)
    index, offsets = next((i, o) for (i, o), f in zip(windows, features, strict=True) if f["labels"][0])
    start, end = features[index]["labels"]
    logits[index, start, 0] = logits[index, end, 1] = 5.0
    assert task.best_answer(logits, example, windows)[0] == "the music"
    narrow = get_task("squad").from_state({**task.state(), "max_answer_length": 1})
    assert narrow.best_answer(logits, example, windows)[0] != "the music"


@pytest.mark.parametrize("version", ["squad", "squad_v2"])
def test_train_eval_predict(tmp_path, tiny_bert_dir, version):
    name = "dev-v2.0.json" if version == "squad_v2" else "dev-v1.1.json"
    source = squad_file(tmp_path / name, impossible=version == "squad_v2", articles=12)
    out = tmp_path / "out"
    summary = pipeline.train(
        pipeline.TrainRequest(
            task=version,
            data=str(source),
            output=out,
            model=str(tiny_bert_dir),
            method=method_config("ptv2", prompt_length=3),
            train=TrainConfig(epochs=1, lr=1e-2, batch_size=4),
            max_length=24,
            task_options={"split_by_article": 0.3, "doc_stride": 6},
        )
    )
    assert {"exact", "f1"} <= set(summary["best"])
    meta = artifact.read_meta(out)
    assert meta["task"]["split_by_article"] == 0.3 and meta["max_length"] == 24
    scores = pipeline.evaluate(out, str(source))
    assert scores["f1"] == pytest.approx(summary["best"]["f1"])
    predictions = tmp_path / "predictions.json"
    pipeline.predict(out, source, predictions)
    answers = json.loads(predictions.read_text())
    assert len(answers) == (48 if version == "squad_v2" else 36)
    assert all(isinstance(a, str) and (a == "" or a in CONTEXT) for a in answers.values())
    if version == "squad_v2":
        assert "NoAns_exact" in summary["best"] and "null_threshold" in meta["task"]
        assert meta["task"]["null_threshold"] == summary["best"]["null_threshold"]  # the best-dev evaluation's
        assert set(json.loads((tmp_path / "null_odds.json").read_text())) == set(answers)


def test_qa_default_max_length_is_384(tmp_path, tiny_bert_dir):
    """Without --max-length, QA windows use 384 tokens (tiny BERT only has 64 positions: a clear error)."""
    from ptuning.errors import PTuningError

    with pytest.raises(PTuningError, match="--max-length 384 exceeds the backbone's 64 positions"):
        pipeline.train(
            pipeline.TrainRequest(
                task="squad",
                data=str(squad_file(tmp_path / "dev-v1.1.json")),
                output=tmp_path / "o",
                model=str(tiny_bert_dir),
                task_options={"split_by_article": 0.5},
            )
        )


def test_pool_serves_qa_windows_mixed_with_classification(tmp_path, tiny_bert_dir, sst2_dir):
    """A QA row (several context windows) and a classification row in one pool call equal the single-task path."""
    from ptuning.serve.pool import PromptPool

    source = squad_file(tmp_path / "dev-v1.1.json", articles=12)
    for task, data, P in (("squad", source, 3), ("sst2", sst2_dir, 2)):
        options = {"split_by_article": 0.3, "doc_stride": 6} if task == "squad" else {}
        out = tmp_path / f"out-{task}"
        train_tiny(task, data, out, tiny_bert_dir, prompt_length=P, lr=1e-2, max_length=24, task_options=options)
    pool = PromptPool.from_artifact(tmp_path / "out-squad")
    pool.load(tmp_path / "out-squad", "qa")
    pool.load(tmp_path / "out-sst2", "sentiment")
    questions = [
        {"question": "what was dull ?", "context": CONTEXT},
        {"question": "what was good ?", "context": CONTEXT},
    ]
    rows = [("qa", pool.to_example("qa", questions[0])), ("sentiment", pool.to_example("sentiment", "good film"))]
    rows.append(("qa", pool.to_example("qa", questions[1])))
    mixed = pool.predict(rows)

    model, tokenizer, task, meta = artifact.load_artifact(tmp_path / "out-squad")
    examples = [task.example_from_input(q) for q in questions]
    featurized = task.featurize(examples, tokenizer, meta["max_length"])
    assert len(featurized.features) >= 2 * len(examples)  # each context really is several windows at max length 24
    logits = pipeline.predict_logits(model, featurized.features, task.collator(tokenizer), 8)
    alone = task.predictions(logits, examples, featurized.alignment)
    for got, want in zip((mixed[0], mixed[2]), alone, strict=True):
        assert got["answer"] == want["answer"] and got["answer"] in CONTEXT
        assert got["null_odds"] == pytest.approx(want["null_odds"], abs=1e-4)
    assert mixed[1]["label"] in ("0", "1")
    with pytest.raises(Exception, match="'question' and 'context'"):
        pool.to_example("qa", "just a string")


def test_a_reported_split_answers_with_the_calibrated_null_threshold_instead_of_tuning_one(monkeypatch):
    """SQuAD 2.0: tuning the threshold on the split that is reported would leak it into the reported score."""
    from ptuning.tasks.base import Example

    task = get_task("squad_v2").calibrated({"null_threshold": 0.5})
    examples = [Example(("q", "x y"), label={"text": ["x"]}), Example(("q", "x y"), label={"text": []})]
    answers = {id(examples[0]): ("x", 1.0), id(examples[1]): ("y", 9.0)}  # (best span, null − span score)
    monkeypatch.setattr(type(task), "best_answer", lambda self, logits, example, windows: answers[id(example)])
    tuned = task.evaluate(torch.zeros(2), examples, [(), ()])
    assert tuned["f1"] == 1.0 and tuned["null_threshold"] == 1.0  # the selection split tunes its own
    reported = task.for_reporting().evaluate(torch.zeros(2), examples, [(), ()])
    assert reported["f1"] == 0.5 and reported["null_threshold"] == 0.5  # the calibrated one: the span answer lost
