"""Backbones and their families' injectors: see :class:`Encoder`."""

from .base import FamilySupport, Injector
from .encoder import INJECTORS, Encoder, injector_for
from .prompts import PrefixBatch, PrefixStack, PromptInputs

__all__ = [
    "INJECTORS",
    "Encoder",
    "FamilySupport",
    "Injector",
    "PrefixBatch",
    "PrefixStack",
    "PromptInputs",
    "injector_for",
]
