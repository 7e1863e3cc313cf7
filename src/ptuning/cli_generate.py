"""``ptuning generate``: text from a generation artifact, one JSON line per input, in input order."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import cli_options as opts
from .cli_common import DEVICE_HELP, quiet_weight_loading


def register(app: typer.Typer) -> None:
    """Add the ``generate`` command to ``app`` (the CLI module stays one screen per command)."""

    @app.command()
    def generate(
        artifact: Path = typer.Argument(..., help="Artifact directory of a generation task (e2e, dialogsum...)."),
        input: Path = typer.Option(
            ..., "--input", help='JSONL (or CSV/TSV) with the task\'s source field: {"mr": ...} for e2e.'
        ),
        output: Path = typer.Option(..., "--output", help='JSONL out: {"generated": ...} per input, in order.'),
        model: Optional[str] = typer.Option(None, help="Backbone path, when it moved since training."),
        batch_size: int = typer.Option(16),
        device: str = typer.Option("auto", help=DEVICE_HELP),
        max_new_tokens: opts.MaxNewTokens = None,
        num_beams: opts.NumBeams = None,
        do_sample: opts.DoSample = None,
        temperature: opts.Temperature = None,
        top_p: opts.TopP = None,
        top_k: opts.TopK = None,
        seed: opts.DecodeSeed = None,
    ) -> None:
        """Generate text for every input of a file (greedy by default; --num-beams, --do-sample)."""
        from .pipeline import generate as run

        quiet_weight_loading()
        given = {
            "max_new_tokens": max_new_tokens,
            "num_beams": num_beams,
            "do_sample": do_sample,
            "temperature": temperature,
            "top_p": top_p,
            "top_k": top_k,
            "seed": seed,
        }
        decoding = {k: v for k, v in given.items() if v is not None}
        count = run(artifact, input, output, decoding, model_name=model, batch_size=batch_size, device=device)
        typer.echo(f"wrote {count} outputs to {output}")
