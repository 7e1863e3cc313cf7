"""The task registry: every task by name, described by data."""

from __future__ import annotations

from ..decoding import DecodingConfig
from ..errors import PTuningError
from .base import DataFiles, Example, Featurized, Task, load_records
from .classification import ClassificationTask
from .generation import GenerationTask
from .multiple_choice import MultipleChoiceTask
from .multirc import MultiRCTask
from .qa import QATask
from .record import RecordTask
from .spans import SpanClassificationTask
from .tagging import TaggingTask

SUPERGLUE = DataFiles(train=("train.jsonl",), validation=("val.jsonl",), test=("test.jsonl",))
GLUE = DataFiles(train=("train.tsv",), validation=("dev.tsv",), test=("test.tsv",))
GENERIC = DataFiles(
    train=("train.jsonl", "train.tsv", "train.csv"),
    validation=tuple(f"{s}.{x}" for s in ("validation", "dev", "val") for x in ("jsonl", "tsv", "csv")),
    test=("test.jsonl", "test.tsv", "test.csv"),
)


def _superglue(config: str) -> DataFiles:
    """SuperGLUE's files; ``dev32`` is FewGLUE's 32-example selection split (Schick & Schuetze), when present."""
    return DataFiles(
        SUPERGLUE.train,
        SUPERGLUE.validation,
        SUPERGLUE.test,
        hub=("super_glue", config),
        extra=(("dev32", ("dev32.jsonl",)),),
        selection="dev32",
    )


def _glue(config: str, **kw) -> DataFiles:
    files = {"train": GLUE.train, "validation": GLUE.validation, "test": GLUE.test, **kw}
    return DataFiles(**files, hub=("glue", config))


BOOL = ("False", "True")
CONLL = DataFiles(train=("train.txt",), validation=("dev.txt",), test=("test.txt",))
ONTONOTES_TYPES = (
    "PERSON NORP FAC ORG GPE LOC PRODUCT EVENT WORK_OF_ART LAW LANGUAGE DATE TIME PERCENT MONEY "
    "QUANTITY ORDINAL CARDINAL"
).split()


def _bio(types) -> tuple[str, ...]:
    return ("O", *[f"{p}-{t}" for t in types for p in "BI"])


ENTAIL2 = ("entailment", "not_entailment")


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
            shared_column="passage",  # several questions per passage: a K-shot draw keeps a passage on one side
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
        MultipleChoiceTask(
            name="copa",
            description="SuperGLUE COPA: choose the cause/effect of a premise (multiple choice)",
            files=_superglue("copa"),
            kind="copa",
        ),
        MultipleChoiceTask(
            name="multiple-choice",
            description="Any SWAG-style JSONL: a context and N choices, label = index of the right one",
            files=GENERIC,
        ),
        MultiRCTask(
            name="multirc",
            description="SuperGLUE MultiRC: is each answer option of a question about a paragraph true?",
            text_columns=("passage", "question"),
            label_column="label",
            labels=("0", "1"),
            files=_superglue("multirc"),
            metric_names=("f1a", "em"),
        ),
        RecordTask(
            name="record",
            description="SuperGLUE ReCoRD: pick the passage entity that fills @placeholder in the query",
            files=_superglue("record"),
        ),
        SpanClassificationTask(
            name="wic",
            description="SuperGLUE WiC: is the marked word used in the same sense in both sentences?",
            text_columns=("sentence1", "sentence2"),
            label_column="label",
            labels=BOOL,
            files=_superglue("wic"),
            kind="wic",
        ),
        SpanClassificationTask(
            name="wsc",
            description="SuperGLUE WSC: does the pronoun (span 2) refer to the noun phrase (span 1)?",
            text_columns=("text",),
            label_column="label",
            labels=BOOL,
            files=_superglue("wsc"),
            kind="wsc",
        ),
        ClassificationTask(
            name="mrpc",
            description="GLUE MRPC: are the two sentences paraphrases?",
            text_columns=("#1 String", "#2 String"),
            label_column="Quality",
            labels=("0", "1"),
            files=_glue(
                "mrpc", hub_columns=(("sentence1", "#1 String"), ("sentence2", "#2 String"), ("label", "Quality"))
            ),
            metric_names=("accuracy", "f1"),
            aliases={"not_equivalent": "0", "equivalent": "1"},
        ),
        ClassificationTask(
            name="qqp",
            description="GLUE QQP: are the two questions duplicates?",
            text_columns=("question1", "question2"),
            label_column="is_duplicate",
            labels=("0", "1"),
            files=_glue("qqp", hub_columns=(("label", "is_duplicate"),)),
            metric_names=("accuracy", "f1"),
            aliases={"not_duplicate": "0", "duplicate": "1"},
        ),
        ClassificationTask(
            name="qnli",
            description="GLUE QNLI: does the sentence answer the question?",
            text_columns=("question", "sentence"),
            label_column="label",
            labels=ENTAIL2,
            files=_glue("qnli"),
        ),
        ClassificationTask(
            name="mnli",
            description="GLUE MNLI: 3-way entailment (validation = matched; --split validation_mismatched)",
            text_columns=("sentence1", "sentence2"),
            label_column="gold_label",
            labels=("entailment", "neutral", "contradiction"),
            files=_glue(
                "mnli",
                validation=("dev_matched.tsv",),
                test=("test_matched.tsv",),
                extra=(("validation_mismatched", ("dev_mismatched.tsv",)),),
                hub_columns=(("premise", "sentence1"), ("hypothesis", "sentence2"), ("label", "gold_label")),
                hub_splits=(("validation", "validation_matched"), ("validation_mismatched", "validation_mismatched")),
            ),
        ),
        ClassificationTask(
            name="glue-rte",
            description="GLUE RTE (TSV release of the SuperGLUE RTE data): 2-way entailment",
            text_columns=("sentence1", "sentence2"),
            label_column="label",
            labels=ENTAIL2,
            files=_glue("rte"),
        ),
        ClassificationTask(
            name="wnli",
            description="GLUE WNLI: does the sentence with the pronoun substituted follow?",
            text_columns=("sentence1", "sentence2"),
            label_column="label",
            labels=("0", "1"),
            files=_glue("wnli"),
        ),
        ClassificationTask(
            name="cola",
            description="GLUE CoLA: is the sentence grammatical? (header-less TSV)",
            text_columns=("sentence",),
            label_column="label",
            labels=("0", "1"),
            files=_glue("cola", header=("source", "label", "original_label", "sentence")),
            metric_names=("mcc", "accuracy"),
            aliases={"unacceptable": "0", "acceptable": "1"},
        ),
        ClassificationTask(
            name="stsb",
            description="GLUE STS-B: similarity score 0-5 of two sentences (regression)",
            text_columns=("sentence1", "sentence2"),
            label_column="score",
            labels=(),
            files=_glue("stsb", hub_columns=(("label", "score"),)),
            metric_names=("pearson", "spearman"),
            regression=True,
        ),
        TaggingTask(
            name="conll03",
            description="CoNLL-2003 English NER (PER, LOC, ORG, MISC); IOB1 or IOB2 tags",
            files=CONLL,
            labels=_bio(("PER", "LOC", "ORG", "MISC")),
        ),
        TaggingTask(
            name="conll04",
            description="CoNLL-2004 NER in the P-Tuning v2 label set (Loc, Peop, Org, Other)",
            files=CONLL,
            labels=_bio(("Loc", "Peop", "Org", "Other")),
            type_map={"LOC": "Loc", "PER": "Peop", "PEOP": "Peop", "ORG": "Org", "OTHER": "Other", "MISC": "Other"},
        ),
        TaggingTask(
            name="ontonotes",
            description="OntoNotes 5.0 NER, 18 types, column form (.conllx or .txt)",
            files=DataFiles(
                train=("train.conllx", "train.txt"),
                validation=("dev.conllx", "dev.txt"),
                test=("test.conllx", "test.txt"),
            ),
            labels=_bio(ONTONOTES_TYPES),
        ),
        TaggingTask(
            name="conll05",
            description="CoNLL-2005 SRL: word, predicate lemma, one bracketed argument column per predicate",
            files=DataFiles(
                train=("train.txt",),
                validation=("dev.txt",),
                test=("test.wsj.txt", "test.txt"),
                extra=(("test_brown", ("test.brown.txt",)),),
            ),
            srl=True,
            first_arg_column=2,
        ),
        TaggingTask(
            name="conll12",
            description="CoNLL-2012 SRL from .gold_conll files (word col 3, arguments from col 11, coref last)",
            files=DataFiles(
                train=("train.gold_conll", "train.txt"),
                validation=("dev.gold_conll", "dev.txt"),
                test=("test.gold_conll", "test.txt"),
            ),
            srl=True,
            token_column=3,
            first_arg_column=11,
            last_arg_column=-2,
        ),
        TaggingTask(
            name="token-classification",
            description="Any CoNLL-style column file: --text-column N (tokens), --label-column N (tags), --labels",
            files=DataFiles(
                train=("train.txt", "train.conll"),
                validation=("dev.txt", "dev.conll", "validation.txt"),
                test=("test.txt", "test.conll"),
            ),
        ),
        QATask(
            name="squad",
            description="SQuAD 1.1 extractive QA (EM, F1); also generic JSONL id/question/context/answers",
            files=DataFiles(
                train=("train-v1.1.json", "train.jsonl"),
                validation=("dev-v1.1.json", "validation.jsonl"),
                hub=("squad", None),
            ),
        ),
        QATask(
            name="squad_v2",
            description="SQuAD 2.0: unanswerable questions, null-score threshold tuned on the eval set",
            files=DataFiles(
                train=("train-v2.0.json", "train.jsonl"),
                validation=("dev-v2.0.json", "validation.jsonl"),
                hub=("squad_v2", None),
            ),
            version_2=True,
        ),
        GenerationTask(
            name="e2e",
            description="E2E NLG: a restaurant's meaning representation -> one sentence (multi-reference BLEU)",
            files=DataFiles(train=("trainset.csv",), validation=("devset.csv",), test=("testset_w_refs.csv",)),
            source_column="mr",
            target_columns=("ref",),
            instruction="Describe this restaurant in one sentence, using every attribute given.",
            example_source="name[The Vaults], eatType[pub], priceRange[more than £30], near[Café Adriatic]",
            metric_names=("bleu", "rougeL", "chrf", "rouge1", "rouge2"),
            group_by_source=True,
            max_target_length=64,
            default_max_length=192,
            decoding=DecodingConfig(max_new_tokens=64),
        ),
        GenerationTask(
            name="dialogsum",
            description="DialogSum dialogue summary (no train file: dev trains, its last 50 select, test is reported)",
            files=DataFiles(
                train=("dialogsum.dev.jsonl",), validation=("dialogsum.dev.jsonl",), test=("dialogsum.test.jsonl",)
            ),
            source_column="dialogue",
            target_columns=("summary", "summary1", "summary2", "summary3"),
            instruction="Summarise this dialogue in one or two sentences.",
            example_source="#Person1#: Shall we meet at six? #Person2#: Six is fine, see you at the station.",
            metric_names=("rougeL", "rouge1", "rouge2", "bleu"),
            held_out=50,
            id_column="fname",
            max_target_length=96,
            default_max_length=512,
            decoding=DecodingConfig(max_new_tokens=96),
        ),
        GenerationTask(
            name="text-generation",
            description="Any CSV/TSV/JSONL with a source column and a target column (--text-column, --target-column)",
            files=GENERIC,
            source_column="text",
            target_columns=("target",),
            instruction="Continue.",
            id_column="id",
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
    """The registered task, or a new one with ``options`` applied (the registry's object is never changed)."""
    if name not in TASKS:
        raise PTuningError(f"unknown task {name!r}; `ptuning tasks` lists them ({', '.join(TASKS)})")
    task = TASKS[name]
    given = {k: v for k, v in options.items() if v is not None and v != ""}
    return task.with_options(**given) if given else task


__all__ = ["TASKS", "DataFiles", "Example", "Featurized", "GenerationTask", "Task", "get_task", "load_records"]
