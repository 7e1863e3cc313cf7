"""Optional integration test on the real benchmark files in ../shared/data (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ptuning.tasks import get_task, load_records

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CASES = [  # task, directory, split, examples in the official release
    ("cb", "superglue/cb", "train", 250),
    ("cb", "superglue/cb", "validation", 56),
    ("rte", "superglue/rte", "train", 2490),
    ("rte", "superglue/rte", "validation", 277),
    ("boolq", "superglue/boolq", "validation", 3270),
    ("sst2", "glue/sst2", "validation", 872),
    ("copa", "superglue/copa", "train", 400),
    ("wsc", "superglue/wsc", "validation", 104),
    ("multirc", "superglue/multirc", "validation", 4848),  # answer options of 83 paragraphs
    ("squad", "squad/v1.1", "validation", 10570),
]


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
@pytest.mark.parametrize("task_name,directory,split,count", CASES)
def test_official_files_read_completely(task_name, directory, split, count):
    task = get_task(task_name)
    examples = task.records_to_examples(load_records(task.files, SHARED / directory, split), labelled=True)
    assert len(examples) == count
    if task_name == "squad":
        assert all(e.label["text"] for e in examples)
        return
    labels = {e.label for e in examples}
    assert labels == ({0, 1} if task_name == "copa" else set(task.labels))


@pytest.mark.parametrize("task", ["CB", "RTE", "COPA", "WSC", "BoolQ", "MultiRC"])
def test_fewglue_loads_as_it_is_with_dev32_selecting(task):
    from ptuning.splits import plan_splits

    data = SHARED / "fewglue" / task
    if not data.is_dir():
        pytest.skip("../shared/data/fewglue is absent")
    plan = plan_splits(get_task(task.lower()), str(data))
    assert len(plan.train) == len(plan.selection) == 32
    assert Path(plan.reported[0].path).name == "val.jsonl"


def test_k_shot_on_rte_draws_the_same_ids_twice():
    from ptuning.splits import plan_splits

    data = SHARED / "superglue" / "rte"
    if not data.is_dir():
        pytest.skip("../shared/data/superglue is absent")
    first, again = (plan_splits(get_task("rte"), str(data), few_shot=32, few_shot_seed=3) for _ in range(2))
    assert first.drawn == again.drawn and len(first.drawn["train"]) == 32
    assert len(first.reported) == 277
