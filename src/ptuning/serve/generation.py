"""``POST /v1/generate``: text from generation prompts, rows of different tasks decoded in one batch.

Each request names its task (``{"task": "e2e", "inputs": [{"mr": ...}], "max_new_tokens": 40}``); concurrent
requests are gathered like ``/v1/predict``'s (a :class:`~ptuning.serve.server.MicroBatcher` over this module's
:class:`GenerationRunner`), and the gathered rows that decode alike (the same decoding options) run as one
``generate`` call: every deep-prefix row indexes its own prompt in a stack of the batch's prompts, so prompts of
different tasks and lengths share the backbone at every decoding step. Input-level prompts decode per prompt.
Requests pass the same token check as ``/v1/predict``. The module uses the pool's ``get``, ``prepare``, encoder,
tokenizer and lock only.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import torch
from fastapi import FastAPI, Request

from ..decoding import DecodingConfig, causal_lm_view, generate_ids
from ..encoders import PrefixBatch, PrefixStack, PromptInputs
from ..errors import InputError, PTuningError
from .guard import ApiError, read_json, require
from .pool import LoadedPrompt, PreparedRow, PromptPool, UnknownTask

DECODING_FIELDS = ("max_new_tokens", "num_beams", "do_sample", "temperature", "top_p", "top_k", "seed")


def generate_rows(pool: PromptPool, rows: list[PreparedRow], config: DecodingConfig) -> list[dict]:
    """``{"generated": text}`` for each prepared row (``PromptPool.prepare``), in order, decoded with ``config``.

    Deep-prefix rows of every task decode together (each row indexes its own prompt in a stack of the batch's
    prompts); input-level prompts decode per prompt. A row decodes with the prompt it was prepared for.
    """
    for row in rows:
        if not row.prompt.task.uses_lm_head:
            raise InputError(f"task {row.prompt.name!r} ({row.prompt.task.family}) does not generate: POST /v1/predict")
    features = [row.features[0] for row in rows]
    groups: dict[int, list[int]] = defaultdict(list)  # 0: the deep prefixes together; else one group per prompt
    for i, row in enumerate(rows):
        groups[0 if row.prompt.prefix is not None else id(row.prompt)].append(i)
    texts: list[str] = [""] * len(rows)
    with pool._lock, torch.inference_mode():
        for members in groups.values():
            members = sorted(members, key=lambda i: -features[i]["prompt_length"])
            for start in range(0, len(members), pool.max_batch):
                chunk = members[start : start + pool.max_batch]
                outputs = _decode(pool, [rows[i].prompt for i in chunk], [features[i] for i in chunk], config)
                for i, text in zip(chunk, outputs, strict=True):
                    texts[i] = text
    return [{"generated": text} for text in texts]


def _decode(pool: PromptPool, prompts: list[LoadedPrompt], features: list[dict], config: DecodingConfig) -> list[str]:
    collate = prompts[0].task.collator(pool.tokenizer)
    ids, mask = collate.prompts(features)  # (B, L) each, padded on the left
    if prompts[0].prefix is not None:
        distinct = list({id(p): p for p in prompts}.values())
        stack = PrefixStack.build([p.prefix for p in distinct])
        where = {id(p): i for i, p in enumerate(distinct)}
        index = torch.tensor([where[id(p)] for p in prompts], device=pool.device)  # (B,)
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
    return [text.strip() for text in pool.tokenizer.batch_decode(new, skip_special_tokens=True)]


class GenerationRunner:
    """What a micro-batcher calls: rows ``(prepared row, decoding)`` of many requests, grouped by decoding."""

    def __init__(self, pool: PromptPool) -> None:
        self.pool = pool

    def predict_prepared(self, rows: list[tuple[PreparedRow, DecodingConfig]]) -> list[dict]:
        by_config: dict[DecodingConfig, list[int]] = defaultdict(list)
        for i, (_, config) in enumerate(rows):
            by_config[config].append(i)
        results: list[dict] = [{}] * len(rows)
        for config, members in by_config.items():
            for i, output in zip(members, generate_rows(self.pool, [rows[i][0] for i in members], config), strict=True):
                results[i] = output
        return results


def add_generate_route(app: FastAPI, pool: PromptPool, limits, tokens, metrics) -> None:
    """Register ``POST /v1/generate`` on ``app`` (its own micro-batcher and thread, started at first use)."""
    from .server import MicroBatcher, task_and_inputs

    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ptuning-generate")
    batcher = MicroBatcher(GenerationRunner(pool), limits, metrics, executor)

    @app.post("/v1/generate")
    async def generate(request: Request) -> dict:
        """Generate text for a list of inputs of one generation task (``{"mr": ...}`` for e2e)."""
        require(request, tokens.predict_refusal(request.headers.get("authorization")))
        data = await read_json(request, limits.max_body_bytes, limits.max_json_depth)
        name, inputs = task_and_inputs(data, limits)
        config = _decoding(pool, name, data)
        prepared = await asyncio.get_running_loop().run_in_executor(executor, _prepare, pool, name, inputs)
        metrics.inputs += len(prepared)
        if batcher.task is None:
            batcher.start()
        return {"task": name, "outputs": await batcher.submit([(row, config) for row in prepared])}


def _decoding(pool: PromptPool, name: str, data: dict) -> DecodingConfig:
    """The task's decoding with the request's options, or the 4xx saying what is wrong."""
    try:
        loaded = pool.get(name)
        if not loaded.task.uses_lm_head:
            raise InputError(f"task {name!r} ({loaded.task.family}) does not generate text: use POST /v1/predict")
        return loaded.task.decoding.with_options(**{k: data.get(k) for k in DECODING_FIELDS})
    except UnknownTask as exc:
        raise ApiError(404, str(exc)) from None
    except PTuningError as exc:
        message = str(exc)
        for field in DECODING_FIELDS:  # the API's field names, not the command line's flags
            message = message.replace("--" + field.replace("_", "-"), field)
        raise ApiError(422, message) from None


def _prepare(pool: PromptPool, name: str, inputs: list) -> list[PreparedRow]:
    rows = []
    for i, value in enumerate(inputs):
        try:
            rows.append(pool.prepare(name, value))
        except UnknownTask as exc:  # unloaded meanwhile
            raise ApiError(404, str(exc)) from None
        except InputError as exc:
            raise ApiError(422, f"input {i}: {exc}") from None
    return rows
