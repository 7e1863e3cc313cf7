"""ptuning: P-Tuning v2 (deep prompt tuning) for NLU on current transformers.

The Python API (``api.py``): ``ptuning.train(task=..., data=..., output=..., **options)`` trains as ``ptuning
train`` does; ``ptuning.load(path)`` returns a predictor (``.predict(inputs)``, ``.evaluate(data)``). They are
imported on first use, so ``import ptuning`` (and the command line's start) stays free of torch.
"""

__version__ = "0.1.0"

__all__ = ["Predictor", "load", "train"]


def __getattr__(name: str):
    if name in ("Predictor", "load", "train"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'ptuning' has no attribute {name!r}")
