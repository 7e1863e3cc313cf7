"""Readers, data errors and metrics of the classification tasks."""

from __future__ import annotations

import json

import pytest
from conftest import write_cb

from ptuning.errors import DataError
from ptuning.tasks import TASKS, get_task, load_records
from ptuning.tasks.metrics import accuracy, macro_f1


def test_every_task_is_listed_with_format_and_metric():
    assert {"cb", "rte", "boolq", "sst2", "text-classification"} <= set(TASKS)
    for task in TASKS.values():
        assert task.metric_names and task.data_format and task.description


def test_superglue_and_glue_official_files(tmp_path):
    cb = get_task("cb")
    records = load_records(cb.files, write_cb(tmp_path / "cb"), "validation")
    examples = cb.records_to_examples(records, labelled=True)
    assert len(examples) == 12 and examples[0].texts == ("the movie was good", "the plot is good")
    boolq = tmp_path / "boolq"
    boolq.mkdir()
    (boolq / "val.jsonl").write_text(json.dumps({"question": "is it", "passage": "yes it is", "label": True}) + "\n")
    example = get_task("boolq").records_to_examples(
        load_records(get_task("boolq").files, boolq, "validation"), labelled=True
    )
    assert example[0].label == "True"
    sst = tmp_path / "sst2"
    sst.mkdir()
    (sst / "dev.tsv").write_text('sentence\tlabel\nit \'s a "great" film \t1\n')
    rows = get_task("sst2").records_to_examples(load_records(get_task("sst2").files, sst, "validation"), labelled=True)
    assert rows[0].texts == ('it \'s a "great" film ',) and rows[0].label == "1"


@pytest.mark.parametrize(
    "content,message",
    [
        ('{"premise": "a", "hypothesis": "b", "label": "maybe"}\n', "val.jsonl:1: unknown label 'maybe'"),
        ('{"premise": "a", "label": "neutral"}\n', "val.jsonl:1: missing column 'hypothesis'"),
        ('{"premise": "a", "hypothesis": "b", "label": "neutral"}\n{"premise": \n', "val.jsonl:2: malformed JSON"),
        ("", "val.jsonl: the file holds no examples"),
    ],
)
def test_bad_data_names_file_and_line(tmp_path, content, message):
    (tmp_path / "val.jsonl").write_text(content)
    task = get_task("cb")
    with pytest.raises(DataError) as info:
        task.records_to_examples(load_records(task.files, tmp_path, "validation"), labelled=True)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_tsv_with_wrong_field_count(tmp_path):
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nfine\t1\nbroken\t0\textra\n")
    with pytest.raises(DataError, match=r"dev.tsv:3: malformed line"):
        load_records(get_task("sst2").files, tmp_path, "validation")


def test_missing_split_and_missing_directory(tmp_path):
    with pytest.raises(DataError, match="no train split"):
        load_records(get_task("cb").files, tmp_path, "train")
    with pytest.raises(DataError, match="data directory not found"):
        load_records(get_task("cb").files, str(tmp_path / "nope" / "deeper"), "train")


def test_hub_id_offline_gives_a_clear_error():
    with pytest.raises(DataError, match="HF_HUB_OFFLINE=1"):
        load_records(get_task("cb").files, "super_glue", "train")


def test_generic_task_takes_columns_and_infers_labels(tmp_path):
    (tmp_path / "train.csv").write_text('review,stars\n"good, really",high\nbad,low\nfine,high\n')
    (tmp_path / "dev.csv").write_text("review,stars\nawful,low\n")
    task = get_task("text-classification", text_column="review", label_column="stars")
    task = task.with_labels_from(load_records(task.files, tmp_path, "train"))
    assert task.labels == ("high", "low")
    dev = task.records_to_examples(load_records(task.files, tmp_path, "validation"), labelled=True)
    assert dev[0].texts == ("awful",) and dev[0].label == "low"


def test_metrics_against_hand_computed_values():
    gold = ["e", "e", "c", "n", "c", "e"]
    pred = ["e", "c", "c", "e", "c", "e"]
    assert accuracy(pred, gold) == pytest.approx(4 / 6)
    # per class F1: e: tp2 fp1 fn1 -> 4/6; c: tp2 fp1 fn0 -> 4/5; n: 0
    assert macro_f1(pred, gold, ["e", "c", "n"]) == pytest.approx((4 / 6 + 4 / 5 + 0) / 3)


BOM = "\ufeff"
MRPC_TSV = (
    "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    "1\t1\t2\tthe film was good\tthe movie was good\n"
    "0\t3\t4\tthe plot was dull\tthe cast was great\n"
)
SQUAD_JSON = json.dumps(
    {
        "data": [
            {
                "title": "T",
                "paragraphs": [
                    {
                        "context": "the film was good",
                        "qas": [
                            {
                                "id": "q1",
                                "question": "what was good ?",
                                "answers": [{"text": "the film", "answer_start": 0}],
                            }
                        ],
                    }
                ],
            }
        ]
    }
)


@pytest.mark.parametrize(
    "task,name,content,first",
    [
        ("mrpc", "dev.tsv", MRPC_TSV, ("the film was good", "the movie was good")),  # GLUE's download script
        ("cb", "val.jsonl", '{"premise": "a b", "hypothesis": "c", "label": "neutral"}\n', ("a b", "c")),
        ("text-classification", "dev.csv", "text,label\nawful film,low\nfine,high\n", ("awful film",)),
        ("conll03", "dev.txt", "EU B-ORG\nrejects O\n\ncall O\n", ("EU", "rejects")),
        ("squad", "dev-v1.1.json", SQUAD_JSON, ("what was good ?", "the film was good")),
    ],
)
def test_files_starting_with_a_byte_order_mark_read_like_plain_utf8(tmp_path, task, name, content, first):
    """A UTF-8 BOM used to glue itself to the first column name (`missing column 'Quality'`) or token."""
    (tmp_path / name).write_bytes((BOM + content).encode("utf-8"))
    spec = get_task(task)
    if task == "text-classification":
        spec = spec.with_labels_from(load_records(spec.files, tmp_path, "validation"))
    examples = spec.records_to_examples(load_records(spec.files, tmp_path, "validation"), labelled=True)
    assert examples[0].texts == first
    assert not any(BOM in text for e in examples for text in e.texts)
