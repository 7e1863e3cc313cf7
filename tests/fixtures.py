"""Tiny data sets in each official SuperGLUE/GLUE format, written for these tests (no real data)."""

from __future__ import annotations

import json
from pathlib import Path

WORDS = "good bad movie plot cast story film music scene acting".split()


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _tsv(path: Path, header: list[str] | None, rows: list[list]) -> None:
    lines = (["\t".join(header)] if header else []) + ["\t".join(str(c) for c in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def copa(d: Path) -> None:
    rows = [
        {
            "premise": f"the {WORDS[i % 10]} was bad",
            "choice1": "we left",
            "choice2": "we stayed",
            "question": "effect" if i % 2 else "cause",
            "label": i % 2,
            "idx": i,
        }
        for i in range(12)
    ]
    _jsonl(d / "train.jsonl", rows)
    _jsonl(d / "val.jsonl", rows[:6])


def multirc(d: Path) -> None:
    def passage(i):
        return {
            "idx": i,
            "passage": {
                "text": f"the {WORDS[i % 10]} was good . the cast was bad .",
                "questions": [
                    {
                        "idx": q,
                        "question": f"how was the {WORDS[(i + q) % 10]} ?",
                        "answers": [
                            {"idx": a, "text": WORDS[(i + q + a) % 10], "label": (i + q + a) % 2} for a in range(3)
                        ],
                    }
                    for q in range(2)
                ],
            },
        }

    _jsonl(d / "train.jsonl", [passage(i) for i in range(4)])
    _jsonl(d / "val.jsonl", [passage(i) for i in range(2)])


def record(d: Path) -> None:
    def row(i):
        text = "the movie had a good cast and a bad plot"
        entities = [{"start": 4, "end": 8}, {"start": 23, "end": 26}, {"start": 36, "end": 39}]  # movie cast plot
        gold = ["movie", "cast", "plot"][i % 3]
        return {
            "idx": i,
            "source": "ours",
            "passage": {"text": text, "entities": entities},
            "qas": [
                {"idx": i, "query": "the @placeholder was good", "answers": [{"start": 0, "end": 0, "text": gold}]}
            ],
        }

    _jsonl(d / "train.jsonl", [row(i) for i in range(9)])
    _jsonl(d / "val.jsonl", [row(i) for i in range(3)])


def wic(d: Path) -> None:
    rows = []
    for i in range(10):
        s1, s2 = f"the {WORDS[i % 10]} was good", f"a good {WORDS[(i + 1) % 10]} story"
        rows.append(
            {
                "word": "good",
                "sentence1": s1,
                "sentence2": s2,
                "start1": s1.index("good"),
                "end1": s1.index("good") + 4,
                "start2": s2.index("good"),
                "end2": s2.index("good") + 4,
                "label": bool(i % 2),
                "idx": i,
            }
        )
    _jsonl(d / "train.jsonl", rows)
    _jsonl(d / "val.jsonl", rows[:4])


def wsc(d: Path) -> None:
    rows = []
    for i in range(10):
        text = f"the {WORDS[i % 10]} hit the film because it was bad ."
        rows.append(
            {
                "text": text,
                "target": {
                    "span1_index": 0,
                    "span1_text": f"the {WORDS[i % 10]}",
                    "span2_index": 6,
                    "span2_text": "it",
                },
                "label": bool(i % 2),
                "idx": i,
            }
        )
    _jsonl(d / "train.jsonl", rows)
    _jsonl(d / "val.jsonl", rows[:4])


def _pairs(n: int) -> list[tuple[str, str]]:
    return [(f"the {WORDS[i % 10]} was good", f"the {WORDS[(i * 3) % 10]} was bad") for i in range(n)]


def glue(d: Path, task: str) -> None:
    pairs = _pairs(12)
    if task == "mrpc":
        rows = [[i % 2, i, i + 100, a, b] for i, (a, b) in enumerate(pairs)]
        header = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    elif task == "qqp":
        rows = [[i, i, i + 100, a, b, i % 2] for i, (a, b) in enumerate(pairs)]
        header = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
    elif task == "qnli":
        rows = [[i, a, b, ["entailment", "not_entailment"][i % 2]] for i, (a, b) in enumerate(pairs)]
        header = ["index", "question", "sentence", "label"]
    elif task == "mnli":
        labels = ["entailment", "neutral", "contradiction"]
        rows = [
            [i, "x", "x", "genre", "(x)", "(x)", "(x)", "(x)", a, b, labels[i % 3], labels[i % 3]]
            for i, (a, b) in enumerate(pairs)
        ]
        header = [
            "index",
            "promptID",
            "pairID",
            "genre",
            "sentence1_binary_parse",
            "sentence2_binary_parse",
            "sentence1_parse",
            "sentence2_parse",
            "sentence1",
            "sentence2",
            "label1",
            "gold_label",
        ]
    elif task in ("glue-rte", "wnli"):
        values = ["entailment", "not_entailment"] if task == "glue-rte" else [0, 1]
        rows = [[i, a, b, values[i % 2]] for i, (a, b) in enumerate(pairs)]
        header = ["index", "sentence1", "sentence2", "label"]
    elif task == "cola":
        rows = [["src", i % 2, "*" if i % 2 == 0 else "", a] for i, (a, _) in enumerate(pairs)]
        header = None
    elif task == "stsb":
        rows = [
            [i, "main", "f", "2012", i, "none", "none", a, b, f"{(i % 6) * 0.8:.3f}"] for i, (a, b) in enumerate(pairs)
        ]
        header = [
            "index",
            "genre",
            "filename",
            "year",
            "old_index",
            "source1",
            "source2",
            "sentence1",
            "sentence2",
            "score",
        ]
    else:
        raise ValueError(task)
    _tsv(d / "train.tsv", header, rows)
    _tsv(d / ("dev_matched.tsv" if task == "mnli" else "dev.tsv"), header, rows[:6])
    if task == "mnli":
        _tsv(d / "dev_mismatched.tsv", header, rows[6:])


WRITERS = {
    "copa": copa,
    "multirc": multirc,
    "record": record,
    "wic": wic,
    "wsc": wsc,
    **{t: (lambda d, t=t: glue(d, t)) for t in ("mrpc", "qqp", "qnli", "mnli", "glue-rte", "wnli", "cola", "stsb")},
}


def write(task: str, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    WRITERS[task](directory)
    return directory
