"""``ptuning inspect`` and ``ptuning card``: commands of their own module, registered by ``cli.py``.

Like every command, they import the library only when run, so ``ptuning --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .cli_common import DEVICE_HELP, quiet_weight_loading


def inspect_artifacts(
    artifacts: list[Path] = typer.Argument(
        ..., help="Artifact directories; with several, also how alike their prompts are."
    ),
    data: Optional[str] = typer.Option(
        None, help="Data for the attention statistics and the ablation (default: the data in ARTIFACT/config.yaml)."
    ),
    split: str = typer.Option("validation", help="The split to read."),
    samples: int = typer.Option(200, help="Use the first N examples of the split."),
    output: Optional[Path] = typer.Option(
        None, help="Where to write inspect.json and the plots (default ARTIFACT/inspect; several: DIR/NAME)."
    ),
    top_k: int = typer.Option(5, help="Nearest vocabulary tokens listed per input-level prompt vector."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="PNG plots (matplotlib: the `inspect` extra)."),
    model: Optional[str] = typer.Option(None, help="Backbone path, when it moved since training."),
    batch_size: int = typer.Option(32),
    device: str = typer.Option("auto", help=DEVICE_HELP),
) -> None:
    """What did the prompt learn? Attention, norms, per-layer ablation, nearest tokens, similarity of several.

    Writes inspect.json and PNG plots to --output (default ARTIFACT/inspect) and prints a short table.
    """
    from .inspection import InspectOptions, run

    quiet_weight_loading()
    options = InspectOptions(data, split, samples, top_k, batch_size, model, device, plots)
    run(artifacts, options, output)


def card(
    artifacts: list[Path] = typer.Argument(..., help="Artifact directories."),
) -> None:
    """(Re)generate the model card (ARTIFACT/README.md) from the artifact's own files; older artifacts have none."""
    from .artifact import write_card

    for path in artifacts:
        typer.echo(f"wrote {write_card(path)}")
