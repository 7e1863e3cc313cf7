"""``ptuning`` command line: train, eval, predict, tasks, demo.

Flag names follow Hugging Face ``run_glue.py`` where one exists. Errors the
user can fix print one line and exit with status 2; nothing else is written.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Optional

import typer

from .errors import PTuningError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="P-Tuning v2: deep prompt tuning for NLU.")


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"ptuning {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print the version."),
) -> None:
    """P-Tuning v2: deep prompt tuning for NLU."""


@app.command()
def train(
    task: str = typer.Option(..., help="Task name (see `ptuning tasks`)."),
    data: str = typer.Option(..., help="Directory with the official split files, or a Hugging Face dataset id."),
    output: Path = typer.Option(..., help="Output directory: artifact, metrics.json, metrics.jsonl, checkpoint."),
    model: Optional[str] = typer.Option(None, help="Backbone path or hub id (default: bundled all-MiniLM-L6-v2)."),
    method: str = typer.Option(
        "ptv2", help="ptv2 | prompt-tuning | ptv1 | finetune | linear-probe (`ptuning methods`)."
    ),
    prompt_length: Optional[int] = typer.Option(
        None, help="Prompt length P (prefix slots per layer, or input prompt tokens); default 20."
    ),
    reparam: Optional[bool] = typer.Option(
        None, "--reparam/--no-reparam", help="ptv2: train the prefix through an MLP."
    ),
    reparam_hidden: Optional[int] = typer.Option(None, help="ptv2: hidden width of the reparameterisation MLP (512)."),
    prefix_dropout: Optional[float] = typer.Option(None, help="ptv2: dropout on the prefix during training (0)."),
    prompt_encoder: Optional[str] = typer.Option(None, help="ptv1 prompt encoder: lstm (default) | mlp."),
    prefix_init_std: Optional[float] = typer.Option(
        None, help="ptv2 without --reparam: std of the prefix's initial values (0.02; 1.0 = the official code's)."
    ),
    epochs: int = typer.Option(10, help="Maximum epochs."),
    lr: Optional[float] = typer.Option(
        None, help="Peak learning rate (default per method: ptv2 5e-3, ptv2 --reparam 5e-4, finetune 5e-5…)."
    ),
    batch_size: int = typer.Option(16, help="Training batch size (per process)."),
    eval_batch_size: int = typer.Option(64, help="Evaluation batch size."),
    max_length: Optional[int] = typer.Option(
        None, help="Maximum tokens per input (default 384 for QA, else 128; deep prompts take none of these)."
    ),
    max_train_samples: Optional[int] = typer.Option(None, help="Use only the first N training examples."),
    max_eval_samples: Optional[int] = typer.Option(None, help="Use only the first N evaluation examples."),
    seed: int = typer.Option(42, help="Random seed."),
    weight_decay: float = typer.Option(0.01, help="AdamW weight decay (not on prompts or biases)."),
    warmup_ratio: float = typer.Option(0.06, help="Fraction of steps for linear warmup."),
    scheduler: str = typer.Option("linear", help="linear | exponential | constant decay after warmup."),
    decay_gamma: float = typer.Option(0.9, help="Per-epoch factor of the exponential decay."),
    max_grad_norm: float = typer.Option(1.0, help="Gradient clipping norm."),
    eval_steps: Optional[int] = typer.Option(None, help="Evaluate every N steps instead of every epoch."),
    patience: Optional[int] = typer.Option(None, help="Stop after N evaluations without improvement."),
    max_minutes: Optional[float] = typer.Option(
        None, help="Stop at the first evaluation after this many minutes of training (the best-dev artifact is kept)."
    ),
    grad_accum: int = typer.Option(1, help="Gradient accumulation steps."),
    gradient_checkpointing: bool = typer.Option(False, help="Recompute activations to save memory."),
    group_by_length: bool = typer.Option(
        False, help="Batch inputs of similar length together: less padding, faster epochs on varied-length data."
    ),
    mixed_precision: str = typer.Option(
        "no", help="no | bf16 | fp16: forward passes under autocast (faster on GPUs); weights and prompts stay fp32."
    ),
    backbone_dropout: Optional[float] = typer.Option(
        None,
        help="Every dropout rate inside the backbone while training (default: the checkpoint's, 0.1 for BERT). "
        "0 makes CPU training much faster (see BENCHMARKS.md); its effect on accuracy depends on the task.",
    ),
    pooling: str = typer.Option(
        "auto",
        help="auto | cls | mean | last. auto: the checkpoint's declared pooling, else cls (encoders), last (decoders).",
    ),
    text_column: Optional[str] = typer.Option(None, help="text-classification: the text column."),
    text_pair_column: Optional[str] = typer.Option(None, help="text-classification: the second text column."),
    label_column: Optional[str] = typer.Option(None, help="text-classification: the label column."),
    labels: Optional[str] = typer.Option(None, help="token-classification: comma-separated tag set (else from data)."),
    crf: bool = typer.Option(False, help="Tagging tasks: a CRF layer (IOB2-constrained Viterbi) on the token head."),
    doc_stride: Optional[int] = typer.Option(None, help="QA: tokens between context windows (default 128)."),
    split_by_article: Optional[float] = typer.Option(
        None,
        help="QA: split ONE SQuAD file by article title; FRACTION of articles held out, halved into validation "
        "(early stopping) and test (`ptuning eval --split test`).",
    ),
    resume: bool = typer.Option(False, help="Continue from OUTPUT/checkpoint (optimizer, scheduler, RNG)."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty OUTPUT."),
) -> None:
    """Train a prompt (or a baseline) and keep the best-dev artifact in OUTPUT."""
    from .pipeline import TrainRequest
    from .pipeline import train as run
    from .train import SCHEDULERS, TrainConfig, check_precision

    check_precision(mixed_precision)
    if scheduler not in SCHEDULERS:
        raise PTuningError(f"unknown --scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    if epochs < 1 or batch_size < 1:
        raise PTuningError("--epochs and --batch-size must be at least 1")
    from .backbones import check_dropout_rate

    check_dropout_rate(backbone_dropout)
    request = TrainRequest(
        task=task,
        data=data,
        output=output,
        model=model,
        method=_method_config(
            method,
            prompt_length=prompt_length,
            reparam=reparam,
            reparam_hidden=reparam_hidden,
            prefix_dropout=prefix_dropout,
            prompt_encoder=prompt_encoder,
            prefix_init_std=prefix_init_std,
        ),
        train=TrainConfig(
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            weight_decay=weight_decay,
            warmup_ratio=warmup_ratio,
            scheduler=scheduler,
            decay_gamma=decay_gamma,
            max_grad_norm=max_grad_norm,
            eval_steps=eval_steps,
            patience=patience,
            max_minutes=max_minutes,
            seed=seed,
            grad_accum=grad_accum,
            gradient_checkpointing=gradient_checkpointing,
            group_by_length=group_by_length,
            mixed_precision=mixed_precision,
            backbone_dropout=backbone_dropout,
            resume=resume,
        ),
        max_length=max_length,
        max_train_samples=max_train_samples,
        max_eval_samples=max_eval_samples,
        pooling=pooling,
        task_options={
            "text_column": text_column,
            "text_pair_column": text_pair_column,
            "label_column": label_column,
            "labels": labels.split(",") if labels else None,
            "crf": crf or None,
            "doc_stride": doc_stride,
            "split_by_article": split_by_article,
        },
        overwrite=overwrite,
    )
    summary = run(request)
    best = summary.get("best") or {}
    typer.echo(
        f"best {summary['main_metric']} {best.get(summary['main_metric'], float('nan')):.4f} at epoch "
        f"{summary['best_epoch']}; artifact in {output} ({summary['artifact_bytes']:,} bytes)"
    )


def _method_config(name: str, **options):
    """The method's config from the flags the user gave (None = not given: the method's own default).

    A flag the method does not take is refused in one line, naming the method's own options.
    """
    from .method import method_config

    return method_config(name, **{k: v for k, v in options.items() if v is not None})


DEVICE_HELP = "auto (the GPU when there is one) | cpu | cuda | cuda:N | mps."


@app.command("eval")
def evaluate(
    artifact: Path = typer.Argument(..., help="Artifact directory written by `ptuning train`."),
    data: str = typer.Option(..., help="Directory with the split files, or a hub dataset id."),
    split: str = typer.Option("validation", help="train | validation | test."),
    model: Optional[str] = typer.Option(None, help="Backbone path, when it moved since training."),
    batch_size: int = typer.Option(64),
    device: str = typer.Option("auto", help=DEVICE_HELP),
) -> None:
    """Print the task's metrics on a split as one JSON object."""
    from .pipeline import evaluate as run

    typer.echo(json.dumps(run(artifact, data, split, model, batch_size, device)))


@app.command()
def predict(
    artifact: Path = typer.Argument(..., help="Artifact directory written by `ptuning train`."),
    input: Path = typer.Option(..., "--input", help="File in the task's format (labels optional)."),
    output: Path = typer.Option(
        ..., "--output", help="JSONL (one prediction per input), a CoNLL file (tagging) or a JSON map (QA)."
    ),
    model: Optional[str] = typer.Option(None, help="Backbone path, when it moved since training."),
    batch_size: int = typer.Option(64),
    device: str = typer.Option("auto", help=DEVICE_HELP),
) -> None:
    """Predict for a file in the task's format, written in the task's own shape.

    One JSON line per input (label and scores, chosen choice, entity, real value);
    a CoNLL file with a predicted-tag column for tagging tasks; the official
    {id: answer} map (plus null_odds.json for SQuAD 2.0) for QA.
    """
    from .pipeline import predict as run

    count = run(artifact, input, output, model, batch_size, device)
    typer.echo(f"wrote {count} predictions to {output}")


@app.command()
def tasks() -> None:
    """List every task with its data format and metric."""
    from .tasks import TASKS

    for task in TASKS.values():
        typer.echo(f"{task.name:20} {task.family:15} metric: {', '.join(task.metric_names)}")
        typer.echo(f"{'':20} {task.description}")
        typer.echo(f"{'':20} format: {task.data_format}")


@app.command()
def methods() -> None:
    """List every registered method with its options (and their defaults) and default learning rate."""
    from dataclasses import fields

    from .method import REGISTRY

    for name, method in REGISTRY.items():
        options = [f"--{f.name.replace('_', '-')} {f.default}" for f in fields(method.config_class)]
        typer.echo(f"{name:16} lr {method.default_lr:g}; serving: {method.pool_batching.value}")
        typer.echo(f"{'':16} {method.description}")
        typer.echo(f"{'':16} options: {', '.join(options) or 'none'}")


@app.command()
def demo(
    output: Path = typer.Option(Path("ptuning-demo"), help="Where to write the demo artifact."),
    epochs: int = typer.Option(15),
) -> None:
    """Train a P-Tuning v2 prompt on the bundled sample data, evaluate it, and predict."""
    from importlib.resources import files

    from .method import method_config
    from .pipeline import TrainRequest
    from .pipeline import evaluate as run_eval
    from .pipeline import predict as run_predict
    from .pipeline import train as run_train
    from .train import TrainConfig

    sample = str(files("ptuning") / "samples" / "sentiment")
    typer.echo(f"training ptv2 (P=20) on {sample} with the bundled MiniLM backbone")
    summary = run_train(
        TrainRequest(
            task="sst2",
            data=sample,
            output=output,
            method=method_config("ptv2", prompt_length=20),
            train=TrainConfig(epochs=epochs, lr=1e-2, batch_size=8, seed=42),
            max_length=64,
            overwrite=True,
        )
    )
    typer.echo(f"trainable parameters: {summary['trainable_params']:,} of {summary['backbone_params']:,}")
    typer.echo("dev metrics: " + json.dumps(run_eval(output, sample)))
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "input.tsv"
        source.write_text("sentence\nan utterly charming and beautifully acted film\na tedious , joyless slog\n")
        run_predict(output, source, Path(tmp) / "out.jsonl")
        for line in (Path(tmp) / "out.jsonl").read_text().splitlines():
            typer.echo("prediction: " + line)
    typer.echo(f"artifact: {output} ({summary['artifact_bytes']:,} bytes)")


@app.command()
def serve(
    artifacts: list[str] = typer.Argument(..., help="Artifact directories to load, each PATH or NAME=PATH."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (loopback by default)."),
    port: int = typer.Option(8000),
    max_batch: int = typer.Option(64, help="Most inputs in one backbone forward."),
    max_wait_ms: float = typer.Option(5.0, help="Longest wait to gather a batch."),
    max_body_bytes: int = typer.Option(1_000_000, help="Largest accepted request body."),
    max_inputs: int = typer.Option(256, help="Most inputs in one request."),
    model: Optional[str] = typer.Option(None, help="Backbone path (default: the one the first artifact names)."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
) -> None:
    """Serve many prompts from one backbone over HTTP (FastAPI; docs at /docs)."""
    import uvicorn

    from .serve.pool import PromptPool
    from .serve.server import Limits, create_app

    specs = [spec.split("=", 1) if "=" in spec else (None, spec) for spec in artifacts]
    from .backbones import resolve_device

    pool = PromptPool.from_artifact(specs[0][1], model_name=model, max_batch=max_batch, device=resolve_device(device))
    for name, path in specs:
        loaded = pool.load(path, name)
        typer.echo(f"loaded {loaded.name} ({loaded.task.name}, {loaded.meta['method']['method']}) from {path}")
    limits = Limits(max_batch=max_batch, max_wait_ms=max_wait_ms, max_body_bytes=max_body_bytes, max_inputs=max_inputs)
    uvicorn.run(create_app(pool, limits), host=host, port=port, log_level="warning")


def main() -> None:
    try:
        app(standalone_mode=False)
    except PTuningError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # usage errors arrive here in non-standalone mode
        # Matched by shape, not class: typer >= 0.2x raises its vendored copy of click's exceptions, not click's.
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):  # UsageError, BadParameter, NoSuchOption ...
            show()
            sys.exit(code)
        if isinstance(code, int):  # Exit
            sys.exit(code)
        if type(exc).__name__ == "Abort":
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
