"""Metrics as the official benchmarks define them.

Small enough to write out, so the definition is visible and tested against
hand-computed cases (SuperGLUE CB's F1 is the unweighted mean of per-class F1).
"""

from __future__ import annotations

from collections.abc import Sequence


def accuracy(predictions: Sequence, references: Sequence) -> float:
    if not references:
        return 0.0
    return sum(p == r for p, r in zip(predictions, references, strict=True)) / len(references)


def f1_per_class(predictions: Sequence, references: Sequence, label) -> float:
    tp = sum(p == label and r == label for p, r in zip(predictions, references, strict=True))
    fp = sum(p == label and r != label for p, r in zip(predictions, references, strict=True))
    fn = sum(p != label and r == label for p, r in zip(predictions, references, strict=True))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def macro_f1(predictions: Sequence, references: Sequence, labels: Sequence) -> float:
    """Unweighted mean of the F1 of every label (SuperGLUE CB)."""
    return sum(f1_per_class(predictions, references, label) for label in labels) / len(labels)


def compute(names: Sequence[str], predictions: Sequence, references: Sequence, labels: Sequence, positive="1") -> dict:
    """The named metrics; ``positive`` is the positive label of binary F1 and MCC."""
    table = {
        "accuracy": lambda: accuracy(predictions, references),
        "macro_f1": lambda: macro_f1(predictions, references, labels),
        "f1": lambda: binary_f1(predictions, references, positive),
        "mcc": lambda: matthews(predictions, references, positive),
        "pearson": lambda: pearson(predictions, references),
        "spearman": lambda: spearman(predictions, references),
    }
    return {name: table[name]() for name in names}


def binary_f1(predictions: Sequence, references: Sequence, positive) -> float:
    """F1 of the positive class (GLUE MRPC/QQP, SuperGLUE MultiRC F1a)."""
    return f1_per_class(predictions, references, positive)


def matthews(predictions: Sequence, references: Sequence, positive) -> float:
    """Matthews correlation for two classes (GLUE CoLA); 0 when undefined."""
    tp = sum(p == positive and r == positive for p, r in zip(predictions, references, strict=True))
    tn = sum(p != positive and r != positive for p, r in zip(predictions, references, strict=True))
    fp = sum(p == positive and r != positive for p, r in zip(predictions, references, strict=True))
    fn = sum(p != positive and r == positive for p, r in zip(predictions, references, strict=True))
    denominator = ((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)) ** 0.5
    return 0.0 if denominator == 0 else (tp * tn - fp * fn) / denominator


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    vx = sum((x - mx) ** 2 for x in xs) ** 0.5
    vy = sum((y - my) ** 2 for y in ys) ** 0.5
    return 0.0 if vx == 0 or vy == 0 else cov / (vx * vy)


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks starting at 1, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    return pearson(_ranks(xs), _ranks(ys))


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, drop punctuation and articles, collapse white space."""
    import re
    import string

    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, gold: str) -> float:
    from collections import Counter

    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:  # as the official SQuAD 2.0 script: two empty answers agree fully
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def max_over_gold(prediction: str, golds: Sequence[str]) -> tuple[float, float]:
    """(exact match, F1) of one prediction against its best-matching gold answer."""
    em = max(float(normalize_answer(prediction) == normalize_answer(g)) for g in golds)
    return em, max(token_f1(prediction, g) for g in golds)


def multirc(predictions: Sequence, references: Sequence, groups: Sequence) -> dict:
    """SuperGLUE MultiRC: F1a over all answer options, EM over questions (all options right)."""
    f1a = binary_f1(predictions, references, "1")
    by_question: dict = {}
    for p, r, g in zip(predictions, references, groups, strict=True):
        by_question.setdefault(g, []).append(p == r)
    em = sum(all(v) for v in by_question.values()) / max(1, len(by_question))
    return {"f1a": f1a, "em": em}
