"""Metrics of generated text, from their standard packages: BLEU and chrF (sacrebleu), ROUGE (rouge-score).

Both packages are the ``generation`` extra (``pip install "ptuning[generation]"``); without them a generation
task says so in one line. Every metric is on a 0-100 scale.

* ``bleu``: sacreBLEU's corpus BLEU (13a tokenisation), against every reference of a segment: E2E's test MRs
  have 1 to 18 references each, and sacreBLEU takes a variable number (missing ones padded with None). The E2E
  challenge's own script (NLTK/COCO BLEU) gives close but not identical numbers.
* ``chrf``: sacreBLEU's corpus chrF (character 6-grams, beta 2), multi-reference the same way.
* ``rouge1`` / ``rouge2`` / ``rougeL``: rouge-score's F-measures with Porter stemming, per segment against its
  best-matching reference (``RougeScorer.score_multi``), averaged over segments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..errors import PTuningError

NAMES = ("bleu", "chrf", "rouge1", "rouge2", "rougeL")


def _require(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise PTuningError(
            "generation metrics need sacrebleu and rouge-score: pip install 'ptuning[generation]'"
        ) from None


def _streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Per-segment reference lists as sacreBLEU's reference streams, short lists padded with None."""
    width = max((len(r) for r in references), default=1)
    return [[refs[i] if i < len(refs) else None for refs in references] for i in range(width)]


def bleu(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    metrics = _require("sacrebleu.metrics")
    return float(metrics.BLEU().corpus_score(list(predictions), _streams(references)).score)


def chrf(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    metrics = _require("sacrebleu.metrics")
    return float(metrics.CHRF().corpus_score(list(predictions), _streams(references)).score)


def rouge(predictions: Sequence[str], references: Sequence[Sequence[str]], kinds: Sequence[str]) -> dict[str, float]:
    scorer_module = _require("rouge_score.rouge_scorer")
    scorer = scorer_module.RougeScorer(list(kinds), use_stemmer=True)
    totals = dict.fromkeys(kinds, 0.0)
    for prediction, refs in zip(predictions, references, strict=True):
        scores = scorer.score_multi(list(refs), prediction)
        for kind in kinds:
            totals[kind] += scores[kind].fmeasure
    n = max(len(predictions), 1)
    return {kind: 100 * total / n for kind, total in totals.items()}


def compute(names: Sequence[str], predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict:
    """The named metrics (:data:`NAMES`), in the order named."""
    table: dict[str, Callable[[], float]] = {
        "bleu": lambda: bleu(predictions, references),
        "chrf": lambda: chrf(predictions, references),
    }
    kinds = [n for n in names if n.startswith("rouge")]
    scores = rouge(predictions, references, kinds) if kinds else {}
    unknown = [n for n in names if n not in table and n not in scores]
    if unknown:
        raise ValueError(f"unknown text metric(s) {unknown}; known: {NAMES}")
    return {name: scores[name] if name in scores else table[name]() for name in names}


def check_installed() -> None:
    """Refuse early (before a backbone loads) when the metrics cannot be computed."""
    _require("sacrebleu.metrics")
    _require("rouge_score.rouge_scorer")
