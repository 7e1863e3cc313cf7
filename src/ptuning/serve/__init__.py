"""Serving many prompts from one backbone: the prompt pool and the HTTP server.

Imported lazily: the CLI reads ``tokens.py`` for its options without loading torch or FastAPI.
"""

from __future__ import annotations

__all__ = ["PromptPool", "UnknownTask"]


def __getattr__(name: str):
    if name in __all__:
        from . import pool

        return getattr(pool, name)
    raise AttributeError(name)
