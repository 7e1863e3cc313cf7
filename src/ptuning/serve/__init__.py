"""Serving many prompts from one backbone: the prompt pool and the HTTP server."""

from .pool import PromptPool, UnknownTask

__all__ = ["PromptPool", "UnknownTask"]
