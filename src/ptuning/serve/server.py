"""HTTP server: FastAPI over a :class:`PromptPool`, with micro-batching across tasks.

Concurrent requests, whatever their task, are gathered for at most
``max_wait_ms`` (or until ``max_batch`` inputs) and run as one backbone
forward on a single model thread, so the event loop keeps accepting requests.
Inputs are validated and tokenized on a thread of their own before they join a
batch: bad input never reaches the model and is refused with a JSON 4xx and a
one-line reason (``guard.py``). If a gathered batch fails, its requests are
retried one by one so only the faulty one fails. A prediction holding NaN or
infinity is answered with a 500 naming it, never with ``null`` (a score that
would look valid) or ``NaN`` (which is not JSON).

Loading and unloading prompts (admin token only) run on a third thread: the
files are read and verified there, and the model thread waits only for the
moment the prompt is inserted. API docs (``/docs``, ``/redoc``) are served
from bundled assets (``fastapi-offline``), so they work without internet.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from fastapi_offline import FastAPIOffline

from ..errors import InputError, PTuningError
from ..finite import all_finite
from .generation import add_generate_route
from .guard import ApiError, add_error_handling, chars, read_json, require
from .metrics import Metrics
from .pool import DuplicateTask, LoadLimitExceeded, PromptPool, UnknownTask
from .tokens import Tokens

log = logging.getLogger("ptuning.serve")


@dataclass
class Limits:
    max_batch: int = 64
    max_wait_ms: float = 5.0
    max_body_bytes: int = 1_000_000
    max_inputs: int = 256
    max_input_chars: int = 20_000
    max_json_depth: int = 32
    max_sequences: int = 64  # per input: choices x windows


@dataclass
class Job:
    rows: list
    future: asyncio.Future
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = len(self.rows)


class MicroBatcher:
    """Gathers jobs into batches of at most ``max_batch`` rows, waiting at most ``max_wait_ms``."""

    def __init__(self, pool: PromptPool, limits: Limits, metrics: Metrics, executor: ThreadPoolExecutor) -> None:
        self.pool, self.limits, self.metrics, self.executor = pool, limits, metrics, executor
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()

    async def submit(self, rows: list) -> list[dict]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(Job(rows, future))
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            size = jobs[0].size
            deadline = loop.time() + self.limits.max_wait_ms / 1000
            while size < self.limits.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
                jobs.append(job)
                size += job.size
            await self._run(jobs)

    async def _run(self, jobs: list[Job]) -> None:
        loop = asyncio.get_running_loop()
        rows = [row for job in jobs for row in job.rows]
        started = loop.time()
        try:
            results = await loop.run_in_executor(self.executor, self.pool.predict_prepared, rows)
            self.metrics.observe_batch(len(rows), loop.time() - started)
        except Exception:
            if len(jobs) == 1:
                log.exception("prediction failed for a request of %d inputs", len(rows))
                results = None
            else:  # isolate the faulty request: retry one by one
                for job in jobs:
                    await self._run([job])
                return
        offset = 0
        for job in jobs:
            if job.future.done():
                continue
            if results is None:
                job.future.set_exception(ApiError(500, "prediction failed for this request; the server log says why"))
            else:
                job.future.set_result(results[offset : offset + job.size])
            offset += job.size


PREDICT_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["task", "inputs"],
                    "properties": {
                        "task": {"type": "string", "description": "A loaded task name (GET /v1/tasks)."},
                        "inputs": {
                            "type": "array",
                            "description": "Inputs in the task's shape: a text, [text, pair] or "
                            "an object keyed by the task's columns.",
                        },
                    },
                },
                "example": {"task": "sst2", "inputs": ["a gripping, funny film"]},
            }
        },
    }
}


@dataclass
class Executors:
    """The model thread (forwards), the input thread (validation, tokenization), the admin thread (loads)."""

    model: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "ptuning-model"))
    inputs: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "ptuning-inputs"))
    admin: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "ptuning-admin"))

    def shutdown(self) -> None:
        for executor in (self.model, self.inputs, self.admin):
            executor.shutdown(wait=False)


def create_app(
    pool: PromptPool, limits: Limits | None = None, tokens: Tokens | None = None, *, scoring: bool = False
) -> FastAPI:
    """The FastAPI app: one micro-batcher and one model thread over ``pool``; routes added by the helpers below.

    ``tokens``: without an admin token, loading and unloading prompts over HTTP is off. ``scoring`` adds
    ``POST /v1/score`` (``scoring.py``: forward-only prompt search, for the admin or loopback clients).
    """
    limits, tokens = limits or Limits(), tokens or Tokens()
    metrics = Metrics()
    executors = Executors()
    batcher = MicroBatcher(pool, limits, metrics, executors.model)

    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()
        executors.shutdown()

    app = FastAPIOffline(
        title="ptuning", description="P-Tuning v2 prompts served from one backbone.", lifespan=lifespan
    )
    app.state.pool, app.state.metrics, app.state.limits, app.state.tokens = pool, metrics, limits, tokens
    add_error_handling(app, metrics)
    _add_predict(app, pool, limits, tokens, metrics, batcher, executors.inputs)
    add_generate_route(app, pool, limits, tokens, metrics)  # POST /v1/generate (generation.py)
    _add_task_management(app, pool, limits, tokens, executors.admin)
    _add_operations(app, pool, metrics)
    if scoring:
        from .scoring import add_scoring  # imports this module: not at the top

        add_scoring(app, pool, limits, tokens, executors.model)
    return app


def _add_predict(app: FastAPI, pool, limits: Limits, tokens: Tokens, metrics: Metrics, batcher, inputs_thread) -> None:
    @app.post("/v1/predict", openapi_extra=PREDICT_SCHEMA)
    async def predict(request: Request) -> dict:
        """Predict for a list of inputs of one task."""
        require(request, tokens.predict_refusal(request.headers.get("authorization")))
        data = await read_json(request, limits.max_body_bytes, limits.max_json_depth)
        name, inputs = task_and_inputs(data, limits)
        if name not in pool.prompts:
            raise ApiError(404, f"no task named {name[:100]!r} is loaded (GET /v1/tasks lists them)")
        if pool.prompts[name].task.uses_lm_head:  # it decodes; a forward pass has no answer for it
            raise ApiError(422, f"task {name!r} generates text: POST /v1/generate")
        rows = await asyncio.get_running_loop().run_in_executor(inputs_thread, _prepare, pool, name, inputs, limits)
        metrics.inputs += len(rows)
        return {"task": name, "predictions": _finite(name, await batcher.submit(rows))}


def task_and_inputs(data: dict, limits: Limits) -> tuple[str, list]:
    """A request's ``task`` and ``inputs`` (``/v1/predict``, ``/v1/generate``), or the 4xx saying what is wrong."""
    name, inputs = data.get("task"), data.get("inputs")
    if not isinstance(name, str):
        raise ApiError(422, "'task' must be a string naming a loaded task")
    if not isinstance(inputs, list) or not inputs:
        raise ApiError(422, "'inputs' must be a non-empty list")
    if len(inputs) > limits.max_inputs:
        raise ApiError(413, f"at most {limits.max_inputs} inputs per request")
    for i, value in enumerate(inputs):
        if chars(value) > limits.max_input_chars:
            raise ApiError(413, f"input {i} is over {limits.max_input_chars} characters")
    return name, inputs


def _prepare(pool: PromptPool, name: str, inputs: list, limits: Limits) -> list:
    """Every input validated and tokenized (on the input thread), or the first one's error as a 4xx."""
    rows = []
    for i, value in enumerate(inputs):
        try:
            rows.append(pool.prepare(name, value, limits.max_sequences))
        except UnknownTask as exc:  # unloaded meanwhile
            raise ApiError(404, str(exc)) from None
        except InputError as exc:
            raise ApiError(422, f"input {i}: {exc}") from None
    return rows


def _finite(name: str, predictions: list[dict]) -> list[dict]:
    """Predictions as they are, or an error: JSON has no NaN, and a silent ``null`` score would look valid."""
    for i, prediction in enumerate(predictions):
        if not all_finite(prediction):
            fields = ", ".join(k for k, v in prediction.items() if not all_finite(v))
            raise ApiError(500, f"task {name!r} produced a NaN or infinite {fields} for input {i}")
    return predictions


def _add_task_management(app: FastAPI, pool: PromptPool, limits: Limits, tokens: Tokens, admin_thread) -> None:
    @app.get("/v1/tasks")
    async def tasks(request: Request) -> dict:
        """The loaded prompts (their paths on the server only for the admin)."""
        return {"tasks": pool.describe(with_paths=tokens.is_admin(request.headers.get("authorization")))}

    @app.post("/v1/tasks", status_code=201)
    async def load(request: Request) -> dict:
        """Load an artifact (admin token): ``{"path": "...", "name": "optional", "task": "optional"}``.

        ``task`` picks one task of a multi-task artifact (its name is then the default name)."""
        require(request, tokens.admin_refusal(request.headers.get("authorization")))
        data = await read_json(request, limits.max_body_bytes, limits.max_json_depth)
        path, name, task = data.get("path"), data.get("name"), data.get("task")
        strings = all(v is None or isinstance(v, str) for v in (name, task))
        if not isinstance(path, str) or not strings or "\x00" in path:
            raise ApiError(422, "'path' must be a string (and 'name' and 'task', if given)")
        try:
            loaded = await asyncio.get_running_loop().run_in_executor(admin_thread, pool.load, path, name, task)
        except DuplicateTask as exc:
            raise ApiError(409, str(exc)) from None
        except LoadLimitExceeded as exc:
            raise ApiError(413, str(exc)) from None
        except PTuningError as exc:
            raise ApiError(400, str(exc)) from None
        except Exception as exc:  # an unreadable or inconsistent artifact is the caller's input too
            log.exception("loading %s failed", path)
            raise ApiError(400, f"{path[:200]}: could not load this artifact ({type(exc).__name__})") from None
        log.info("loaded task %s from %s", loaded.name, path)
        return {"loaded": loaded.name, "task": loaded.task.name}

    @app.delete("/v1/tasks/{name}")
    async def unload(name: str, request: Request) -> dict:
        """Unload a prompt (admin token)."""
        require(request, tokens.admin_refusal(request.headers.get("authorization")))
        try:
            await asyncio.get_running_loop().run_in_executor(admin_thread, pool.unload, name)
        except UnknownTask as exc:
            raise ApiError(404, str(exc)) from None
        log.info("unloaded task %s", name)
        return {"unloaded": name}


def _add_operations(app: FastAPI, pool: PromptPool, metrics: Metrics) -> None:
    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok", "tasks": len(pool.prompts)}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> str:
        return metrics.render(len(pool.prompts))
