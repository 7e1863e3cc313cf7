"""``ptuning import-peft`` and ``ptuning export-peft``: the command-line side of ``peft_interop.py``.

Kept apart from ``cli.py`` (which only registers them) and light to import: the work, and torch, load
when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import cli_options as opts
from .cli_common import quiet_weight_loading


def import_peft(
    adapter: Path = typer.Argument(..., help="PEFT prefix-tuning adapter: adapter_config.json + .safetensors."),
    output: Path = typer.Option(..., help="Artifact directory to write."),
    task: Optional[str] = typer.Option(
        None,
        help="Task of the artifact (default: text-classification; token-classification for a TOKEN_CLS adapter; "
        "an adapter written by export-peft keeps its own).",
    ),
    labels: Optional[str] = typer.Option(None, help="Comma-separated label names, one per classifier output."),
    model: opts.Model = None,
    head: Optional[Path] = typer.Option(
        None,
        help="safetensors file with a linear classifier's weight (labels x hidden) and bias, for adapters "
        "that saved no classifier (feature extraction).",
    ),  # fmt: skip
    pooling: str = typer.Option("auto", help="How the --head classifier pools: auto | cls | mean | last."),
    max_length: opts.MaxLength = None,
    shift_positions: Optional[bool] = typer.Option(
        None,
        "--shift-positions/--no-shift-positions",
        help="Number real tokens from P, as PEFT does (default: on, so the artifact gives PEFT's outputs).",
    ),
    drop_token_types: Optional[bool] = typer.Option(
        None,
        "--drop-token-types/--keep-token-types",
        help="Run without token_type_ids, as PEFT does (default: on).",
    ),
    text_column: opts.TextColumn = None,
    text_pair_column: opts.TextPairColumn = None,
    label_column: opts.LabelColumn = None,
    overwrite: opts.Overwrite = False,
) -> None:
    """Turn a PEFT prefix-tuning adapter into a ptuning artifact (ptv2), checked against the backbone."""
    from .peft_interop import ImportRequest, import_adapter

    quiet_weight_loading()
    columns = {"text_column": text_column, "text_pair_column": text_pair_column, "label_column": label_column}
    request = ImportRequest(
        adapter=adapter,
        output=output,
        model=model,
        task=task,
        labels=[label.strip() for label in labels.split(",")] if labels else None,
        task_options=columns,
        head=head,
        pooling=pooling,
        max_length=max_length,
        shift_positions=shift_positions,
        drop_token_types=drop_token_types,
        overwrite=overwrite,
    )
    done = import_adapter(request)
    config = done["config"]
    how = ", ".join(
        ["positions shifted by P" if config.shift_positions else "positions from 0 (not PEFT's)"]
        + ["no token types" if config.drop_token_types else "token types kept (not PEFT's)"]
    )
    labels_shown = ",".join(done["task"].labels or ()) or "regression"
    typer.echo(
        f"imported a {config.prompt_length}-slot prefix ({how}) and {done['head']} as task {done['task'].name} "
        f"({labels_shown}) onto backbone {done['backbone']} (fingerprint {done['fingerprint']}): artifact in {output}"
    )
    named = done["named_backbone"]
    if named and model and str(named) != str(model) and not done["exported"]:
        typer.echo(f"note: the adapter names backbone {named}; it was checked against {model} by shape only", err=True)


def export_peft(
    artifact: Path = typer.Argument(..., help="A ptv2 artifact directory."),
    out_dir: Path = typer.Argument(..., help="Directory for the PEFT adapter."),
    overwrite: opts.Overwrite = False,
) -> None:
    """Write a ptv2 artifact as a PEFT prefix-tuning adapter (PeftModel.from_pretrained loads it)."""
    from .peft_interop import export_artifact

    for note in export_artifact(artifact, out_dir, overwrite):
        typer.echo(f"note: {note}", err=True)
    typer.echo(
        f"wrote a PEFT prefix-tuning adapter (feature extraction) to {out_dir}, the head beside it in "
        "ptuning_head.safetensors; load it with peft.PeftModel.from_pretrained(AutoModel.from_pretrained(BACKBONE), "
        f"'{out_dir}')"
    )
