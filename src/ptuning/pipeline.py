"""Train / evaluate / predict as functions: what the CLI and the benchmarks call.

Everything that can fail because of user input (data, flags, artifacts) is
checked before the output directory is touched.
"""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import artifact, backbones, card, checkpoint, runfile
from .decoding import check_decodable
from .encoders import Encoder
from .errors import DataError, PTuningError
from .finite import json_safe
from .heads import POOLINGS
from .io import atomic_write_bytes, atomic_write_json
from .method import MethodConfig
from .method.prefix import Ptv2Config
from .model import PTuningModel
from .splits import SplitPlan, plan_splits
from .stopping import Interrupted, TrainingDiverged
from .tasks import Task, get_task
from .tasks.readers import read_records
from .train import TrainConfig, predict_logits  # noqa: F401 (re-exported)
from .train import train as run_loop
from .trainconfig import check_count, check_precision


@dataclass
class TrainRequest:
    task: str
    data: str
    output: Path
    model: str | None = None
    method: MethodConfig = field(default_factory=Ptv2Config)
    train: TrainConfig = field(default_factory=TrainConfig)
    max_length: int | None = None  # None: the task's default (384 for QA, 128 otherwise)
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    pooling: str = "auto"
    task_options: dict = field(default_factory=dict)
    overwrite: bool = False
    few_shot: int | None = None  # K: draw K training and K selection examples from the training file
    few_shot_seed: int = 0

    def __post_init__(self) -> None:
        """The request's own numbers, refused before anything is read or written (TrainConfig checks its own)."""
        check_count("--max-length", self.max_length, minimum=8)  # fewer leaves no room for any text
        check_count("--max-train-samples", self.max_train_samples)
        check_count("--max-eval-samples", self.max_eval_samples)
        check_count("--few-shot", self.few_shot)


def _pooling(requested: str, backbone, name: str) -> str:
    """``auto``: the pooling the checkpoint was trained with when it says so
    (sentence-transformers ``1_Pooling``, e.g. mean for MiniLM), else ``cls`` for
    encoders and ``last`` for decoders."""
    if requested not in POOLINGS:
        raise PTuningError(f"unknown pooling {requested!r}; choose one of {', '.join(POOLINGS)}")
    if requested != "auto":
        return requested
    if backbones.geometry(backbone).is_decoder:
        return "last"
    return backbones.native_pooling(name) or "cls"


def _check_output(output: Path, resume: bool, overwrite: bool) -> None:
    if not output.exists() or not any(output.iterdir()):
        return
    if resume and checkpoint.exists(output):
        return
    if overwrite:
        shutil.rmtree(output)
        return
    raise PTuningError(f"{output} is not empty; pass --resume to continue it or --overwrite to replace it")


def training_examples(task: Task, request: TrainRequest):
    """``(task, train examples, selection examples, split plan)``; the task learns its labels from train."""
    plan = plan_splits(task, request.data, request.few_shot, request.few_shot_seed)
    task = task.with_labels_from(plan.train)
    train_examples = task.records_to_examples(plan.train, labelled=True)[: request.max_train_samples]
    eval_examples = task.records_to_examples(plan.selection, labelled=True)[: request.max_eval_samples]
    return task, train_examples, eval_examples, plan


def train(request: TrainRequest) -> dict:
    """Train as ``request`` says; write the artifact, ``metrics.json`` and ``config.yaml`` to its output.

    Everything that can be refused (data, settings, a checkpoint made by another run) is
    refused before the output directory is created or changed.
    """
    check_precision(request.train.mixed_precision)
    task = get_task(request.task, **request.task_options)
    if request.task_options.get("crf") and task.family != "tagging":
        raise PTuningError(f"--crf applies to tagging tasks, not to {task.name} ({task.family})")
    task, train_examples, eval_examples, plan = training_examples(task, request)
    output = Path(request.output)
    if output.exists() and not output.is_dir():
        raise PTuningError(f"--output {output} is a file; give a directory")
    if request.train.resume and not checkpoint.exists(output):
        raise PTuningError(f"--resume: {output} holds no checkpoint to resume from")

    from accelerate.utils import set_seed

    set_seed(request.train.seed)  # the head and prompt initialisation depend on it
    max_length = request.max_length or task.default_max_length
    backbone, tokenizer, name = backbones.load_backbone(
        request.model, dropout=request.train.backbone_dropout, lm_head=task.uses_lm_head
    )
    fingerprint = backbones.fingerprint(backbone)
    pooling = _pooling(request.pooling, backbone, name)
    encoder = Encoder(backbone)
    model = PTuningModel(encoder, request.method, task.head_for(encoder, pooling))
    _check_trainable(model, task)
    budget = model.token_budget(max_length)
    train_features = task.featurize(train_examples, tokenizer, budget).features
    eval_set = task.featurize(eval_examples, tokenizer, budget)
    lr = request.train.lr or model.learning_rate()
    options = runfile.options_of(request, lr=lr, max_length=max_length, pooling=pooling, backbone=name)
    run = {**options, "backbone_fingerprint": fingerprint}
    if request.train.resume:
        checkpoint.check_resumable(output, run, model)
    _check_output(output, request.train.resume, request.overwrite)
    output.mkdir(parents=True, exist_ok=True)
    print(f"splits: {plan.describe()}", flush=True)

    def save_best(trained: PTuningModel, scores: dict) -> None:
        artifact.save_artifact(
            output,
            trained,
            task=task.calibrated(scores),  # e.g. the SQuAD 2.0 null threshold these scores were measured with
            backbone_name=name,
            backbone_fingerprint=fingerprint,
            max_length=max_length,
            pooling=pooling,
            extra={"selection": {"split": plan.roles["selection"], "metrics": scores}},  # for the model card
        )

    summary = run_loop(
        model,
        task,
        train_features,
        eval_set,
        eval_examples,
        task.collator(tokenizer),
        request.train,
        output,
        save_best,
        run,
        on_start=lambda: _write_run_files(output, options, plan),  # not before: see train.train
    )
    if summary["stopped_by"] == "stop_after_steps":  # the test hook simulates a kill: nothing more is written
        return summary
    summary.update(task=task.name, method=request.method.to_dict(), backbone=name, max_length=max_length)
    summary.update(backbone_dropout=request.train.backbone_dropout, pooling=pooling, splits=plan.roles)
    summary["reported"] = _score_reported(output, plan, request, summary)
    return _finish(summary, output)


def _check_trainable(model: PTuningModel, task: Task) -> None:
    """Refuse, before any work, a run with nothing to train or whose prompt cannot decode (a generation task)."""
    if model.trainable_parameters() == 0:
        raise PTuningError(
            f"--method {model.config.method} trains nothing on task {task.name} (its head is the backbone's frozen "
            "LM head): use ptv2, prompt-tuning or finetune"
        )
    if task.uses_lm_head:
        with torch.no_grad():
            check_decodable(model.method.prompt_inputs())


def _write_run_files(output: Path, options: dict, plan: SplitPlan) -> None:
    """``config.yaml`` always; ``few_shot.json`` (the drawn records) for a K-shot run."""
    runfile.write(output, options)
    if plan.drawn is not None:
        atomic_write_json(output / "few_shot.json", plan.drawn)


def _score_reported(output: Path, plan: SplitPlan, request: TrainRequest, summary: dict) -> dict | None:
    """The selected artifact's metrics on the reported split (FewGLUE's val, K-shot's full validation file).

    Scored once, after training, so the reported split never influences the checkpoint. None when the
    selection split is the reported one, or when no artifact was kept (a run that never evaluated).
    """
    if plan.reported is None or summary.get("best") is None or summary["stopped_by"] == "interrupted":
        return None
    model, tokenizer, task, meta = artifact.load_artifact(output, model_name=request.model)
    scores = score_examples(model, tokenizer, task, task.records_to_examples(plan.reported, labelled=True), meta)
    print("reported split: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()), flush=True)
    return scores


def _finish(summary: dict, output: Path) -> dict:
    """Write ``metrics.json`` (also for a run that stopped on Ctrl-C or a diverged loss), then say how it ended."""
    summary["artifact_bytes"] = artifact_size(output)
    atomic_write_json(output / "metrics.json", json_safe(summary))
    if (output / artifact.META).is_file():
        artifact.write_card(output)  # now with the run's summary (epochs, reported split, parameters)
    if summary["stopped_by"] == "interrupted":
        saved = summary["checkpoint_step"]
        if saved is None:
            raise Interrupted(f"at step {summary['steps']}, before any checkpoint was saved: start it again")
        raise Interrupted(
            f"at step {summary['steps']}; {output / checkpoint.CHECKPOINT} holds step {saved}: the same command "
            "with --resume continues from there"
        )
    if summary.get("error"):
        raise TrainingDiverged(summary["error"])
    return summary


def artifact_size(directory: Path) -> int:
    names = (artifact.WEIGHTS, artifact.META, artifact.BACKBONE_WEIGHTS)
    return sum((Path(directory) / n).stat().st_size for n in names if (Path(directory) / n).exists())


def evaluate(
    artifact_dir: Path,
    data: str,
    split: str = "validation",
    model_name: str | None = None,
    batch_size: int = 64,
    device: str = "auto",
    max_eval_samples: int | None = None,
    decoding: dict | None = None,
    record: bool = True,
) -> dict:
    """The artifact's metrics on ``split`` of ``data`` (its first ``max_eval_samples`` examples; ``decoding``: a
    generation task's options); ``record`` adds them (and the command) to its model card."""
    check_count("--max-eval-samples", max_eval_samples)
    _decoding_task(artifact_dir, decoding)  # refused before the backbone loads
    model, tokenizer, task, meta = artifact.load_artifact(artifact_dir, model_name=model_name)
    task = task.with_decoding(**decoding) if decoding else task
    model.to(backbones.resolve_device(device))
    scores = score_split(model, tokenizer, task, data, split, meta["max_length"], batch_size, max_eval_samples)
    if record:
        name = shlex.quote(Path(artifact_dir).resolve().name)
        command = f"ptuning eval {name} --data {shlex.quote(runfile.local_path(data))} --split {split}"
        if max_eval_samples:
            command += f" --max-eval-samples {max_eval_samples}"
        card.record_evaluation(Path(artifact_dir), meta, scores, command)
    return scores


def _decoding_task(artifact_dir: Path, decoding: dict | None, required: bool = False) -> None:
    """Refuse decoding options for an artifact whose task does not generate (``required``: even without options)."""
    if decoding or required:
        get_task(artifact.read_meta(Path(artifact_dir))["task"]["name"]).with_decoding(**(decoding or {}))


def _finite_logits(logits):
    """Refuse outputs with NaN or infinity: they would become ``"score": NaN`` (not JSON) or meaningless metrics."""
    if not torch.is_tensor(logits):  # generated texts
        return logits
    bad = int((~logits.isfinite()).reshape(len(logits), -1).any(dim=1).sum()) if logits.numel() else 0
    if bad:
        raise PTuningError(
            f"the model's outputs are NaN or infinite for {bad} of {len(logits)} inputs; the artifact is broken "
            "(was it trained with a diverging loss?): retrain it, with a lower --lr"
        )
    return logits


def score_split(
    model, tokenizer, task: Task, data: str, split: str, max_length: int, batch_size: int = 64, limit: int | None = None
) -> dict:
    """The task's metrics on one labelled split of ``data`` (its first ``limit`` examples), for a model in memory."""
    examples = task.records_to_examples(task.load_split(data, split), labelled=True)[:limit]
    scores = score_examples(model, tokenizer, task, examples, {"max_length": max_length}, batch_size)
    return {"task": task.name, "split": split, "examples": len(examples), **scores}


def score_examples(model, tokenizer, task: Task, examples: list, meta: dict, batch_size: int = 64) -> dict:
    """The task's metrics on labelled ``examples`` at the artifact's ``max_length``."""
    featurized = task.featurize(examples, tokenizer, model.token_budget(meta["max_length"]))
    logits = _finite_logits(task.outputs(model, featurized.features, task.collator(tokenizer), batch_size))
    return task.evaluate(logits, examples, featurized.alignment)


def predict(
    artifact_dir: Path,
    input_file: Path,
    output_file: Path,
    model_name: str | None = None,
    batch_size: int = 64,
    device: str = "auto",
    decoding: dict | None = None,
) -> int:
    """Predictions for ``input_file`` in the task's own format (generation: ``{"generated": ...}`` lines)."""
    input_file = Path(input_file)
    if not input_file.is_file():
        raise DataError("input file not found", input_file)
    _decoding_task(artifact_dir, decoding)
    model, tokenizer, task, meta = artifact.load_artifact(artifact_dir, model_name=model_name)
    task = task.with_decoding(**decoding) if decoding else task
    model.to(backbones.resolve_device(device))
    examples = task.records_to_examples(read_records(input_file, header=task.files.header), labelled=False)
    featurized = task.featurize(examples, tokenizer, model.token_budget(meta["max_length"]))
    logits = _finite_logits(task.outputs(model, featurized.features, task.collator(tokenizer), batch_size))
    rows = task.predictions(logits, examples, featurized.alignment)
    text = task.write_predictions(rows, examples, input_file, Path(output_file))  # JSONL, CoNLL, SQuAD's map
    atomic_write_bytes(Path(output_file), text.encode("utf-8"))
    return len(rows)


def generate(artifact_dir: Path, input_file: Path, output_file: Path, decoding: dict | None = None, **kwargs) -> int:
    """``ptuning generate``: :func:`predict` for a generation artifact, with decoding options; others are refused."""
    _decoding_task(artifact_dir, decoding, required=True)
    return predict(artifact_dir, input_file, output_file, decoding=decoding, **kwargs)
