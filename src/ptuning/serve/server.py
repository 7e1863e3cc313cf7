"""HTTP server: FastAPI over a :class:`PromptPool`, with micro-batching across tasks.

Concurrent requests, whatever their task, are gathered for at most
``max_wait_ms`` (or until ``max_batch`` inputs) and run as one backbone
forward on a single worker thread, so the event loop keeps accepting requests.
Bad input never reaches the model: it is refused with a 4xx and a one-line
reason. If a gathered batch fails, its requests are retried one by one so only
the faulty one fails. A prediction holding NaN or infinity is answered with a
500 naming it, never with ``null`` (a score that would look valid) or ``NaN``
(which is not JSON).
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from ..errors import InputError, PTuningError
from ..finite import all_finite
from .generation import add_generate_route
from .metrics import Metrics
from .pool import PromptPool, UnknownTask


@dataclass
class Limits:
    max_batch: int = 64
    max_wait_ms: float = 5.0
    max_body_bytes: int = 1_000_000
    max_inputs: int = 256
    max_input_chars: int = 20_000


@dataclass
class Job:
    rows: list
    future: asyncio.Future
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = len(self.rows)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


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
        self.metrics.observe_batch(len(rows))
        try:
            results = await loop.run_in_executor(self.executor, self.pool.predict, rows)
        except Exception:
            if len(jobs) == 1:
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
                job.future.set_exception(ApiError(500, "prediction failed for this request"))
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


def create_app(pool: PromptPool, limits: Limits | None = None) -> FastAPI:
    """The FastAPI app: one micro-batcher and one model thread over ``pool``; routes added by the helpers below."""
    limits = limits or Limits()
    metrics = Metrics()
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ptuning-model")
    batcher = MicroBatcher(pool, limits, metrics, executor)

    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()
        executor.shutdown(wait=False)

    app = FastAPI(title="ptuning", description="P-Tuning v2 prompts served from one backbone.", lifespan=lifespan)
    app.state.pool, app.state.metrics, app.state.limits = pool, metrics, limits
    _add_error_handling(app, metrics)
    _add_predict(app, pool, limits, metrics, batcher)
    add_generate_route(app, pool, limits, metrics)  # POST /v1/generate (generation.py)
    _add_task_management(app, pool, limits, executor)
    _add_operations(app, pool, metrics)
    return app


def _add_error_handling(app: FastAPI, metrics: Metrics) -> None:
    """Count every request; answer errors as one-line ``{"error": ...}`` objects, unknown routes too."""

    @app.middleware("http")
    async def count(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        metrics.observe_request(request.url.path, response.status_code, time.perf_counter() - started)
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(404)
    async def not_found(request: Request, exc):
        return JSONResponse({"error": f"no route {request.method} {request.url.path}"}, status_code=404)

    @app.exception_handler(405)
    async def not_allowed(request: Request, exc):
        return JSONResponse({"error": f"{request.method} is not allowed on {request.url.path}"}, status_code=405)


async def read_json(request: Request, limits: Limits) -> dict:
    """The body as a JSON object, refused early when it is over ``max_body_bytes`` (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise ApiError(413, f"request body over {limits.max_body_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limits.max_body_bytes:
            raise ApiError(413, f"request body over {limits.max_body_bytes} bytes")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"malformed JSON body: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(422, "the body must be a JSON object")
    return data


def _add_predict(app: FastAPI, pool: PromptPool, limits: Limits, metrics: Metrics, batcher: MicroBatcher) -> None:
    @app.post("/v1/predict", openapi_extra=PREDICT_SCHEMA)
    async def predict(request: Request) -> dict:
        """Predict for a list of inputs of one task."""
        data = await read_json(request, limits)
        name, inputs = data.get("task"), data.get("inputs")
        if not isinstance(name, str):
            raise ApiError(422, "'task' must be a string naming a loaded task")
        if not isinstance(inputs, list) or not inputs:
            raise ApiError(422, "'inputs' must be a non-empty list")
        if len(inputs) > limits.max_inputs:
            raise ApiError(413, f"at most {limits.max_inputs} inputs per request")
        rows = []
        for i, value in enumerate(inputs):
            if _chars(value) > limits.max_input_chars:
                raise ApiError(413, f"input {i} is over {limits.max_input_chars} characters")
            try:
                rows.append((name, pool.to_example(name, value)))
            except UnknownTask as exc:
                raise ApiError(404, str(exc)) from None
            except InputError as exc:
                raise ApiError(422, f"input {i}: {exc}") from None
        metrics.inputs += len(rows)
        return {"task": name, "predictions": _finite(name, await batcher.submit(rows))}


def _finite(name: str, predictions: list[dict]) -> list[dict]:
    """Predictions as they are, or an error: JSON has no NaN, and a silent ``null`` score would look valid."""
    for i, prediction in enumerate(predictions):
        if not all_finite(prediction):
            fields = ", ".join(k for k, v in prediction.items() if not all_finite(v))
            raise ApiError(500, f"task {name!r} produced a NaN or infinite {fields} for input {i}")
    return predictions


def _add_task_management(app: FastAPI, pool: PromptPool, limits: Limits, executor: ThreadPoolExecutor) -> None:
    @app.get("/v1/tasks")
    async def tasks() -> dict:
        """The loaded prompts."""
        return {"tasks": pool.describe()}

    @app.post("/v1/tasks", status_code=201)
    async def load(request: Request) -> dict:
        """Load an artifact: ``{"path": "...", "name": "optional"}``."""
        data = await read_json(request, limits)
        path, name = data.get("path"), data.get("name")
        if not isinstance(path, str) or (name is not None and not isinstance(name, str)):
            raise ApiError(422, "'path' must be a string (and 'name', if given)")
        name = name or Path(path).resolve().name
        if name in pool.prompts:
            raise ApiError(409, f"a task named {name!r} is already loaded; DELETE it first or pick another name")
        try:
            loaded = await asyncio.get_running_loop().run_in_executor(executor, pool.load, path, name)
        except PTuningError as exc:
            raise ApiError(400, str(exc)) from None
        return {"loaded": loaded.name, "task": loaded.task.name}

    @app.delete("/v1/tasks/{name}")
    async def unload(name: str) -> dict:
        """Unload a prompt."""
        try:
            await asyncio.get_running_loop().run_in_executor(executor, pool.unload, name)
        except UnknownTask as exc:
            raise ApiError(404, str(exc)) from None
        return {"unloaded": name}


def _add_operations(app: FastAPI, pool: PromptPool, metrics: Metrics) -> None:
    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok", "tasks": len(pool.prompts)}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> str:
        return metrics.render(len(pool.prompts))


def _chars(value) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (list, tuple)):
        return sum(_chars(v) for v in value)
    if isinstance(value, dict):
        return sum(_chars(v) for v in value.values())
    return 0
