"""ptuning: P-Tuning v2 (deep prompt tuning) for NLU on current transformers."""

__version__ = "0.1.0"
