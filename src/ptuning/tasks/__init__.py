"""The task registry: every task by name, described by data."""

from __future__ import annotations

from ..errors import PTuningError
from .base import DataFiles, Example, Task, load_records
from .classification import ClassificationTask

SUPERGLUE = DataFiles(train=("train.jsonl",), validation=("val.jsonl",), test=("test.jsonl",))
GLUE = DataFiles(train=("train.tsv",), validation=("dev.tsv",), test=("test.tsv",))
GENERIC = DataFiles(
    train=("train.jsonl", "train.tsv", "train.csv"),
    validation=tuple(f"{s}.{x}" for s in ("validation", "dev", "val") for x in ("jsonl", "tsv", "csv")),
    test=("test.jsonl", "test.tsv", "test.csv"),
)


def _superglue(config: str) -> DataFiles:
    return DataFiles(SUPERGLUE.train, SUPERGLUE.validation, SUPERGLUE.test, hub=("super_glue", config))


def _glue(config: str) -> DataFiles:
    return DataFiles(GLUE.train, GLUE.validation, GLUE.test, hub=("glue", config))


TASKS: dict[str, Task] = {
    task.name: task
    for task in [
        ClassificationTask(
            name="cb",
            description="SuperGLUE CommitmentBank: 3-way entailment",
            text_columns=("premise", "hypothesis"),
            label_column="label",
            labels=("entailment", "contradiction", "neutral"),
            files=_superglue("cb"),
            metric_names=("accuracy", "macro_f1"),
        ),
        ClassificationTask(
            name="rte",
            description="SuperGLUE RTE: 2-way entailment",
            text_columns=("premise", "hypothesis"),
            label_column="label",
            labels=("entailment", "not_entailment"),
            files=_superglue("rte"),
        ),
        ClassificationTask(
            name="boolq",
            description="SuperGLUE BoolQ: yes/no question about a passage",
            text_columns=("question", "passage"),
            label_column="label",
            labels=("False", "True"),
            files=_superglue("boolq"),
        ),
        ClassificationTask(
            name="sst2",
            description="GLUE SST-2: binary sentiment of a sentence",
            text_columns=("sentence",),
            label_column="label",
            labels=("0", "1"),
            files=_glue("sst2"),
            aliases={"negative": "0", "positive": "1"},
        ),
        ClassificationTask(
            name="text-classification",
            description="Any CSV/TSV/JSONL with a text column (and optional pair column) and a label column",
            text_columns=("text",),
            label_column="label",
            labels=None,
            files=GENERIC,
            id_column="id",
        ),
    ]
}


def get_task(name: str, **options) -> Task:
    if name not in TASKS:
        raise PTuningError(f"unknown task {name!r}; `ptuning tasks` lists them ({', '.join(TASKS)})")
    task = TASKS[name]
    given = {k: v for k, v in options.items() if v}
    return task.with_options(**given) if given else task


__all__ = ["TASKS", "DataFiles", "Example", "Task", "get_task", "load_records"]
