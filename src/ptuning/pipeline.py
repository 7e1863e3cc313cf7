"""Training as a function: what ``ptuning train``, ``ptuning.train`` and the benchmarks call.

Everything that can fail because of user input (data, flags, artifacts) is checked before the output directory
is touched. Evaluation and prediction with a saved artifact are ``inference.py``'s (re-exported here).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import artifact, backbones, checkpoint, distill, mixture, runfile, warmstart
from .decoding import check_decodable
from .distill import DistillConfig
from .encoders import Encoder
from .errors import PTuningError
from .finite import json_safe
from .heads import POOLINGS, MultiTaskHead
from .inference import artifact_size, evaluate, generate, predict, score_examples, score_split  # noqa: F401
from .io import atomic_write_json
from .loop import UPDATES, TrainConfig, TrainData, predict_logits  # noqa: F401 (predict_logits: re-exported)
from .loop import train as run_loop
from .method import MethodConfig, method_class
from .method.prefix import Ptv2Config
from .mixture import MixtureEntry, check_temperature, entries_from_flags, read_tasks_file
from .model import PTuningModel
from .multitask import MultiTaskData, TaskPart, task_scores
from .precision import TORCH_DTYPES, cast_frozen, check_training_dtype
from .splits import plan_splits
from .stopping import Interrupted, TrainingDiverged
from .tasks import Task, get_task
from .trainconfig import check_count, check_precision


@dataclass
class TrainRequest:
    task: str | None  # one task; "rte,cb" with ``data`` a folder of one sub-folder per task; None with tasks_file
    data: str | None
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
    tasks_file: str | None = None  # a multi-task mixture (mixture.py); the task and data fields stay None
    mix_temperature: float | None = None  # a mixture's sampling temperature; None: 1 (proportional to task size)
    init_from: str | None = None  # an artifact whose prompt (and matching heads) the run starts from
    distill: DistillConfig | None = None  # a teacher artifact and how its soft targets weigh

    def __post_init__(self) -> None:
        """The request's own numbers, refused before anything is read or written (TrainConfig checks its own)."""
        check_count("--max-length", self.max_length, minimum=8)  # fewer leaves no room for any text
        check_count("--max-train-samples", self.max_train_samples)
        check_count("--max-eval-samples", self.max_eval_samples)
        check_count("--few-shot", self.few_shot)
        if self.few_shot is not None and (self.max_train_samples or self.max_eval_samples):
            raise PTuningError(
                "--few-shot K draws the training and selection examples itself: drop --max-train-samples and "
                "--max-eval-samples (a cut would undo the stratified draw)"
            )
        if self.tasks_file is not None and (self.task or self.data):
            raise PTuningError("--tasks-file lists the tasks and their data: drop --task and --data")
        if self.tasks_file is None and not (self.task and self.data):
            raise PTuningError("give --task and --data (or --tasks-file FILE.yaml for a multi-task run)")
        if self.mix_temperature is not None:
            check_temperature(self.mix_temperature)

    def mixture(self) -> list[MixtureEntry] | None:
        """The tasks of a multi-task run (``--tasks-file``, or ``--task a,b``); None for a single task."""
        if self.tasks_file is not None:
            return read_tasks_file(self.tasks_file)
        return entries_from_flags(self.task, self.data)


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


def training_examples(task: Task, request: TrainRequest, data: str | None = None):
    """``(task, train examples, selection examples, split plan)``; the task learns its labels from train."""
    plan = plan_splits(task, data or request.data, request.few_shot, request.few_shot_seed)
    task = task.with_labels_from(plan.label_source)  # K-shot: the whole training file, not the K drawn
    train_examples = task.records_to_examples(plan.train, labelled=True)[: request.max_train_samples]
    eval_examples = task.records_to_examples(plan.selection, labelled=True)[: request.max_eval_samples]
    _warn_one_label(task, train_examples)
    return task, train_examples, eval_examples, plan


def _warn_one_label(task: Task, examples: list) -> None:
    """Say when every training example has the same label: the classifier can only learn to predict it.

    Data do this, not a bug: FewGLUE's WSC train file holds 32 positive examples only (PET trains WSC as span
    generation), so a WSC classifier trained on it answers True everywhere.
    """
    labels = getattr(task, "labels", None) or ()
    seen = {e.label for e in examples if isinstance(e.label, (bool, int, str))}
    if len(labels) > 1 and len(examples) > 1 and len(seen) == 1:
        print(
            f"warning: all {len(examples)} training examples of {task.name} have the same label ({seen.pop()!r}); "
            "a classifier trained on them can only predict it",
            flush=True,
        )


def task_parts(request: TrainRequest, entries: list[MixtureEntry] | None) -> list[TaskPart]:
    """The run's tasks with their examples: one, or one per mixture entry (each refused in one line first)."""
    if entries is None:
        if request.mix_temperature is not None:
            raise PTuningError("--mix-temperature applies to a multi-task run (--tasks-file, or --task a,b)")
        entries = [MixtureEntry(request.task, request.data, 1.0, request.task_options)]
    elif request.distill is not None:
        raise PTuningError("--teacher applies to a single-task run; distil each task after the multi-task stage")
    elif any(value for value in request.task_options.values()):
        raise PTuningError("task options (--text-column, --labels, --crf...) go into each --tasks-file entry")
    elif request.train.group_by_length:
        raise PTuningError("--group-by-length does not apply to a multi-task run (its batches are drawn by task)")
    parts = []
    for entry in entries:
        task = get_task(entry.task, **entry.options)
        if entry.options.get("crf") and task.family != "tagging":
            raise PTuningError(f"--crf applies to tagging tasks, not to {task.name} ({task.family})")
        if task.uses_lm_head and len(entries) > 1:
            raise PTuningError(f"{task.name} generates text with the LM head: train it alone, not in a mixture")
        task, train_examples, eval_examples, plan = training_examples(task, request, entry.data)
        parts.append(TaskPart(task.name, task, entry.data, entry.weight, train_examples, eval_examples, plan))
    return parts


def train(request: TrainRequest, on_evaluation: Callable[[dict], str | None] | None = None) -> dict:
    """Train as ``request`` says; write the artifact, ``metrics.json`` and ``config.yaml`` to its output.

    Everything that can be refused (data, settings, a checkpoint made by another run, an ``--init-from``
    or ``--teacher`` artifact that does not fit) is refused before the output directory is created or changed.
    ``on_evaluation`` is the training loop's hook after each evaluation (:func:`ptuning.loop.train`): a
    sweep's pruner stops a trial there.
    """
    check_precision(request.train.mixed_precision)
    check_training_dtype(request.train, method_class(request.method.method))
    entries = request.mixture()
    parts = task_parts(request, entries)
    output = Path(request.output)
    if output.exists() and not output.is_dir():
        raise PTuningError(f"--output {output} is a file; give a directory")
    if request.train.resume and not checkpoint.exists(output):
        raise PTuningError(f"--resume: {output} holds no checkpoint to resume from")

    from accelerate.utils import set_seed

    set_seed(request.train.seed)  # the head and prompt initialisation depend on it
    max_length = request.max_length or max(part.task.default_max_length for part in parts)
    model, tokenizer, name, fingerprint, pooling = _build_model(request, parts, entries)
    if request.init_from is not None:  # --optimizer cma then searches around this prompt (search.py)
        for line in warmstart.start_from(request.init_from, model, [part.task for part in parts], fingerprint):
            print(line, flush=True)
    data = _train_data(request, parts, entries is not None, model, tokenizer, max_length, (name, fingerprint))
    lr = UPDATES[request.train.optimizer].planned_lr(model, request.train)
    options = runfile.options_of(request, lr=lr, max_length=max_length, pooling=pooling, backbone=name)
    run = {**options, "backbone_fingerprint": fingerprint}
    if entries is not None:
        run["mixture"] = [entry.to_dict() for entry in entries]  # the tasks file's content, not only its path
    if request.train.resume:
        checkpoint.check_resumable(output, run, model)
    _check_output(output, request.train.resume, request.overwrite)
    output.mkdir(parents=True, exist_ok=True)
    for part in parts:
        print(f"splits{f' ({part.name})' if entries else ''}: {part.plan.describe()}", flush=True)

    def save_best(trained: PTuningModel, scores: dict) -> None:
        # e.g. the SQuAD 2.0 null threshold these scores were measured with
        calibrated = {p.name: p.task.calibrated(task_scores(scores, p.name) if entries else scores) for p in parts}
        chosen = calibrated if entries is not None else calibrated[parts[0].name]
        artifact.save_artifact(
            output,
            trained,
            task=chosen,
            backbone_name=name,
            backbone_fingerprint=fingerprint,
            max_length=max_length,
            pooling=pooling,
            extra={"selection": {"split": _selection_split(parts, entries), "metrics": scores}},  # for the card
        )

    summary = run_loop(
        model,
        data,
        request.train,
        output,
        save_best,
        run,
        on_start=lambda: _write_run_files(output, options, parts),  # not before: see loop.train
        on_evaluation=on_evaluation,
    )
    if summary["stopped_by"] == "stop_after_steps":  # the test hook simulates a kill: nothing more is written
        return summary
    summary.update(task=",".join(p.name for p in parts), method=request.method.to_dict(), backbone=name)
    summary.update(max_length=max_length, backbone_dropout=request.train.backbone_dropout, pooling=pooling)
    summary["splits"] = {p.name: p.plan.roles for p in parts} if entries else parts[0].plan.roles
    if entries is not None:
        summary["mixture"] = _mixture_summary(entries, data)
    summary["reported"] = _score_reported(output, parts, request, summary, entries is not None)
    return _finish(summary, output)


def _build_model(request: TrainRequest, parts: list[TaskPart], entries):
    """``(model, tokenizer, backbone name, fingerprint, pooling)``: the backbone in ``--backbone-dtype``, checked
    against ``--optimizer`` before anything is written."""
    dtype = request.train.backbone_dtype
    lm_head = parts[0].task.uses_lm_head  # a generation task (never in a mixture: see task_parts)
    backbone, tokenizer, name = backbones.load_backbone(
        request.model, dropout=request.train.backbone_dropout, int8=dtype == "int8", lm_head=lm_head
    )
    fingerprint = backbones.fingerprint(backbone)  # the float32 weights' (kept on the module by a cast)
    pooling = _pooling(request.pooling, backbone, name)
    encoder = Encoder(backbone)
    model = PTuningModel(encoder, request.method, _heads(parts, entries, encoder, pooling))
    _check_trainable(model, parts[0].task)
    if dtype in TORCH_DTYPES:  # after the method froze it; int8 was chosen at load time
        cast_frozen(model.backbone, dtype)
    UPDATES[request.train.optimizer].check(model, request.train)
    return model, tokenizer, name, fingerprint, pooling


def _selection_split(parts: list[TaskPart], entries) -> str | dict:
    """What selected the checkpoint: the split's description, or each task's for a mixture."""
    return {p.name: p.plan.roles["selection"] for p in parts} if entries else parts[0].plan.roles["selection"]


def _heads(parts: list[TaskPart], entries, encoder: Encoder, pooling: str) -> nn.Module:
    """The task's head, or a mixture's heads (one per task, in the mixture's order) behind one module."""
    if entries is None:
        return parts[0].task.head_for(encoder, pooling)
    return MultiTaskHead({part.name: part.task.head_for(encoder, pooling) for part in parts})


def _train_data(request, parts, multi: bool, model, tokenizer, max_length: int, backbone: tuple[str, str]):
    """Featurize every task at the model's token budget; what the loop trains on (a mixture's, a teacher's)."""
    budget = model.token_budget(max_length)
    for part in parts:
        part.train_features = part.task.featurize(part.train_examples, tokenizer, budget).features
        part.eval_set = part.task.featurize(part.eval_examples, tokenizer, budget)
    if multi:
        temperature = request.mix_temperature or 1.0
        shares = mixture.probabilities([len(p.train_features) for p in parts], [p.weight for p in parts], temperature)
        pairs = zip(parts, shares, strict=True)
        described = ", ".join(f"{p.name} {len(p.train_features)} p={share:.3f}" for p, share in pairs)
        print(f"mixture (T={temperature:g}): {described}", flush=True)
        return MultiTaskData(parts, [p.task.collator(tokenizer) for p in parts], shares)
    part = parts[0]
    data = TrainData(part.task, part.train_features, part.eval_set, part.eval_examples, part.task.collator(tokenizer))
    if request.distill is None:
        return data
    if part.task.uses_lm_head:
        raise PTuningError(f"--teacher distils a task head's outputs; {part.name} generates text: train it without one")
    with torch.random.fork_rng(devices=[]):  # loading the teacher leaves the run's random draws as they were
        teacher = distill.load_teacher(request.distill, part.task, tokenizer, *backbone)
    return distill.DistilledData(data, teacher, request.distill)


def _mixture_summary(entries: list[MixtureEntry], data: MultiTaskData) -> list[dict]:
    return [
        {**entry.to_dict(), "train_examples": size, "probability": share}
        for entry, size, share in zip(entries, data.sizes, data.probabilities, strict=True)
    ]


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


def _write_run_files(output: Path, options: dict, parts: list[TaskPart]) -> None:
    """``config.yaml`` always; ``few_shot.json`` (the drawn records; per task for a mixture) for a K-shot run."""
    runfile.write(output, options)
    drawn = {part.name: part.plan.drawn for part in parts if part.plan.drawn is not None}
    if drawn:
        atomic_write_json(output / "few_shot.json", drawn if len(parts) > 1 else next(iter(drawn.values())))


def _score_reported(output: Path, parts: list[TaskPart], request: TrainRequest, summary: dict, multi: bool):
    """The selected artifact's metrics on the reported split (FewGLUE's val, K-shot's full validation file).

    Scored once, after training, so the reported split never influences the checkpoint. None when the
    selection split is the reported one, or when no artifact was kept (a run that never evaluated); a
    mixture's are per task.
    """
    if summary.get("best") is None or summary["stopped_by"] == "interrupted":
        return None
    reported = {}
    for part in parts:
        if part.plan.reported is None:
            continue
        model, tokenizer, task, meta = artifact.load_artifact(
            output, model_name=request.model, task=part.name if multi else None
        )
        examples = task.records_to_examples(part.plan.reported, labelled=True)
        reported[part.name] = scores = score_examples(model, tokenizer, task.for_reporting(), examples, meta)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
        print(f"reported split{f' ({part.name})' if multi else ''}: {shown}", flush=True)
    if not reported:
        return None
    return reported if multi else reported[parts[0].name]


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
