"""``POST /v1/score``: the loss of a candidate prompt on labelled inputs, for forward-only prompt search.

Black-Box Tuning's setting (``search.py``): the server holds the backbone, a client runs CMA-ES and asks the
server to score candidates. A candidate travels as ``z``, ``dim`` numbers (500 by default: about 10 KB of
JSON, where a MiniLM ptv2 prefix would be 90,000 numbers); the server turns it into the prompt and head
``theta0 + A z`` of a loaded artifact, ``theta0`` that artifact's own prompt and head, ``A`` the projection
:class:`~ptuning.search.SearchSpace` draws from ``seed``. The same ``(dim, sigma, seed)`` give the same ``A`` on
both sides, so the client can rebuild the prompt it found with ``SearchSpace`` itself.

Request ``{"task", "inputs", "labels", "z", "dim", "sigma", "seed"}`` (``z`` omitted: the artifact as loaded;
``dim``, ``sigma``, ``seed``: ``--cma-dim``, ``--cma-sigma``, ``--seed``'s defaults); answer ``{"task", "loss",
"examples"}``. Inputs take the shapes ``/v1/predict`` takes; labels are the task's own (``"entailment"``).

The route is off unless the server starts with ``--scoring``. It lets a client probe the model with its own
labels, an operator's tool rather than a public API: with an admin token set (``--admin-token``) it needs that
token, like loading prompts; without one it answers loopback clients only (403 otherwise). It runs on the
server's single model thread, like predictions. Its search spaces (a copy of the artifact's prompt and
head, and ``A``) are kept for the :data:`MAX_SPACES` most recent ``(task, dim, sigma, seed)``.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from fastapi import FastAPI, Request

from .. import artifact
from ..errors import PTuningError
from ..model import PTuningModel
from ..search import SearchSpace, candidate_loss
from ..trainconfig import MAX_CMA_DIM, TrainConfig
from .guard import ApiError, read_json, require
from .pool import PromptPool, UnknownTask
from .server import Limits
from .tokens import Tokens

LOOPBACK = frozenset({"127.0.0.1", "::1"})
MAX_SPACES = 4  # a MiniLM ptv2 space at dim 500 holds a 190 MB projection


@dataclass(frozen=True)
class ScoreRequest:
    task: str
    inputs: list
    labels: list
    z: list[float] | None
    dim: int
    sigma: float
    seed: int


def parse(data: dict, limits: Limits) -> ScoreRequest:
    """The request's fields, each refused with a 422 (413 for too many inputs) naming what is wrong."""
    defaults = TrainConfig()
    task, inputs, labels = data.get("task"), data.get("inputs"), data.get("labels")
    dim, sigma, seed = data.get("dim", defaults.cma_dim), data.get("sigma", defaults.cma_sigma), data.get("seed", 42)
    if not isinstance(task, str):
        raise ApiError(422, "'task' must be a string naming a loaded task")
    if not isinstance(inputs, list) or not inputs or not isinstance(labels, list) or len(labels) != len(inputs):
        raise ApiError(422, "'inputs' and 'labels' must be non-empty lists of the same length")
    if len(inputs) > limits.max_inputs:
        raise ApiError(413, f"at most {limits.max_inputs} inputs per request")
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= MAX_CMA_DIM:
        raise ApiError(422, f"'dim' must be a whole number in [1, {MAX_CMA_DIM}]")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ApiError(422, "'seed' must be a whole number >= 0")
    if not _finite_number(sigma) or sigma <= 0:
        raise ApiError(422, "'sigma' must be a finite number > 0")
    z = data.get("z")
    if z is not None and (not isinstance(z, list) or len(z) != dim or not all(_finite_number(x) for x in z)):
        raise ApiError(422, f"'z' must be a list of {dim} finite numbers ('dim')")
    return ScoreRequest(task, inputs, labels, z, dim, float(sigma), seed)


def _finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Scorer:
    """Scores candidates on a pool's backbone; runs on the model thread."""

    def __init__(self, pool: PromptPool) -> None:
        self.pool = pool
        self.spaces: OrderedDict[tuple, tuple[PTuningModel, SearchSpace]] = OrderedDict()

    def _space(self, name: str, request: ScoreRequest) -> tuple[PTuningModel, SearchSpace]:
        loaded = self.pool.get(name)
        key = (name, loaded.path, request.dim, request.sigma, request.seed)
        if key not in self.spaces:
            parts = artifact.load_prompt(loaded.path, self.pool.encoder, self.pool.fingerprint)
            model = PTuningModel(self.pool.encoder, parts.method.to(self.pool.device), parts.head.to(self.pool.device))
            self.spaces[key] = (model.eval(), SearchSpace.for_model(model, request.dim, request.sigma, request.seed))
            while len(self.spaces) > MAX_SPACES:
                self.spaces.popitem(last=False)
        self.spaces.move_to_end(key)
        return self.spaces[key]

    def score(self, request: ScoreRequest) -> float:
        """The task's loss of candidate ``z`` on the labelled inputs."""
        loaded = self.pool.get(request.task)
        model, space = self._space(request.task, request)
        task = loaded.task
        examples = [
            replace(task.example_from_input(value), label=label)
            for value, label in zip(request.inputs, request.labels, strict=True)
        ]
        try:
            features = task.featurize(examples, self.pool.tokenizer, loaded.token_budget).features
        except (KeyError, ValueError, IndexError, TypeError) as exc:
            raise PTuningError(f"a label is not one of task {task.name!r}'s labels ({exc})") from None
        batch = task.collator(self.pool.tokenizer)(features)
        batch = {k: v.to(self.pool.device) for k, v in batch.items()}
        labels = batch.pop("labels")
        loss_fn = getattr(model.head, "loss", None) or task.loss
        return float(candidate_loss(model, space, request.z or [0.0] * request.dim, batch, labels, loss_fn))


def refusal(request: Request, tokens: Tokens) -> tuple[int, str] | None:
    """Who may score: the admin (its token) when the server has one, else loopback clients only."""
    if tokens.admin is not None:
        return tokens.admin_refusal(request.headers.get("authorization"))
    if (request.client.host if request.client else None) not in LOOPBACK:
        return 403, "POST /v1/score answers loopback clients only (or the admin token, when the server has one)"
    return None


def add_scoring(app: FastAPI, pool: PromptPool, limits: Limits, tokens: Tokens, executor: ThreadPoolExecutor) -> None:
    """Add ``POST /v1/score`` to ``app`` (see the module docstring)."""
    scorer = Scorer(pool)

    @app.post("/v1/score")
    async def score(request: Request) -> dict:
        """The loss of candidate ``z`` (a projected prompt and head, ``search.py``) on labelled inputs."""
        require(request, refusal(request, tokens))
        parsed = parse(await read_json(request, limits.max_body_bytes, limits.max_json_depth), limits)
        try:
            loss = await asyncio.get_running_loop().run_in_executor(executor, scorer.score, parsed)
        except UnknownTask as exc:
            raise ApiError(404, str(exc)) from None
        except PTuningError as exc:  # bad input for the task, a method with no prompt to search, a label
            raise ApiError(422, str(exc)) from None
        if not math.isfinite(loss):
            raise ApiError(500, f"the loss of this candidate on task {parsed.task!r} is not finite")
        return {"task": parsed.task, "loss": loss, "examples": len(parsed.inputs)}


__all__ = ["LOOPBACK", "ScoreRequest", "Scorer", "add_scoring", "parse", "refusal"]
