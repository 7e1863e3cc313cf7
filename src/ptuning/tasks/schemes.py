"""Tag schemes of sequence-labelling data: IOB1, IOB2 (BIO), BIOES and BILOU.

Everything is converted to IOB2 inside (one label set, one metric) and
converted back to the data's own scheme when predictions are written.
"""

from __future__ import annotations

SCHEMES = ("iob1", "iob2", "bioes", "bilou")


def split(tag: str) -> tuple[str, str]:
    """``"B-PER"`` -> ``("B", "PER")``; ``"O"`` -> ``("O", "")``."""
    if tag == "O" or "-" not in tag:
        return "O", ""
    prefix, kind = tag.split("-", 1)
    return prefix, kind


def detect(sentences: list[list[str]]) -> str:
    """Guess the scheme: E-/S- means BIOES, L-/U- BILOU, an I- opening an entity IOB1, else IOB2."""
    prefixes = {split(t)[0] for tags in sentences for t in tags}
    if prefixes & {"L", "U"}:
        return "bilou"
    if prefixes & {"E", "S"}:
        return "bioes"
    for tags in sentences:
        previous = "O"
        for tag in tags:
            prefix, kind = split(tag)
            if prefix == "I" and split(previous)[1] != kind:
                return "iob1"
            previous = tag
    return "iob2"


def to_iob2(tags: list[str], scheme: str) -> list[str]:
    out = []
    for i, tag in enumerate(tags):
        prefix, kind = split(tag)
        if prefix == "O":
            out.append("O")
        elif scheme == "iob1":
            prev_kind = split(tags[i - 1])[1] if i else ""
            starts = prefix == "B" or prev_kind != kind or split(tags[i - 1])[0] == "O"
            out.append(f"{'B' if starts else 'I'}-{kind}")
        elif prefix in ("B", "S", "U"):
            out.append(f"B-{kind}")
        else:  # I, E, L
            out.append(f"I-{kind}")
    return out


def from_iob2(tags: list[str], scheme: str) -> list[str]:
    if scheme == "iob2":
        return list(tags)
    out = []
    for i, tag in enumerate(tags):
        prefix, kind = split(tag)
        following = split(tags[i + 1]) if i + 1 < len(tags) else ("O", "")
        continues = following == ("I", kind)
        if prefix == "O":
            out.append("O")
        elif scheme == "iob1":
            previous = split(tags[i - 1]) if i else ("O", "")
            needs_b = prefix == "B" and previous[1] == kind and previous[0] != "O"
            out.append(f"{'B' if needs_b else 'I'}-{kind}")
        else:
            single, end = ("S", "E") if scheme == "bioes" else ("U", "L")
            if prefix == "B":
                out.append(f"B-{kind}" if continues else f"{single}-{kind}")
            else:
                out.append(f"I-{kind}" if continues else f"{end}-{kind}")
    return out


def repair(tags: list[str]) -> list[str]:
    """Make a predicted IOB2 sequence valid: an I-X that does not continue an X entity becomes B-X."""
    out = []
    for tag in tags:
        prefix, kind = split(tag)
        if prefix == "I" and (not out or split(out[-1])[1] != kind or split(out[-1])[0] == "O"):
            tag = f"B-{kind}"
        out.append(tag)
    return out
