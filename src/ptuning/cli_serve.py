"""``ptuning serve``: a command of its own module, registered by ``cli.py``.

Like every command, it imports the server only when run, so ``ptuning --help`` stays fast.
"""

from __future__ import annotations

import math
from typing import Optional

import typer

from .cli_common import DEVICE_HELP, quiet_weight_loading
from .errors import PTuningError
from .serve.tokens import ADMIN_ENV, PREDICT_ENV, Tokens


def serve(
    artifacts: list[str] = typer.Argument(
        ...,
        help="Artifact directories to load, each PATH or NAME=PATH; PATH:TASK picks one task of a multi-task "
        "artifact, whose tasks are otherwise all loaded (named TASK, or NAME-TASK).",
    ),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (loopback by default)."),
    port: int = typer.Option(8000, help="Port to listen on (0: any free port; the address is printed)."),
    max_batch: int = typer.Option(64, help="Most inputs in one backbone forward."),
    max_wait_ms: float = typer.Option(5.0, help="Longest wait to gather a batch."),
    max_body_bytes: int = typer.Option(1_000_000, help="Largest accepted request body."),
    max_inputs: int = typer.Option(256, help="Most inputs in one request."),
    max_prompt_length: int = typer.Option(512, help="Longest prompt (slots) that may be loaded."),
    max_artifact_mb: float = typer.Option(64.0, help="Largest prompt weights file that may be loaded (MiB)."),
    admin_token: Optional[str] = typer.Option(
        None, envvar=ADMIN_ENV, show_default=False, help="Token for POST/DELETE /v1/tasks (none: they are off)."
    ),
    predict_token: Optional[str] = typer.Option(
        None, envvar=PREDICT_ENV, show_default=False, help="Token for /v1/predict (none: prediction is open)."
    ),
    model: Optional[str] = typer.Option(None, help="Backbone path (default: the one the first artifact names)."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    backbone_dtype: str = typer.Option("fp32", help="fp32 | bf16 | fp16 | int8: the shared backbone's precision."),
    scoring: bool = typer.Option(
        False, help="Add POST /v1/score (prompt search): the admin token, or without one loopback clients only."
    ),
) -> None:
    """Serve many prompts from one backbone over HTTP (FastAPI; docs at /docs, offline)."""
    from .serve.launch import ServeRequest, named_artifacts
    from .serve.launch import serve as run_server

    named_artifacts(artifacts)  # a name given twice: one line, before anything heavy loads
    from .serve.pool import LoadLimits
    from .serve.server import Limits

    quiet_weight_loading()
    if not (math.isfinite(max_artifact_mb) and max_artifact_mb > 0) or max_prompt_length < 1:
        raise PTuningError("--max-artifact-mb must be a finite number > 0 and --max-prompt-length >= 1")
    request = ServeRequest(
        specs=artifacts,
        host=host,
        port=port,
        limits=Limits(
            max_batch=max_batch, max_wait_ms=max_wait_ms, max_body_bytes=max_body_bytes, max_inputs=max_inputs
        ),
        load_limits=LoadLimits(max_prompt_length, int(max_artifact_mb * 2**20)),
        tokens=Tokens(admin=admin_token or None, predict=predict_token or None),
        model=model,
        device=device,
        backbone_dtype=backbone_dtype,
        scoring=scoring,
    )
    run_server(request, typer.echo)
