"""Backbones and their families' injectors: see :class:`Encoder`."""

from .base import FamilySupport, Injector
from .encoder import INJECTORS, Encoder, injector_for
from .probe import AttentionProbe, AttentionRecord
from .prompts import LatePrompt, PrefixBatch, PrefixGate, PrefixStack, PromptInputs

__all__ = [
    "INJECTORS",
    "AttentionProbe",
    "AttentionRecord",
    "Encoder",
    "FamilySupport",
    "Injector",
    "LatePrompt",
    "PrefixBatch",
    "PrefixGate",
    "PrefixStack",
    "PromptInputs",
    "injector_for",
]
