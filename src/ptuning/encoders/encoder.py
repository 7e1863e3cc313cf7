"""A frozen backbone together with the injector of its family: what every method runs on.

An :class:`Encoder` answers three questions for the rest of the library, whatever the family:
how to run the backbone with a method's :class:`PromptInputs` (a deep prefix, input-level prompt
vectors, or nothing), what the family supports, and how many input tokens a prompt leaves. The model
(``model.py``) and the serving pool both use it; neither knows which family it is.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace

import torch
from torch import nn

from .. import backbones
from ..errors import PTuningError
from .attention import AttentionInterfaceInjector
from .base import FamilySupport, Injector
from .deberta import DebertaInjector
from .probe import AttentionProbe
from .prompts import PromptInputs, prepend_prompt

# First match wins: families with their own attention code first, the attention interface last.
INJECTORS: list[type[Injector]] = [DebertaInjector, AttentionInterfaceInjector]
MIN_INPUT_TOKENS = 8


def injector_for(backbone: nn.Module) -> Injector:
    """The injector of ``backbone``'s family (:data:`INJECTORS`, first match)."""
    for injector in INJECTORS:
        if injector.matches(backbone):
            return injector()
    raise PTuningError(f"no injector serves {type(backbone).__name__}")  # unreachable: the last one matches all


class Encoder(nn.Module):
    """``backbone`` + its family's injector. ``forward`` returns hidden states aligned with ``input_ids``."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.injector = injector_for(backbone)
        self.geometry = backbones.geometry(backbone)
        self.prefix_enabled = False
        self.layer_hooks_enabled = False

    @property
    def support(self) -> FamilySupport:
        return self.injector.support

    @property
    def config(self):
        return self.backbone.config

    def word_embeddings(self) -> nn.Embedding:
        return self.backbone.get_input_embeddings()

    def enable_prefix(self) -> None:
        """Make the backbone prefix-aware (idempotent); without a prefix its outputs stay unchanged."""
        if not self.prefix_enabled:
            self.injector.attach(self.backbone)
            self.prefix_enabled = True

    def enable_layer_hooks(self) -> None:
        """Also let prompts that depend on a layer's input run: gated prefixes and late prompts (idempotent).

        Only methods that use them call this, so a plain deep prompt never pays for the hooks.
        """
        self.enable_prefix()
        if not self.layer_hooks_enabled:
            self.injector.attach_layer_hooks(self.backbone)
            self.layer_hooks_enabled = True

    def probe(self, probe: AttentionProbe) -> AbstractContextManager:
        """A context in which every forward call reports each self-attention layer's keys, values and attention
        probabilities to ``probe`` (``ptuning inspect``); outputs do not change. Refused in one line by a family
        that cannot (:meth:`Injector.probe_context`)."""
        self.enable_prefix()  # the injector's attention is where the probe is called
        return self.injector.probe_context(self.backbone, probe)

    def wrap(self, wrapper: Callable[[nn.Module], nn.Module]) -> None:
        """Replace the backbone by ``wrapper(backbone)``: for methods that bring their own injection (PEFT)."""
        self.backbone = wrapper(self.backbone)

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in backward. Works with deep prompts where the family replays the prefix."""
        if self.prefix_enabled and not self.support.checkpointing_with_prefix:
            raise PTuningError(
                f"gradient checkpointing with deep prompts is not supported on {type(self.backbone).__name__}; "
                "drop --gradient-checkpointing"
            )
        self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.backbone.config.use_cache = False

    def token_budget(self, max_length: int, input_positions: int = 0) -> int:
        """Input tokens allowed: input-level prompts occupy positions too; deep prompts do not."""
        limit = getattr(self.config, "max_position_embeddings", None)
        if limit and max_length > limit:
            raise PTuningError(f"--max-length {max_length} exceeds the backbone's {limit} positions")
        budget = max_length - input_positions
        if budget < MIN_INPUT_TOKENS:
            raise PTuningError(
                f"--max-length {max_length} leaves {budget} input tokens beside the {input_positions}-token prompt; "
                f"raise --max-length or shorten --prompt-length (at least {MIN_INPUT_TOKENS} tokens are needed)"
            )
        return budget

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        prompt: PromptInputs | None = None,
    ) -> torch.Tensor:
        """Hidden states ``(B, L, H)`` for ``input_ids`` ``(B, L)``, input-level and late prompt slots stripped."""
        prompt = prompt or PromptInputs()
        late = prompt.late if prompt.late is not None and prompt.late.length > 0 else None
        if late is not None and prompt.embeds is not None:
            raise PTuningError("a late prompt cannot be combined with an input-level prompt")
        inputs: dict = {"attention_mask": attention_mask}
        if token_type_ids is not None and not prompt.drop_token_types:
            inputs["token_type_ids"] = token_type_ids
        strip = prompt.input_positions
        if strip:
            words = self.word_embeddings()(input_ids)  # (B, L, H)
            embeds, mask, types = prepend_prompt(words, prompt.embeds, attention_mask, token_type_ids)
            inputs.update(inputs_embeds=embeds, attention_mask=mask)  # (B, P + L, H)
            if types is not None:
                inputs["token_type_ids"] = types
        elif late is not None:  # placeholder slots after the input; the late prompt's layer replaces them
            inputs.update(append_placeholders(input_ids, attention_mask, token_type_ids, late.length))
            late = replace(late, token_mask=attention_mask)
        else:
            inputs["input_ids"] = input_ids
        if prompt.position_offset:
            if strip or late is not None:
                raise PTuningError("shifted positions apply to a deep prefix alone, not to input-level or late prompts")
            inputs.update(self.injector.shifted_positions(self.backbone, input_ids, prompt.position_offset))
        prefix = prompt.prefix
        if prefix is not None and not self.prefix_enabled:
            raise PTuningError("a deep prefix was given to an encoder without prefix support: call enable_prefix()")
        if (late is not None or (prefix is not None and prefix.gate is not None)) and not self.layer_hooks_enabled:
            raise PTuningError("a gated prefix or late prompt needs the layer hooks: call enable_layer_hooks()")
        if prefix is not None and prefix.gate is not None:
            prefix = replace(prefix, token_mask=inputs["attention_mask"])
        inputs.update(self.injector.forward_kwargs(prefix, late))
        with self.injector.context(prefix, late):
            out = self.backbone(**inputs)
        return out.last_hidden_state[:, strip : strip + input_ids.shape[1]]  # (B, L, H)


def append_placeholders(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None, length: int
) -> dict:
    """The inputs with ``length`` attended placeholder tokens (id 0, type 0) after every row, ``(B, L + P)``.

    Their content never matters: no real token sees them below the late prompt's layer, which replaces them.
    They do take input positions (``L .. L + P - 1``), so the token budget leaves room for them.
    """
    inputs = {
        "input_ids": nn.functional.pad(input_ids, (0, length)),  # (B, L + P)
        "attention_mask": nn.functional.pad(attention_mask, (0, length), value=1),  # (B, L + P)
    }
    if token_type_ids is not None:
        inputs["token_type_ids"] = nn.functional.pad(token_type_ids, (0, length))  # (B, L + P)
    return inputs
