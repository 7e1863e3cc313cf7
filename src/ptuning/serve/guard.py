"""What stands between the network and the pool: tokens, body parsing, and errors as one-line JSON.

Every answer the server gives to a bad request is a JSON ``{"error": "..."}`` with a 4xx status, and is
counted in ``/metrics``. A body is parsed with bounded size and depth (a deeply nested array once made
the JSON parser raise ``RecursionError``, answered as a plain-text 500), without NaN or Infinity (not
JSON), and with integers bounded by Python's digit limit. What still fails inside the server is logged
and answered as a JSON 500 that names no internals.

Management endpoints need the admin token (``tokens.py``); without a configured token they are off.
Prediction is open unless a prediction token is configured. Refusals are logged with the client's
address, never with what it sent.
"""

from __future__ import annotations

import json
import logging
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .metrics import Metrics

log = logging.getLogger("ptuning.serve")


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def require(request: Request, refusal: tuple[int, str] | None) -> None:
    """Raise the refusal (logged with the client's address, never with what it sent), if there is one."""
    if refusal is None:
        return
    status, message = refusal
    client = request.client.host if request.client else "unknown"
    log.warning("refused %s %s from %s: %s", request.method, request.url.path, client, message)
    raise ApiError(status, message, {"WWW-Authenticate": "Bearer"} if status == 401 else None)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


async def read_json(request: Request, max_bytes: int, max_depth: int) -> dict:
    """The body as a JSON object, refused early when over ``max_bytes`` (declared or streamed) or ``max_depth``."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, f"request body over {max_bytes} bytes")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_bytes:
                raise ApiError(413, f"request body over {max_bytes} bytes")
    except ClientDisconnect:
        raise ApiError(400, "the client closed the connection before sending the whole body") from None
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        raise ApiError(400, f"malformed JSON body: nested deeper than {max_depth} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, NaN/Infinity, integers over the digit limit
        raise ApiError(400, f"malformed JSON body: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise ApiError(422, "the body must be a JSON object")
    if depth(data, max_depth) > max_depth:
        raise ApiError(422, f"the body is nested deeper than {max_depth} levels")
    return data


def depth(value, limit: int) -> int:
    """Nesting depth of a parsed JSON value, walked without recursion; stops counting past ``limit``."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, level)
            if level > limit:
                return level
            stack += [(child, level + 1) for child in (item.values() if isinstance(item, dict) else item)]
    return deepest


def chars(value) -> int:
    """Characters of text in a parsed JSON value (keys included), walked without recursion."""
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, list):
            stack += item
        elif isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
    return total


def add_error_handling(app: FastAPI, metrics: Metrics) -> None:
    """Count every request; answer every error as a one-line ``{"error": ...}``; never leak a traceback."""

    @app.middleware("http")
    async def count(request: Request, call_next):
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:  # a bug, not the client's fault: logged here, answered without internals
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            response = JSONResponse({"error": "internal error; the server log has the details"}, status_code=500)
        metrics.observe_request(request.url.path, response.status_code, time.perf_counter() - started)
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = {
            404: f"no route {request.method} {request.url.path[:200]}",
            405: f"{request.method} is not allowed on {request.url.path[:200]}",
        }.get(exc.status_code, str(exc.detail))
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return JSONResponse({"error": f"invalid request: {where} {first.get('msg', '')}".strip()}, status_code=422)
