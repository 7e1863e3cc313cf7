"""``POST /v1/generate``: text from generation prompts, rows of different tasks decoded in one batch.

Each request names its task (``{"task": "e2e", "inputs": [{"mr": ...}], "max_new_tokens": 40}``); concurrent
requests are gathered like ``/v1/predict``'s (a :class:`~ptuning.serve.server.MicroBatcher` over this module's
:class:`GenerationRunner`), and the gathered rows that decode alike (the same decoding options) run as one
``generate`` call: every deep-prefix row indexes its own prompt in the pool's prefix stack, so prompts of different
tasks and lengths share the backbone at every decoding step. Input-level prompts (prompt tuning) decode per task.
The module touches the pool through :meth:`PromptPool.get`, its prefix stack and its lock only.
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import torch
from fastapi import FastAPI, Request

from ..decoding import DecodingConfig, causal_lm_view, generate_ids
from ..encoders import PrefixBatch, PromptInputs
from ..errors import InputError, PTuningError
from ..tasks import Example
from .pool import LoadedPrompt, PromptPool, UnknownTask

DECODING_FIELDS = ("max_new_tokens", "num_beams", "do_sample", "temperature", "top_p", "top_k", "seed")


def generate_rows(pool: PromptPool, rows: list[tuple[str, Example]], config: DecodingConfig) -> list[dict]:
    """``{"generated": text}`` for each ``(task name, example)`` row, in order, decoded with ``config``."""
    with pool._lock:
        loaded = [pool.get(name) for name, _ in rows]
        for p in loaded:
            if not p.task.uses_lm_head:
                raise InputError(f"task {p.name!r} ({p.task.family}) does not generate text: use POST /v1/predict")
        features = [
            p.task.featurize([e], pool.tokenizer, p.token_budget).features[0]
            for p, (_, e) in zip(loaded, rows, strict=True)
        ]
        texts: list[str] = [""] * len(rows)
        shared = [i for i, p in enumerate(loaded) if p.prefix is not None]
        groups = [shared] if shared else []
        per_task: dict[str, list[int]] = defaultdict(list)
        for i, p in enumerate(loaded):
            if p.prefix is None:
                per_task[p.name].append(i)
        groups += list(per_task.values())
        for members in groups:
            members = sorted(members, key=lambda i: -features[i]["prompt_length"])
            for start in range(0, len(members), pool.max_batch):
                chunk = members[start : start + pool.max_batch]
                _decode(pool, [loaded[i] for i in chunk], [features[i] for i in chunk], config, chunk, texts)
        return [{"generated": text} for text in texts]


def _decode(pool, prompts: list[LoadedPrompt], features: list[dict], config, positions, texts) -> None:
    collate = prompts[0].task.collator(pool.tokenizer)
    ids, mask = collate.prompts(features)
    if prompts[0].prefix is not None:
        stack, index_of = pool._prefix_stack()
        index = torch.tensor([index_of[p.name] for p in prompts], device=pool.device)
        prompt = PromptInputs(prefix=PrefixBatch.from_stack(stack, index))
    else:
        prompt = prompts[0].prompt
    head = prompts[0].head.output  # every generation head of the pool is its backbone's LM head
    new = generate_ids(
        pool.encoder,
        head,
        prompt,
        ids.to(pool.device),
        mask.to(pool.device),
        config,
        eos_token_id=pool.tokenizer.eos_token_id,
        pad_token_id=collate.pad_id,
        view=causal_lm_view(pool.encoder, head),
    )
    for i, text in zip(positions, pool.tokenizer.batch_decode(new, skip_special_tokens=True), strict=True):
        texts[i] = text.strip()


class GenerationRunner:
    """What a micro-batcher calls: rows ``(task, example, decoding)`` of many requests, grouped by decoding."""

    def __init__(self, pool: PromptPool) -> None:
        self.pool = pool

    def predict(self, rows: list[tuple[str, Example, DecodingConfig]]) -> list[dict]:
        by_config: dict[DecodingConfig, list[int]] = defaultdict(list)
        for i, (_, _, config) in enumerate(rows):
            by_config[config].append(i)
        results: list[dict] = [{}] * len(rows)
        for config, members in by_config.items():
            outputs = generate_rows(self.pool, [(rows[i][0], rows[i][1]) for i in members], config)
            for i, output in zip(members, outputs, strict=True):
                results[i] = output
        return results


def add_generate_route(app: FastAPI, pool: PromptPool, limits, metrics) -> None:
    """Register ``POST /v1/generate`` on ``app`` (its own micro-batcher and model thread, started at first use)."""
    from .server import ApiError, MicroBatcher, _chars, read_json

    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ptuning-generate")
    batcher = MicroBatcher(GenerationRunner(pool), limits, metrics, executor)

    @app.post("/v1/generate")
    async def generate(request: Request) -> dict:
        """Generate text for a list of inputs of one generation task (``{"mr": ...}`` for e2e)."""
        data = await read_json(request, limits)
        name, inputs = data.get("task"), data.get("inputs")
        if not isinstance(name, str):
            raise ApiError(422, "'task' must be a string naming a loaded task")
        if not isinstance(inputs, list) or not inputs:
            raise ApiError(422, "'inputs' must be a non-empty list")
        if len(inputs) > limits.max_inputs:
            raise ApiError(413, f"at most {limits.max_inputs} inputs per request")
        try:
            loaded = pool.get(name)
            if not loaded.task.uses_lm_head:
                raise InputError(f"task {name!r} ({loaded.task.family}) does not generate text: use POST /v1/predict")
            config = loaded.task.decoding.with_options(**{k: data.get(k) for k in DECODING_FIELDS})
        except UnknownTask as exc:
            raise ApiError(404, str(exc)) from None
        except PTuningError as exc:
            raise ApiError(422, _field_names(str(exc))) from None
        rows = []
        for i, value in enumerate(inputs):
            if _chars(value) > limits.max_input_chars:
                raise ApiError(413, f"input {i} is over {limits.max_input_chars} characters")
            try:
                rows.append((name, pool.to_example(name, value), config))
            except InputError as exc:
                raise ApiError(422, f"input {i}: {exc}") from None
        metrics.inputs += len(rows)
        if batcher.task is None:
            batcher.start()
        return {"task": name, "outputs": await batcher.submit(rows)}


def _field_names(message: str) -> str:
    """A decoding error as the API spells its fields (``max_new_tokens``, not the CLI's ``--max-new-tokens``)."""
    for name in DECODING_FIELDS:
        message = message.replace("--" + name.replace("_", "-"), name)
    return message
