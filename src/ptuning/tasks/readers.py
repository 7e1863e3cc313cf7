"""Reading records from the official distribution files (JSONL, TSV, CSV) or the HF hub.

Every record remembers its file and line so a bad value can be reported where
it is. Errors are :class:`DataError`: one line, file and line number included.
Every file is read as UTF-8 with an optional byte-order mark (``utf-8-sig``):
the GLUE download script writes MRPC with one, and a mark left in place glues
itself to the first column name (``\ufeffQuality``), which then goes missing.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(frozen=True)
class Record:
    """One row of a data file: its fields and where it came from."""

    fields: dict
    path: str
    line: int

    def get(self, column: str):
        """The value of ``column``, or a DataError naming the file and line."""
        if column not in self.fields:
            have = ", ".join(sorted(map(str, self.fields))) or "none"
            raise DataError(f"missing column {column!r} (columns here: {have})", self.path, self.line)
        return self.fields[column]


def read_records(path: str | os.PathLike, header: tuple[str, ...] | None = None) -> list[Record]:
    """All records of a ``.jsonl``/``.json`` (one object per line), ``.tsv`` or ``.csv`` file."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path)
    suffix = path.suffix.lower()
    if suffix == ".json" and _is_squad(path):
        records = _read_squad(json.loads(path.read_text(encoding="utf-8-sig"))["data"], path)
    elif suffix in (".jsonl", ".json"):
        records = list(_read_jsonl(path))
    elif suffix in (".tsv", ".csv"):
        records = list(_read_delimited(path, "\t" if suffix == ".tsv" else ",", header))
    elif suffix in CONLL_SUFFIXES:
        records = list(_read_conll(path))
    else:
        raise DataError("unsupported file type; use .jsonl, .tsv, .csv or a CoNLL .txt/.conll file", path)
    if not records:
        raise DataError("the file holds no examples (empty split)", path)
    return records


def _is_squad(path: Path) -> bool:
    """A whole-file JSON object with a ``data`` list (the SQuAD layout), not one object per line."""
    with path.open(encoding="utf-8-sig") as handle:
        first = handle.readline()
    try:
        obj = json.loads(first)
    except json.JSONDecodeError:  # an object spread over lines: a whole-file JSON document
        return first.lstrip().startswith("{")
    return isinstance(obj, dict) and isinstance(obj.get("data"), list)


def _read_squad(data: list, path: Path) -> list[Record]:
    """One record per question of an official SQuAD JSON file (``data`` -> paragraphs -> qas)."""
    records = []
    for article in data:
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            for qa in paragraph.get("qas", []):
                fields = {
                    "id": qa.get("id"),
                    "title": article.get("title", ""),
                    "question": qa.get("question"),
                    "context": paragraph.get("context"),
                    "answers": {
                        "text": [a["text"] for a in qa.get("answers", [])],
                        "answer_start": [a["answer_start"] for a in qa.get("answers", [])],
                    },
                    "is_impossible": bool(qa.get("is_impossible", False)),
                }
                records.append(Record(fields, str(path), p + 1))
    if not records:
        raise DataError("the file holds no questions", path)
    return records


def _read_jsonl(path: Path) -> Iterator[Record]:
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                fields = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"malformed JSON line ({exc.msg})", path, number) from None
            if not isinstance(fields, dict):
                raise DataError("expected one JSON object per line", path, number)
            yield Record(fields, str(path), number)


CONLL_SUFFIXES = (".txt", ".conll", ".conllx", ".gold_conll", ".bio", ".iob")


def _read_conll(path: Path) -> Iterator[Record]:
    """One record per sentence of a CoNLL column file: ``rows`` (split columns) and their ``lines``.

    Blank lines end a sentence; ``-DOCSTART-`` lines and ``#`` comments (CoNLL-2012) are skipped.
    """
    rows: list[list[str]] = []
    lines: list[int] = []
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            cells = line.split()
            if cells and (cells[0] == "-DOCSTART-" or line.startswith("#")):
                continue
            if cells:
                rows.append(cells)
                lines.append(number)
            elif rows:
                yield Record({"rows": rows, "lines": lines}, str(path), lines[0])
                rows, lines = [], []
    if rows:
        yield Record({"rows": rows, "lines": lines}, str(path), lines[0])


def _read_delimited(path: Path, delimiter: str, given_header: tuple[str, ...] | None = None) -> Iterator[Record]:
    # GLUE TSVs are not quoted (sentences contain bare quotes), CSVs usually are.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = csv.reader(handle, delimiter=delimiter, quoting=quoting)
        header = list(given_header) if given_header else next(rows, None)
        if header is None:
            return
        for row in rows:
            number = rows.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataError(f"malformed line: {len(row)} fields where the header has {len(header)}", path, number)
            yield Record(dict(zip(header, row, strict=False)), str(path), number)


def find_split_file(directory: Path, candidates: tuple[str, ...], split: str) -> Path:
    for name in candidates:
        if (directory / name).is_file():
            return directory / name
    raise DataError(f"no {split} split here (looked for {', '.join(candidates)})", directory)


def read_hf(dataset_id: str, config: str | None, split: str) -> list[Record]:
    """Records from a Hugging Face dataset (needs network access to the hub)."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise DataError(
            f"{dataset_id!r} is not a local directory and HF_HUB_OFFLINE=1; pass a directory with the split files"
        )
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise DataError("reading a hub dataset needs the `datasets` package") from exc
    try:
        rows = datasets.load_dataset(dataset_id, config, split=split)
    except Exception as exc:  # the hub raises many types; all mean "cannot read it"
        raise DataError(f"cannot load hub dataset {dataset_id!r} ({config}) split {split!r}: {exc}") from None
    features = rows.features
    records = []
    for index, row in enumerate(rows):
        for column, feature in features.items():
            names = getattr(feature, "names", None)
            if names and isinstance(row.get(column), int) and row[column] >= 0:
                row[column] = names[row[column]]
            inner = getattr(getattr(feature, "feature", None), "names", None)  # a list of class ids (NER tags)
            if inner and isinstance(row.get(column), list):
                row[column] = [inner[i] for i in row[column]]
        records.append(Record(row, f"{dataset_id}[{split}]", index + 1))
    if not records:
        raise DataError("the split holds no examples", f"{dataset_id}[{split}]")
    return records
