"""The task contract: each family is a frozen ``Task``, featurizing leaves examples alone, the registry stays put."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from ptuning.tasks import TASKS, Featurized, Task, get_task
from ptuning.tasks.base import Example

CONTEXT = "the good cast was in the film and the plot was dull but the music was good and the scene was fine ."
LONG_SENTENCE = ("the good cast and the bad film the plot was dull " * 4).split()


def _tokenizer(tiny_bert_dir):
    from ptuning.backbones import load_backbone

    return load_backbone(str(tiny_bert_dir))[1]


def test_every_registered_task_is_a_frozen_task():
    for task in TASKS.values():
        assert isinstance(task, Task), task.name
        with pytest.raises(dataclasses.FrozenInstanceError):
            task.name = "changed"  # type: ignore[misc]


def test_changes_return_new_tasks_and_leave_the_registry_alone():
    before = copy.deepcopy(TASKS)
    generic = get_task("text-classification", text_column="review", label_column="stars")
    assert generic is not TASKS["text-classification"] and generic.text_columns == ("review",)
    tagging = get_task("token-classification", labels=["O", "B-X", "I-X"])
    assert tagging.from_state({**tagging.state(), "labels": ["O"]}).labels == ("O",)
    qa = get_task("squad_v2", doc_stride=8)
    assert qa.calibrated({"null_threshold": 1.5}).null_threshold == 1.5 and qa.null_threshold == 0.0
    assert TASKS == before


def _examples(name: str) -> list[Example]:
    """Unlabelled and labelled inputs of each family, the windowed ones long enough for several windows."""
    task = TASKS[name]
    if name == "squad_v2":
        answered = task.example_from_input({"question": "what was good ?", "context": CONTEXT})
        answered.label = {"text": ["the music"], "start": [CONTEXT.index("the music")]}
        empty = task.example_from_input({"question": "who was bad ?", "context": CONTEXT})
        empty.label = {"text": [], "start": []}
        return [answered, empty]
    if name == "conll03":
        tags = ["B-PER" if w == "cast" else "O" for w in LONG_SENTENCE]
        return [Example(tuple(LONG_SENTENCE), tags, extra={"scheme": "iob2", "lines": None, "predicate": None})]
    if name == "copa":
        example = task.example_from_input({"premise": "the film", "question": "cause", "choices": ["good", "bad"]})
        return [dataclasses.replace(example, label=1)]
    return [Example(("the film was good", "the plot was dull"), "neutral")]  # cb


def _random_logits(task, featurized: Featurized, tokenizer) -> torch.Tensor:
    """Logits of the shape the task's head gives for these features."""
    shape = task.collator(tokenizer)(featurized.features)["input_ids"].shape  # (N, L) or (N, choices, L)
    if task.family == "qa":
        return torch.randn(*shape, 2)  # (N, L, start/end)
    if task.family == "tagging":
        return torch.randn(*shape, len(task.labels))  # (N, L, tags)
    if task.family == "multiple-choice":
        return torch.randn(shape[:2])  # (N, choices)
    return torch.randn(shape[0], len(task.labels))  # (N, labels)


@pytest.mark.parametrize("name", ["squad_v2", "conll03", "copa", "cb"])
def test_featurize_and_evaluate_never_write_into_the_examples(tiny_bert_dir, name):
    task, tokenizer = TASKS[name], _tokenizer(tiny_bert_dir)
    examples = _examples(name)
    before = copy.deepcopy(examples)
    short = task.featurize(examples, tokenizer, 16)
    again = task.featurize(examples, tokenizer, 32)
    assert examples == before
    assert isinstance(short, Featurized) and isinstance(again, Featurized)
    if name in ("squad_v2", "conll03"):  # windowed: one alignment entry per example, several windows
        assert len(short.alignment) == len(examples) and len(short.features) > len(examples)
    for featurized in (short, again):
        logits = _random_logits(task, featurized, tokenizer)
        task.evaluate(logits, examples, featurized.alignment)
        task.predictions(logits, examples, featurized.alignment)
    assert examples == before


def test_squad_v2_evaluate_returns_its_threshold_and_leaves_the_registry_task_unchanged(tiny_bert_dir):
    registered = TASKS["squad_v2"]
    before = copy.deepcopy(registered)
    examples = _examples("squad_v2")
    featurized = registered.featurize(examples, _tokenizer(tiny_bert_dir), 16)
    width = max(len(f["input_ids"]) for f in featurized.features)
    logits = torch.randn(len(featurized.features), width, 2, generator=torch.Generator().manual_seed(0))
    scores = registered.evaluate(logits, examples, featurized.alignment)
    assert TASKS["squad_v2"] is registered and registered == before
    tuned = registered.calibrated(scores)
    assert tuned.null_threshold == tuned.state()["null_threshold"] == scores["null_threshold"]
    assert registered.calibrated({"f1": 1.0}) is registered and TASKS["squad"].calibrated(scores) is TASKS["squad"]


def test_join_units_single_unit_and_windowed():
    classification, tagging = TASKS["cb"], TASKS["conll03"]
    assert classification.join_units([torch.ones(3)]).shape == (1, 3)  # one (labels,) unit
    assert TASKS["copa"].join_units([torch.ones(1), torch.zeros(1)]).shape == (1, 2)  # a (1,) score per choice
    joined = tagging.join_units([torch.ones(5, 9), torch.ones(3, 9)])
    assert joined.shape == (2, 5, 9) and joined[1, 3:].abs().sum() == 0  # windows padded to the longest


def test_task_defaults():
    assert TASKS["cb"].default_max_length == 128 and TASKS["squad"].default_max_length == 384
    assert TASKS["cb"].with_labels_from([]) is TASKS["cb"]
    assert TASKS["copa"].select_split(["r"], "train") == ["r"]
    assert TASKS["cb"].write_predictions([{"label": "é"}], [], None, None) == '{"label": "é"}\n'
