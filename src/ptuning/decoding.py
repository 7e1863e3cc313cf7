"""Decoding with a prompt: transformers' ``generate`` on the encoder's backbone, the method's prompt at every step.

:func:`generate_ids` runs ``generate`` (greedy, beam search, sampling; stops at EOS or ``max_new_tokens``) on a
view of the frozen backbone as its family's causal-LM class (:func:`causal_lm_view`). What a method adds
(:class:`~ptuning.encoders.PromptInputs`) reaches every decoding step:

* a deep prefix travels as one keyword through the causal LM's forward into each layer's attention, exactly as in
  training (``encoders/attention.py``). The attention function joins it to the keys and values *after* the layer
  has updated its KV cache, so the cache holds real tokens only (no copy of the prefix per step or per beam), and
  positions come from the attention mask as usual (left padding: real tokens at ``0..L-1``), never shifted by it;
* input-level prompt vectors (prompt tuning) go in front of the input embeddings at the first step, after the left
  padding; they are then in the cache like any token.

A prefix computed from the input itself (a gated prefix, a late prompt) would change with every decoding step, so
such prompts are refused in one line. Rows may carry different prefixes (the serving pool's mixed batches): each
row's prefix is repeated for its beams and returned sequences.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, replace
from functools import cache

import torch
from torch import nn

from .encoders import Encoder, PromptInputs
from .errors import PTuningError

PROMPT_KWARG = "ptuning_prompt"
MAX_NEW_TOKENS = 4096


@dataclass(frozen=True)
class DecodingConfig:
    """How to decode. ``num_beams`` > 1: beam search; ``do_sample``: sampling (``temperature``, ``top_p``, ``top_k``).

    Greedy by default; every decoding stops at EOS or after ``max_new_tokens``.
    """

    max_new_tokens: int = 64
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        _whole("--max-new-tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS)
        _whole("--num-beams", self.num_beams, 1, 64)
        _whole("--top-k", self.top_k, 0, 1_000_000)
        _whole("--seed", self.seed, 0, 2**32 - 1)
        if not isinstance(self.temperature, (int, float)) or not 0 < self.temperature <= 100:
            raise PTuningError(f"--temperature must be a number in (0, 100], got {self.temperature!r}")
        if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise PTuningError(f"--top-p must be a number in (0, 1], got {self.top_p!r}")
        if not isinstance(self.do_sample, bool):
            raise PTuningError(f"--do-sample must be true or false, got {self.do_sample!r}")

    def generate_kwargs(self) -> dict:
        kwargs = {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams, "do_sample": self.do_sample}
        if self.do_sample:
            kwargs.update(temperature=float(self.temperature), top_p=float(self.top_p), top_k=self.top_k)
        else:  # the checkpoint's generation_config may ask for sampling settings greedy decoding would warn about
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs

    def with_options(self, **options) -> DecodingConfig:
        """A copy with the options that are given (None: keep)."""
        given = {k: v for k, v in options.items() if v is not None}
        return replace(self, **given) if given else self


def _whole(flag: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise PTuningError(f"{flag} must be a whole number in [{low}, {high}], got {value!r}")


@cache
def _prompted_class(base: type) -> type:
    """``base`` (a transformers causal-LM class) whose forward also takes the method's prompt.

    ``generate`` refuses keywords its model's forward does not declare, and computes position ids from the attention
    mask only when the forward declares ``position_ids``; so the subclass declares the base's signature plus one
    keyword. The prompt becomes the encoder's injector keywords (or context), like every other forward call.
    """

    def forward(self, *args, ptuning_prompt: PromptInputs | None = None, **kwargs):
        prefix = None if ptuning_prompt is None else ptuning_prompt.prefix
        injector = self._ptuning_encoder[0].injector
        kwargs.update(injector.forward_kwargs(prefix))
        with injector.context(prefix):
            return base.forward(self, *args, **kwargs)

    signature = inspect.signature(base.forward)
    params = [p for p in signature.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    extra = inspect.Parameter(PROMPT_KWARG, inspect.Parameter.KEYWORD_ONLY, default=None)
    rest = [p for p in signature.parameters.values() if p.kind == inspect.Parameter.VAR_KEYWORD]
    forward.__signature__ = signature.replace(parameters=[*params, extra, *rest])
    return type(f"Prompted{base.__name__}", (base,), {"forward": forward, "__module__": base.__module__})


def causal_lm_view(encoder: Encoder, output_embeddings: nn.Module) -> nn.Module:
    """The family's causal-LM model (``LlamaForCausalLM``...) around ``encoder.backbone`` and ``output_embeddings``.

    Built on the meta device and then given the real modules, so it costs no memory and shares every weight: it is
    a way to call ``generate``, not a copy of the model.
    """
    from transformers import AutoModelForCausalLM

    backbone = encoder.backbone
    config = copy.deepcopy(backbone.config)
    try:
        base = AutoModelForCausalLM._model_mapping[type(config)]
    except KeyError:
        raise PTuningError(
            f"{type(backbone).__name__} has no causal-LM class in transformers: it cannot generate"
        ) from None
    with torch.device("meta"):
        view = _prompted_class(base)(config)
    setattr(view, view.base_model_prefix, backbone)
    view.set_output_embeddings(output_embeddings)
    view.config = backbone.config  # the backbone's own: it names the prefix-aware attention
    view._ptuning_encoder = [encoder]  # a list: not a submodule of the view
    left = [n for n, t in [*view.named_parameters(), *view.named_buffers()] if t.is_meta]
    if left:
        raise PTuningError(f"{base.__name__}: cannot generate through it ({left[0]} is not part of the base model)")
    return view.eval()


def expand_prompt(prompt: PromptInputs, times: int) -> PromptInputs:
    """Each row's prompt repeated for its ``times`` beams or returned sequences (``generate`` repeats the rows so)."""
    if times == 1:
        return prompt
    prefix, embeds = prompt.prefix, prompt.embeds
    if prefix is not None and prefix.kv.shape[2] > 1:
        kv = prefix.kv.repeat_interleave(times, dim=2)  # (layers, 2, B * times, kv, P, hd)
        mask = None if prefix.mask is None else prefix.mask.repeat_interleave(times, dim=-2)  # ([n,] B * times, P)
        prefix = replace(prefix, kv=kv, mask=mask)
    elif prefix is not None and prefix.mask is not None:
        prefix = replace(prefix, mask=prefix.mask.repeat_interleave(times, dim=-2))  # the batch axis of either shape
    if embeds is not None and embeds.dim() == 3:
        embeds = embeds.repeat_interleave(times, dim=0)  # (B * times, P, H)
    return replace(prompt, prefix=prefix, embeds=embeds)


def check_decodable(prompt: PromptInputs) -> None:
    if prompt.late is not None or (prompt.prefix is not None and prompt.prefix.gate is not None):
        raise PTuningError(
            "this method's prompt is computed from the whole input (a gated prefix or a late prompt), which changes "
            "at every decoding step: it cannot generate; use ptv2, prompt-tuning or finetune"
        )


def left_padded_inputs(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, embeds: torch.Tensor | None, word_embeddings: nn.Module
) -> dict:
    """``generate``'s inputs for left-padded ``input_ids`` ``(B, L)``: the ids, or the embeddings with the prompt
    vectors ``(P, H)`` / ``(B, P, H)`` between each row's padding and its first token."""
    if embeds is None:
        return {"input_ids": input_ids, "attention_mask": attention_mask}
    B, P = input_ids.shape[0], embeds.shape[-2]
    words = word_embeddings(input_ids)  # (B, L, H)
    prompt = embeds.to(words.dtype).expand(B, P, words.shape[-1])  # (B, P, H)
    joined = torch.cat([prompt, words], dim=1)  # (B, P + L, H)
    mask = torch.cat([attention_mask.new_ones(B, P), attention_mask], dim=1)  # (B, P + L)
    order = torch.argsort(mask, dim=1, stable=True)  # padding first, then prompt and tokens in order
    joined = joined.gather(1, order[..., None].expand_as(joined))  # (B, P + L, H)
    return {"inputs_embeds": joined, "attention_mask": mask.gather(1, order)}


@torch.no_grad()
def generate_ids(
    encoder: Encoder,
    output_embeddings: nn.Module,
    prompt: PromptInputs,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    config: DecodingConfig,
    *,
    eos_token_id: int | None,
    pad_token_id: int,
    use_cache: bool = True,
    view: nn.Module | None = None,
) -> torch.Tensor:
    """New token ids ``(B, T)`` (after EOS: ``pad_token_id``) for left-padded prompts ``input_ids`` ``(B, L)``."""
    check_decodable(prompt)
    if prompt.prefix is not None and not encoder.prefix_enabled:
        raise PTuningError("a deep prefix was given to an encoder without prefix support: call enable_prefix()")
    view = view if view is not None else causal_lm_view(encoder, output_embeddings)
    inputs = left_padded_inputs(input_ids, attention_mask, prompt.embeds, encoder.word_embeddings())
    expanded = expand_prompt(PromptInputs(prefix=prompt.prefix), config.num_beams)
    if config.do_sample:
        torch.manual_seed(config.seed)
    out = view.generate(
        **inputs,
        ptuning_prompt=expanded if expanded.prefix is not None else None,
        use_cache=use_cache,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        **config.generate_kwargs(),
    )
    new = out[:, input_ids.shape[1] :] if "input_ids" in inputs else out  # (B, T): the new tokens only
    return after_eos(new, eos_token_id, pad_token_id)


def after_eos(ids: torch.Tensor, eos_token_id: int | None, pad_token_id: int) -> torch.Tensor:
    """``ids`` ``(B, T)`` with every token after a row's first EOS set to ``pad_token_id`` (beam search may fill
    a finished row with EOS instead), so a row's output never depends on what else was in its batch."""
    if eos_token_id is None:
        return ids
    ended = (ids == eos_token_id).long().cumsum(dim=1)  # (B, T): EOS seen up to and including t
    past = nn.functional.pad(ended[:, :-1], (1, 0)) > 0  # (B, T): an EOS strictly before t
    return ids.masked_fill(past, pad_token_id)
