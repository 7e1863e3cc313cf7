"""``ptuning`` command line: train, sweep, eval, predict, generate, tasks, methods, demo, inspect, card, serve.

Flag names follow Hugging Face ``run_glue.py`` where one exists. Errors the
user can fix print one line and exit with status 2; nothing else is written.
A training run that diverges exits 1; Ctrl-C exits 130 after saving a
checkpoint that ``--resume`` continues.
"""

from __future__ import annotations

import math
import sys
import tempfile
import typing
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import cli_generate, cli_inspect, cli_peft, cli_serve
from . import cli_options as opts
from .cli_common import DEVICE_HELP, quiet_weight_loading
from .errors import PTuningError
from .finite import dumps
from .trainconfig import TrainConfig

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


def _load_config_file(ctx: typer.Context, param: typer.CallbackParam, value: Optional[Path]) -> Optional[Path]:
    """``--config FILE``: its values become the defaults of the other options, so flags given on the
    command line still win (click's ``default_map``; this option is eager, read before the others)."""
    if value is None:
        return None
    from . import runfile

    values = runfile.read(value, [p.name for p in ctx.command.params])
    whole = {name for name, hint in typing.get_type_hints(train).items() if hint in (int, Optional[int])}
    for name in whole & set(values):
        if isinstance(values[name], float):  # some click versions would truncate 2.5 to 2 without a word
            raise PTuningError(f"--config {value}: {name} must be a whole number, got {values[name]}")
    ctx.default_map = {**(ctx.default_map or {}), **values}
    return value


ConfigFile = Annotated[
    Optional[Path],
    typer.Option(
        is_eager=True, callback=_load_config_file, help="YAML file of these options (prompt_length: 20, ...)."
    ),
]


@app.command()
def train(
    ctx: typer.Context,
    output: opts.Output,
    task: opts.Task = None,
    data: opts.Data = None,
    tasks_file: opts.TasksFile = None,
    mix_temperature: opts.MixTemperature = None,
    init_from: opts.InitFrom = None,
    teacher: opts.Teacher = None,
    distill_alpha: opts.DistillAlpha = None,
    distill_temperature: opts.DistillTemperature = None,
    config: ConfigFile = None,
    model: opts.Model = None,
    method: opts.Method = "ptv2",
    prompt_length: opts.PromptLength = None,
    reparam: opts.Reparam = None,
    reparam_hidden: opts.ReparamHidden = None,
    prefix_dropout: opts.PrefixDropout = None,
    prompt_encoder: opts.PromptEncoder = None,
    prefix_init_std: opts.PrefixInitStd = None,
    prefix_layers: opts.PrefixLayers = None,
    perturb: opts.Perturb = None,
    perturb_eps: opts.PerturbEps = None,
    shift_positions: opts.ShiftPositions = None,
    drop_token_types: opts.DropTokenTypes = None,
    residual: opts.Residual = None,
    residual_hidden: opts.ResidualHidden = None,
    prompt_layer: opts.PromptLayer = None,
    generator_hidden: opts.GeneratorHidden = None,
    generator_dropout: opts.GeneratorDropout = None,
    epochs: opts.Epochs = TrainConfig.epochs,
    lr: opts.Lr = TrainConfig.lr,
    batch_size: opts.BatchSize = TrainConfig.batch_size,
    eval_batch_size: opts.EvalBatchSize = TrainConfig.eval_batch_size,
    max_length: opts.MaxLength = None,
    max_train_samples: opts.MaxTrainSamples = None,
    max_eval_samples: opts.MaxEvalSamples = None,
    few_shot: opts.FewShot = None,
    few_shot_seed: opts.FewShotSeed = 0,
    seed: opts.Seed = TrainConfig.seed,
    weight_decay: opts.WeightDecay = TrainConfig.weight_decay,
    warmup_ratio: opts.WarmupRatio = TrainConfig.warmup_ratio,
    scheduler: opts.Scheduler = TrainConfig.scheduler,
    decay_gamma: opts.DecayGamma = TrainConfig.decay_gamma,
    max_grad_norm: opts.MaxGradNorm = TrainConfig.max_grad_norm,
    eval_steps: opts.EvalSteps = TrainConfig.eval_steps,
    patience: opts.Patience = TrainConfig.patience,
    max_minutes: opts.MaxMinutes = TrainConfig.max_minutes,
    grad_accum: opts.GradAccum = TrainConfig.grad_accum,
    gradient_checkpointing: opts.GradientCheckpointing = TrainConfig.gradient_checkpointing,
    group_by_length: opts.GroupByLength = TrainConfig.group_by_length,
    mixed_precision: opts.MixedPrecision = TrainConfig.mixed_precision,
    backbone_dropout: opts.BackboneDropout = TrainConfig.backbone_dropout,
    backbone_dtype: opts.BackboneDtype = TrainConfig.backbone_dtype,
    optimizer: opts.Optimizer = TrainConfig.optimizer,
    cma_dim: opts.CmaDim = TrainConfig.cma_dim,
    cma_popsize: opts.CmaPopsize = TrainConfig.cma_popsize,
    cma_sigma: opts.CmaSigma = TrainConfig.cma_sigma,
    shard_backbone: opts.ShardBackbone = TrainConfig.shard_backbone,
    activation_cache: opts.ActivationCache = TrainConfig.activation_cache,
    activation_cache_mb: opts.ActivationCacheMb = TrainConfig.activation_cache_mb,
    pooling: opts.Pooling = "auto",
    text_column: opts.TextColumn = None,
    text_pair_column: opts.TextPairColumn = None,
    label_column: opts.LabelColumn = None,
    target_column: opts.TargetColumn = None,
    labels: opts.Labels = None,
    crf: opts.Crf = False,
    doc_stride: opts.DocStride = None,
    split_by_article: opts.SplitByArticle = None,
    resume: opts.Resume = TrainConfig.resume,
    overwrite: opts.Overwrite = False,
) -> None:
    """Train a prompt (or a baseline) and keep the best-dev artifact in OUTPUT; --config FILE: flags override it."""
    from . import pipeline, runfile

    quiet_weight_loading()
    _print_outcome(pipeline.train(runfile.request_from_options({**ctx.params, "output": Path(output)})), output)


def _print_outcome(summary: dict, output: Path) -> None:
    """One line: the best selection score, the reported one where the protocol has one, the artifact."""
    metric, best = summary["main_metric"], summary.get("best") or {}
    score = best.get(metric)
    shown = f"best {metric} {score:.4f} at epoch {summary['best_epoch']}" if _finite(score) else f"no {metric} score"
    reported = summary.get("reported") or {}
    if _finite(reported.get(metric)):
        shown += f" on the selection split; {metric} {reported[metric]:.4f} on the reported split"
    typer.echo(f"{shown}; artifact in {output} ({summary['artifact_bytes']:,} bytes)")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


TASK_HELP = "Which task of a multi-task artifact (its tasks are listed in its ptuning.json)."


@app.command("eval")
def evaluate(
    artifact: Path = typer.Argument(..., help="Artifact directory written by `ptuning train`."),
    data: str = typer.Option(..., help="Directory with the split files, or a hub dataset id."),
    split: str = typer.Option("validation", help="train | validation | test."),
    model: Optional[str] = typer.Option(None, help="Backbone path, when it moved since training."),
    batch_size: int = typer.Option(64),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    task: Optional[str] = typer.Option(None, help=TASK_HELP),
    backbone_dtype: opts.LoadedBackboneDtype = None,
    max_eval_samples: opts.MaxEvalSamples = None,
    max_new_tokens: opts.MaxNewTokens = None,
    num_beams: opts.NumBeams = None,
) -> None:
    """Print the task's metrics on a split as one JSON object (a metric with no value is null)."""
    from .pipeline import evaluate as run

    quiet_weight_loading()
    decoding = {k: v for k, v in {"max_new_tokens": max_new_tokens, "num_beams": num_beams}.items() if v is not None}
    options = {"max_eval_samples": max_eval_samples, "decoding": decoding, "backbone_dtype": backbone_dtype}
    scores = run(artifact, data, split, model, batch_size, device, task, **options)
    typer.echo(dumps(scores))


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
    task: Optional[str] = typer.Option(None, help=TASK_HELP),
    backbone_dtype: opts.LoadedBackboneDtype = None,
) -> None:
    """Predict for a file in the task's format, written in the task's own shape.

    One JSON line per input (label and scores, chosen choice, entity, real value);
    a CoNLL file with a predicted-tag column for tagging tasks; the official
    {id: answer} map (plus null_odds.json for SQuAD 2.0) for QA.
    """
    from .pipeline import predict as run

    quiet_weight_loading()
    count = run(artifact, input, output, model, batch_size, device, task, backbone_dtype=backbone_dtype)
    typer.echo(f"wrote {count} predictions to {output}")


cli_generate.register(app)


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
    overwrite: opts.Overwrite = False,
) -> None:
    """Train a P-Tuning v2 prompt on the bundled sample data, evaluate it, and predict."""
    from importlib.resources import files

    from .method import method_config
    from .pipeline import TrainRequest
    from .pipeline import evaluate as run_eval
    from .pipeline import predict as run_predict
    from .pipeline import train as run_train

    if output.is_dir() and any(output.iterdir()) and not overwrite:  # the rule `train` follows, before any work
        raise PTuningError(f"{output} is not empty; pass --overwrite to replace it")
    quiet_weight_loading()
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
            overwrite=overwrite,
        )
    )
    typer.echo(f"trainable parameters: {summary['trainable_params']:,} of {summary['backbone_params']:,}")
    typer.echo("dev metrics: " + dumps(run_eval(output, sample)))
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "input.tsv"
        source.write_text("sentence\nan utterly charming and beautifully acted film\na tedious , joyless slog\n")
        run_predict(output, source, Path(tmp) / "out.jsonl")
        for line in (Path(tmp) / "out.jsonl").read_text().splitlines():
            typer.echo("prediction: " + line)
    typer.echo(f"artifact: {output} ({summary['artifact_bytes']:,} bytes)")


# Commands kept in their own modules: `serve` (cli_serve.py), `inspect` and `card` (cli_inspect.py), PEFT (cli_peft.py).
app.command()(cli_serve.serve)
app.command("inspect")(cli_inspect.inspect_artifacts)
app.command()(cli_inspect.card)
app.command("import-peft")(cli_peft.import_peft)
app.command("export-peft")(cli_peft.export_peft)


from .sweep.command import sweep_command  # noqa: E402  (built from train's options, so defined after train)

app.command("sweep")(sweep_command(train))


def main() -> None:
    """The ``ptuning`` entry point: one-line errors, and Ctrl-C as status 130 saying what was saved.

    The command runs in a click context made here rather than through ``app()``: typer's own
    main turns Ctrl-C into a return value of 130 that, outside standalone mode, nobody saw (the
    process exited 0 without a word).
    """
    command = typer.main.get_command(app)
    try:
        with command.make_context("ptuning", sys.argv[1:]) as ctx:
            command.invoke(ctx)
    except PTuningError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(getattr(exc, "exit_code", 2))  # 2: fix the command; a diverged run says 1
    except KeyboardInterrupt as exc:  # training's says where its checkpoint is
        typer.echo(f"interrupted {exc}".rstrip(), err=True)
        sys.exit(130)
    except Exception as exc:  # usage errors, --help and --version arrive here
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
