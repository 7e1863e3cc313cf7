"""``ptuning serve``: name the artifacts, load them, measure the batching cost model, bind, say where, serve.

The command line part (options) is in ``cli.py``; this is what it runs. Every check a user can act on
(a task name given twice, a port in use) fails before the server starts, in one line; the names are
checked before torch is even imported.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import PTuningError
from .tokens import Tokens

if TYPE_CHECKING:  # torch and FastAPI load only once the names are known to be distinct
    from .pool import LoadLimits
    from .server import Limits


@dataclass(frozen=True)
class ServeRequest:
    specs: list[str]  # PATH or NAME=PATH, each with an optional :TASK (one task of a multi-task artifact)
    host: str
    port: int
    limits: Limits
    load_limits: LoadLimits
    tokens: Tokens
    model: str | None
    device: str
    backbone_dtype: str = "fp32"  # --backbone-dtype: the shared backbone's precision (precision.py)
    scoring: bool = False  # --scoring: POST /v1/score (scoring.py)


def named_artifacts(specs: list[str]) -> list[tuple[str, str, str | None]]:
    """``(name, path, task)`` per ``PATH``, ``NAME=PATH``, ``PATH:TASK`` or ``NAME=PATH:TASK``.

    A multi-task artifact given without a task stands for every one of its tasks, each named after its task
    (``NAME-TASK`` when a name is given); ``PATH:TASK`` without a name is named ``TASK``. A name given twice
    is an error (it would replace the first).
    """
    named: list[tuple[str, str, str | None]] = []
    for spec in specs:
        for name, path, task in _expand(spec):
            if not name:
                raise PTuningError(f"{spec!r}: empty task name; write NAME=PATH")
            earlier = next((p for n, p, _ in named if n == name), None)
            if earlier is not None:
                raise PTuningError(
                    f"task name {name!r} is given twice ({earlier} and {path}); name them apart: NAME=PATH"
                )
            named.append((name, path, task))
    return named


def _expand(spec: str) -> list[tuple[str, str, str | None]]:
    given, path = spec.split("=", 1) if "=" in spec else (None, spec)
    task = None
    head, _, tail = path.rpartition(":")
    if head and tail and not Path(path).exists() and Path(head).exists():
        path, task = head, tail
    tasks = _multitask_names(path) if task is None else None
    if tasks:
        return [(f"{given}-{t}" if given else t, path, t) for t in tasks]
    return [(given if given is not None else (task or Path(path).resolve().name), path, task)]


def _multitask_names(path: str) -> list[str] | None:
    """The tasks of a multi-task artifact, read from its ``ptuning.json`` alone; None for any other path
    (loading it then says what is wrong, in one line)."""
    try:
        meta = json.loads((Path(path) / "ptuning.json").read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return None
    tasks = meta.get("tasks") if isinstance(meta, dict) else None
    return [str(t.get("name")) for t in tasks if isinstance(t, dict)] if isinstance(tasks, list) else None


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free port), or a one-line error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # connections queue from now on, so the printed address works at once
    except OSError as exc:
        sock.close()
        raise PTuningError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port or --host"
        ) from None
    return sock


def address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(request: ServeRequest, echo: Callable[[str], None]) -> None:
    import uvicorn

    from ..backbones import resolve_device
    from .pool import PromptPool
    from .server import create_app

    named = named_artifacts(request.specs)
    sock = bind(request.host, request.port)  # before the minutes of loading: a port in use fails at once
    pool = PromptPool.from_artifact(
        named[0][1],
        model_name=request.model,
        max_batch=request.limits.max_batch,
        device=resolve_device(request.device),
        limits=request.load_limits,
        backbone_dtype=request.backbone_dtype,
    )
    for name, path, task in named:
        loaded = pool.load(path, name, task=task)
        echo(f"loaded {loaded.name} ({loaded.task.name}, {loaded.meta['method']['method']}) from {path}")
    started = time.perf_counter()
    cost = pool.calibrate()
    echo(f"measured the batching cost model in {time.perf_counter() - started:.1f} s (fit error {cost.fit_error:.0%})")
    management = "on (admin token set)" if request.tokens.admin else "off (no admin token)"
    _log_to_stderr()
    url = address(sock)
    echo(f"serving {len(pool.prompts)} task(s) on {url} (API docs: {url}/docs); task management {management}")
    app = create_app(pool, request.limits, request.tokens, scoring=request.scoring)
    config = uvicorn.Config(app, log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])


def _log_to_stderr() -> None:
    """Refused tokens (warnings) and loads (info) of the ``ptuning.serve`` logger, one line each."""
    logger = logging.getLogger("ptuning.serve")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
