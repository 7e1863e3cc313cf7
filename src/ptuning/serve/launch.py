"""``ptuning serve``: name the artifacts, load them, measure the batching cost model, bind, say where, serve.

The command line part (options) is in ``cli.py``; this is what it runs. Every check a user can act on
(a task name given twice, a port in use) fails before the server starts, in one line; the names are
checked before torch is even imported.
"""

from __future__ import annotations

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
    specs: list[str]  # PATH or NAME=PATH
    host: str
    port: int
    limits: Limits
    load_limits: LoadLimits
    tokens: Tokens
    model: str | None
    device: str


def named_artifacts(specs: list[str]) -> list[tuple[str, str]]:
    """``(name, path)`` per ``PATH`` or ``NAME=PATH``; a name given twice is an error (it would replace the first)."""
    named: list[tuple[str, str]] = []
    for spec in specs:
        name, path = spec.split("=", 1) if "=" in spec else (Path(spec).resolve().name, spec)
        if not name:
            raise PTuningError(f"{spec!r}: empty task name; write NAME=PATH")
        earlier = next((p for n, p in named if n == name), None)
        if earlier is not None:
            raise PTuningError(f"task name {name!r} is given twice ({earlier} and {path}); name them apart: NAME=PATH")
        named.append((name, path))
    return named


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
    )
    for name, path in named:
        loaded = pool.load(path, name)
        echo(f"loaded {loaded.name} ({loaded.task.name}, {loaded.meta['method']['method']}) from {path}")
    started = time.perf_counter()
    cost = pool.calibrate()
    echo(f"measured the batching cost model in {time.perf_counter() - started:.1f} s (fit error {cost.fit_error:.0%})")
    management = "on (admin token set)" if request.tokens.admin else "off (no admin token)"
    _log_to_stderr()
    url = address(sock)
    echo(f"serving {len(pool.prompts)} task(s) on {url} (API docs: {url}/docs); task management {management}")
    config = uvicorn.Config(create_app(pool, request.limits, request.tokens), log_level="warning")
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
