"""Deep prompts for generation: the prompt reaches every decoding step, through the KV cache and mixed batches.

Tiny random GPT-2 / Llama / Qwen2 causal LMs (``gen_fixtures.py``); decoding is transformers' ``generate``.
"""

from __future__ import annotations

import pytest
import torch
from gen_fixtures import tiny_decoder

from ptuning import backbones
from ptuning.decoding import DecodingConfig, causal_lm_view, generate_ids
from ptuning.encoders import Encoder, PrefixBatch, PrefixStack, PromptInputs
from ptuning.errors import PTuningError

FAMILIES = ("gpt2", "llama", "qwen2")
EOS, PAD = 3, 0


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny matrices run faster on one thread


def setup(family: str):
    backbone = tiny_decoder(family).base_model
    encoder = Encoder(backbone)
    encoder.enable_prefix()
    return encoder, backbones.output_embeddings(backbone)


def random_prefix(encoder: Encoder, length: int, seed: int) -> torch.Tensor:
    g = encoder.geometry
    generator = torch.Generator().manual_seed(seed)
    return 2 * torch.randn(g.num_layers, 2, g.num_kv_heads, length, g.head_dim, generator=generator)


def left_pad(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([[PAD] * (width - len(r)) + r for r in rows])  # (B, L)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])  # (B, L)
    return ids, mask


def decode(encoder, head, prompt, rows, config=None, **kw) -> list[list[int]]:
    ids, mask = left_pad(rows)
    config = config or DecodingConfig(max_new_tokens=10)
    out = generate_ids(encoder, head, prompt, ids, mask, config, eos_token_id=EOS, pad_token_id=PAD, **kw)
    return [[t for t in row if t != PAD] for row in out.tolist()]


ROWS = [[5, 9, 14, 7, 22, 8], [11, 6, 30], [2, 17, 25, 12, 9]]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("beams", [1, 3])
def test_generation_with_the_cache_equals_generation_without_it(family, beams):
    encoder, head = setup(family)
    prompt = PromptInputs(prefix=PrefixBatch.single(random_prefix(encoder, 4, seed=1)))
    config = DecodingConfig(max_new_tokens=10, num_beams=beams)
    cached = decode(encoder, head, prompt, ROWS, config)
    uncached = decode(encoder, head, prompt, ROWS, config, use_cache=False)
    assert cached == uncached
    assert cached != decode(encoder, head, PromptInputs(), ROWS, config)  # the prefix does steer every row


@pytest.mark.parametrize("family", FAMILIES)
def test_mixed_prompts_in_one_batch_equal_each_prompt_alone(family):
    """Rows of different prompts (lengths 4 and 2, padded slots masked) and different lengths (left padding)."""
    encoder, head = setup(family)
    prefixes = [random_prefix(encoder, 4, seed=1), random_prefix(encoder, 2, seed=2)]
    stack = PrefixStack.build(prefixes)
    which = torch.tensor([0, 1, 0])
    for beams in (1, 2):
        config = DecodingConfig(max_new_tokens=8, num_beams=beams)
        mixed = decode(encoder, head, PromptInputs(prefix=PrefixBatch.from_stack(stack, which)), ROWS, config)
        alone = [
            decode(encoder, head, PromptInputs(prefix=PrefixBatch.single(prefixes[w])), [row], config)[0]
            for w, row in zip(which.tolist(), ROWS, strict=True)
        ]
        assert mixed == alone
        assert mixed[0] != decode(encoder, head, PromptInputs(prefix=PrefixBatch.single(prefixes[1])), ROWS[:1])[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_input_level_prompt_decodes_each_row_as_alone(family):
    """Prompt tuning: the vectors go after each row's left padding, so a padded row decodes as it does alone."""
    encoder, head = setup(family)
    embeds = torch.randn(3, encoder.geometry.hidden_size, generator=torch.Generator().manual_seed(3))
    prompt = PromptInputs(embeds=embeds)
    batch = decode(encoder, head, prompt, ROWS)
    assert batch == [decode(encoder, head, prompt, [row])[0] for row in ROWS]
    assert batch != decode(encoder, head, PromptInputs(), ROWS)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_cache_holds_real_tokens_only_and_positions_are_not_shifted(family):
    """After decoding T tokens from L prompt tokens the cache holds L + T - 1 positions per layer (no prefix slots),
    and the first generated token is the one the training forward (no cache, no generate) predicts."""
    from ptuning.decoding import PROMPT_KWARG

    encoder, head = setup(family)
    prefix = PrefixBatch.single(random_prefix(encoder, 5, seed=4))
    ids, mask = left_pad([ROWS[0]])
    view = causal_lm_view(encoder, head)
    out = view.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=4,
        min_new_tokens=4,
        do_sample=False,
        return_dict_in_generate=True,
        pad_token_id=PAD,
        **{PROMPT_KWARG: PromptInputs(prefix=prefix)},
    )
    cache = getattr(out, "cache", None) or out.past_key_values
    assert cache.get_seq_length() == ids.shape[1] + 4 - 1
    hidden = encoder(ids, mask, prompt=PromptInputs(prefix=prefix))  # (1, L, H): the training path
    assert int(head(hidden[0, -1]).argmax()) == int(out.sequences[0, ids.shape[1]])


def test_prompts_computed_from_the_input_are_refused():
    encoder, head = setup("llama")
    gated = PrefixBatch(kv=random_prefix(encoder, 2, seed=0).unsqueeze(2), gate=lambda *a: None)
    with pytest.raises(PTuningError, match="cannot generate"):
        decode(encoder, head, PromptInputs(prefix=gated), ROWS[:1])


@pytest.mark.parametrize(
    "options, flag",
    [
        ({"max_new_tokens": 0}, "--max-new-tokens"),
        ({"num_beams": 0}, "--num-beams"),
        ({"temperature": 0.0}, "--temperature"),
        ({"top_p": 1.5}, "--top-p"),
        ({"max_new_tokens": True}, "--max-new-tokens"),
    ],
)
def test_bad_decoding_settings_are_one_line_errors(options, flag):
    with pytest.raises(PTuningError, match=flag):
        DecodingConfig(**options)


def test_sampling_is_reproducible_by_seed_and_stops_at_eos():
    encoder, head = setup("llama")
    prompt = PromptInputs(prefix=PrefixBatch.single(random_prefix(encoder, 3, seed=5)))
    config = DecodingConfig(max_new_tokens=12, do_sample=True, temperature=1.5, seed=7)
    first = decode(encoder, head, prompt, ROWS, config)
    assert first == decode(encoder, head, prompt, ROWS, config)
    assert first != decode(encoder, head, prompt, ROWS, DecodingConfig(max_new_tokens=12, do_sample=True, seed=8))
    for row in first:  # nothing after an EOS
        assert EOS not in row[:-1]
