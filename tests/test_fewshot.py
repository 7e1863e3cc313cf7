"""Low-resource protocols: FewGLUE's fixed selection split and K-shot draws (stratified, reproducible)."""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path

import fixtures
import pytest
from conftest import train_tiny, write_cb

from ptuning.errors import PTuningError
from ptuning.splits import draw, plan_splits
from ptuning.tasks import get_task


def fewglue_like(directory: Path) -> Path:
    """CB-format toy data in FewGLUE's layout: train, dev32 (selection) and val (reported)."""
    write_cb(directory)
    shutil.copy(directory / "val.jsonl", directory / "dev32.jsonl")
    (directory / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows_of(directory / "train.jsonl")))
    return directory


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_dev32_file_selects_and_the_validation_file_is_only_reported(tmp_path, tiny_bert_dir):
    data = fewglue_like(tmp_path / "CB")
    plan = plan_splits(get_task("cb"), str(data))
    assert [Path(r.path).name for r in (plan.train[0], plan.selection[0], plan.reported[0])] == [
        "train.jsonl",
        "dev32.jsonl",
        "val.jsonl",
    ]
    summary = train_tiny("cb", data, tmp_path / "out", tiny_bert_dir, epochs=2, max_length=32)
    assert summary["splits"]["selection"].startswith("dev32.jsonl (12")
    assert summary["splits"]["reported"].startswith("val.jsonl (24")
    assert set(summary["reported"]) == {"accuracy", "macro_f1"}
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["reported"] == summary["reported"] and saved["best"] == summary["best"]


def test_without_a_selection_file_validation_selects_and_is_reported(cb_dir):
    plan = plan_splits(get_task("cb"), str(cb_dir))
    assert plan.reported is None and Path(plan.selection[0].path).name == "val.jsonl"


def test_k_shot_draws_are_stratified_disjoint_and_reproducible(tmp_path):
    data = write_cb(tmp_path / "cb")
    task = get_task("cb")
    first = plan_splits(task, str(data), few_shot=6, few_shot_seed=3)
    again = plan_splits(task, str(data), few_shot=6, few_shot_seed=3)
    other = plan_splits(task, str(data), few_shot=6, few_shot_seed=4)
    assert first.drawn == again.drawn and first.drawn != other.drawn
    assert len(first.train) == len(first.selection) == 6
    assert not {r.line for r in first.train} & {r.line for r in first.selection}
    assert Counter(task.stratum(r) for r in first.train) == {"entailment": 2, "contradiction": 2, "neutral": 2}
    assert Path(first.reported[0].path).name == "val.jsonl" and len(first.reported) == 12


def test_a_rare_class_keeps_a_slot_and_quotas_add_up():
    task = get_task("cb")
    labels = ["entailment"] * 45 + ["contradiction"] * 4 + ["neutral"]
    from ptuning.tasks.readers import Record

    records = [Record({"premise": "a", "hypothesis": "b", "label": x}, "f", i) for i, x in enumerate(labels)]
    for k in (3, 8, 20):
        drawn = draw(task, records, k, random.Random(0))
        assert len(drawn) == k and "neutral" in {task.stratum(r) for r in drawn}


def test_labels_tied_on_their_share_are_ordered_by_the_seed_not_by_name():
    """Balanced labels and an odd K: which label gets the extra slot changes with the seed (it was always one)."""
    from ptuning.tasks.readers import Record

    task = get_task("cb")
    labels = ["entailment", "contradiction"] * 20
    records = [Record({"premise": "a", "hypothesis": "b", "label": x}, "f", i) for i, x in enumerate(labels)]
    extra = {Counter(task.stratum(r) for r in draw(task, records, 5, random.Random(seed))).most_common(1)[0][0]
             for seed in range(12)}  # fmt: skip
    assert extra == {"entailment", "contradiction"}
    two_of_three = {frozenset(task.stratum(r) for r in draw(task, records, 1, random.Random(seed)))
                    for seed in range(12)}  # fmt: skip
    assert len(two_of_three) == 2  # k below the number of labels: the seed picks the label


def test_a_regression_task_draws_without_strata():
    from ptuning.tasks.readers import Record

    task = get_task("stsb")
    records = [Record({"sentence1": "a", "sentence2": "b", "label": i / 10}, "f", i) for i in range(50)]
    assert {task.stratum(r) for r in records} == {None}
    draws = {tuple(r.line for r in draw(task, records, 3, random.Random(seed))) for seed in range(3)}
    assert len(draws) == 3


@pytest.mark.parametrize("task_name, shared", [("e2e", "mr"), ("boolq", "passage")])
def test_the_selection_draw_shares_no_input_with_the_training_draw(tmp_path, task_name, shared):
    """E2E repeats a meaning representation once per reference, BoolQ a passage once per question."""
    task = get_task(task_name)
    data = tmp_path / task_name
    data.mkdir()
    rows = [{shared: f"input {i % 6}", "ref" if task_name == "e2e" else "question": f"text {i}"} for i in range(24)]
    if task_name == "e2e":
        (data / "trainset.csv").write_text("mr,ref\n" + "".join(f'"{r["mr"]}","{r["ref"]}"\n' for r in rows))
        (data / "devset.csv").write_text("mr,ref\n" + "".join(f'"{r["mr"]}","{r["ref"]}"\n' for r in rows[:4]))
    else:
        lines = [json.dumps({**r, "label": i % 2 == 0, "idx": i}) + "\n" for i, r in enumerate(rows)]
        (data / "train.jsonl").write_text("".join(lines))
        (data / "val.jsonl").write_text("".join(lines[:4]))
    for seed in range(5):
        plan = plan_splits(task, str(data), few_shot=3, few_shot_seed=seed)
        assert not {r.fields[shared] for r in plan.train} & {r.fields[shared] for r in plan.selection}


def test_passages_are_drawn_whole(tmp_path):
    data = fixtures.write("multirc", tmp_path / "multirc")
    plan = plan_splits(get_task("multirc"), str(data), few_shot=2, few_shot_seed=0)
    assert all("questions" in r.fields["passage"] for r in plan.train + plan.selection)


def test_k_shot_asks_for_what_the_file_can_give(tmp_path):
    data = write_cb(tmp_path / "cb")
    with pytest.raises(PTuningError, match="--few-shot 13 needs 26 training records"):
        plan_splits(get_task("cb"), str(data), few_shot=13)


def test_a_k_shot_run_records_its_draw(tmp_path, tiny_bert_dir):
    data = write_cb(tmp_path / "cb")
    out = tmp_path / "out"
    summary = train_tiny("cb", data, out, tiny_bert_dir, max_length=32, few_shot=4, few_shot_seed=1)
    drawn = json.loads((out / "few_shot.json").read_text())
    assert drawn["k"] == 4 and drawn["seed"] == 1 and len(drawn["train"]) == len(drawn["selection"]) == 4
    assert summary["splits"]["train"].startswith("4 drawn from train.jsonl")
    assert summary["reported"] is not None


def test_few_shot_zero_is_refused_before_any_work(tmp_path):
    from ptuning import pipeline

    with pytest.raises(PTuningError, match="--few-shot"):
        pipeline.TrainRequest(task="cb", data=str(tmp_path), output=tmp_path / "out", few_shot=0)
    assert not (tmp_path / "out").exists()


def test_sample_caps_are_refused_with_a_k_shot_draw(tmp_path):
    """A cut in file order would undo the stratified draw and leave few_shot.json naming unused records."""
    from ptuning import pipeline

    for cap in ({"max_train_samples": 8}, {"max_eval_samples": 8}):
        with pytest.raises(PTuningError, match="--few-shot K draws the training and selection examples itself"):
            pipeline.TrainRequest(task="cb", data=str(tmp_path), output=tmp_path / "out", few_shot=4, **cap)


def test_a_k_shot_task_learns_its_labels_from_the_whole_training_file(tmp_path):
    """K below the number of labels: the reported split's other labels are still known (no 'unknown label')."""
    from ptuning import pipeline

    data = write_cb(tmp_path / "cb")
    request = pipeline.TrainRequest(
        task="text-classification",
        data=str(data),
        output=tmp_path / "out",
        few_shot=1,
        task_options={"text_column": "premise", "text_pair_column": "hypothesis"},
    )
    task, train, _, plan = pipeline.training_examples(get_task("text-classification").with_options(
        **request.task_options), request)  # fmt: skip
    assert len(train) == 1 and set(task.labels) == {"entailment", "contradiction", "neutral"}
    task.records_to_examples(plan.reported, labelled=True)  # every reported label is one the task knows


def test_a_training_set_of_one_label_is_warned_about(tmp_path, capsys):
    """FewGLUE's WSC train file is all True: a classifier can only learn that, and the run says so."""
    from conftest import write_sst2

    from ptuning import pipeline

    data = write_sst2(tmp_path / "sst2")
    rows = (data / "train.tsv").read_text().splitlines()
    (data / "train.tsv").write_text("\n".join([rows[0]] + [r for r in rows[1:] if r.endswith("\t1")]) + "\n")
    request = pipeline.TrainRequest(task="sst2", data=str(data), output=tmp_path / "out")
    pipeline.training_examples(get_task("sst2"), request)
    assert "have the same label ('1'); a classifier trained on them can only predict it" in capsys.readouterr().out
    pipeline.training_examples(
        get_task("sst2"),
        pipeline.TrainRequest(task="sst2", data=str(write_sst2(tmp_path / "b")), output=tmp_path / "o"),
    )
    assert "same label" not in capsys.readouterr().out
