"""Metrics as the official benchmarks define them.

Small enough to write out, so the definition is visible and tested against
hand-computed cases (SuperGLUE CB's F1 is the unweighted mean of per-class F1).
"""

from __future__ import annotations

from collections.abc import Sequence


def accuracy(predictions: Sequence, references: Sequence) -> float:
    if not references:
        return 0.0
    return sum(p == r for p, r in zip(predictions, references, strict=False)) / len(references)


def f1_per_class(predictions: Sequence, references: Sequence, label) -> float:
    tp = sum(p == label and r == label for p, r in zip(predictions, references, strict=False))
    fp = sum(p == label and r != label for p, r in zip(predictions, references, strict=False))
    fn = sum(p != label and r == label for p, r in zip(predictions, references, strict=False))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def macro_f1(predictions: Sequence, references: Sequence, labels: Sequence) -> float:
    """Unweighted mean of the F1 of every label (SuperGLUE CB)."""
    return sum(f1_per_class(predictions, references, label) for label in labels) / len(labels)


METRICS = {
    "accuracy": lambda preds, refs, labels: accuracy(preds, refs),
    "macro_f1": lambda preds, refs, labels: macro_f1(preds, refs, labels),
}


def compute(names: Sequence[str], predictions: Sequence, references: Sequence, labels: Sequence) -> dict:
    return {name: METRICS[name](predictions, references, labels) for name in names}
