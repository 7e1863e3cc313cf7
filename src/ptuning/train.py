"""The training loop, on Hugging Face Accelerate.

Accelerate handles devices and data-parallel processes (``accelerate launch
--num_processes 2 --cpu ptuning train ...``); this file adds what P-Tuning
needs on top: AdamW over the trainable parameters only, warmup then linear or
exponential decay, clipping, evaluation every epoch (or every N steps), the
best-dev artifact, early stopping, resumable checkpoints and metric logs.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler
from tqdm.auto import tqdm

from . import checkpoint
from .errors import PTuningError
from .model import PTuningModel
from .tasks import Featurized

SCHEDULERS = ("linear", "exponential", "constant")


@dataclass
class TrainConfig:
    epochs: int = 10
    lr: float | None = None
    batch_size: int = 16
    eval_batch_size: int = 64
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    scheduler: str = "linear"
    decay_gamma: float = 0.9
    max_grad_norm: float = 1.0
    eval_steps: int | None = None
    patience: int | None = None
    max_minutes: float | None = None  # wall-clock cap, checked at each evaluation (shared machines, fixed budgets)
    seed: int = 42
    grad_accum: int = 1
    gradient_checkpointing: bool = False
    group_by_length: bool = False  # batch similar lengths together (less padding; changes batch composition)
    mixed_precision: str = "no"  # no | bf16 | fp16: autocast for forward passes (training and evaluation)
    backbone_dropout: float | None = None  # every dropout rate inside the backbone; None keeps the checkpoint's
    resume: bool = False
    stop_after_steps: int | None = None  # simulate an interruption (tests)


PRECISIONS = ("no", "bf16", "fp16")


def check_precision(precision: str) -> str:
    """Refuse a precision the machine cannot run, before any work starts.

    Only the forward passes run in reduced precision (autocast); parameters,
    gradients, optimizer state and the saved prompt stay float32, so an artifact
    trained in bf16 loads and serves exactly like a float32 one.
    """
    if precision not in PRECISIONS:
        raise PTuningError(f"unknown --mixed-precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and not torch.cuda.is_available():
        raise PTuningError("--mixed-precision fp16 needs a CUDA GPU; use bf16 (CPU and recent GPUs) or no")
    if precision == "bf16" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise PTuningError("this GPU has no bf16 support; use --mixed-precision fp16 or no")
    return precision


def _forget_other_precision(precision: str) -> None:
    """Let a second run in this process use another precision.

    Accelerate keeps one process-wide state and refuses a new ``Accelerator`` whose
    precision differs from the first one's; the benchmark harness, a notebook or the
    test suite train several times in one process. Only the precision part is reset:
    the process group (``PartialState``) is kept.
    """
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != precision:
        AcceleratorState._reset_state(reset_partial_state=False)


def lr_lambda(kind: str, warmup: int, total: int, gamma: float, steps_per_epoch: int) -> Callable[[int], float]:
    """Warmup to the peak rate, then linear decay to 0 or ``gamma`` per epoch."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "linear":
            return max(0.0, (total - step) / max(1, total - warmup))
        if kind == "exponential":
            return gamma ** ((step - warmup) / max(1, steps_per_epoch))
        return 1.0

    return factor


class JsonlLog:
    """``metrics.jsonl`` and, when tensorboard is installed, a TensorBoard run."""

    def __init__(self, directory: Path, enabled: bool) -> None:
        self.path = directory / "metrics.jsonl"
        self.enabled = enabled
        self.board = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.board = SummaryWriter(str(directory / "tensorboard"))
            except ImportError:
                self.board = None

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        if self.board is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.board.add_scalar(key, value, row["step"])
            self.board.flush()

    def close(self) -> None:
        if self.board is not None:
            self.board.close()


def feature_length(feature: dict) -> int:
    """Padded size of one feature (a multiple-choice row pads every choice to its longest)."""
    ids = feature["input_ids"]
    if ids and isinstance(ids[0], list):
        return len(ids) * max(len(choice) for choice in ids)
    return len(ids)


def _loader(features, collate, batch_size: int, seed: int | None, group_by_length: bool = False) -> DataLoader:
    """Sequential without a seed (evaluation), else shuffled by ``seed``.

    ``group_by_length`` batches features of similar length together (Hugging
    Face's ``LengthGroupedSampler``): batches pad to their longest feature, so
    this cuts the padding, and the time, of data with varied lengths.
    """
    if seed is None:
        sampler = SequentialSampler(features)
    elif group_by_length:
        from transformers.trainer_pt_utils import LengthGroupedSampler  # the Trainer's module: slow to import

        lengths = [feature_length(f) for f in features]
        generator = torch.Generator().manual_seed(seed)
        sampler = LengthGroupedSampler(batch_size, lengths=lengths, generator=generator)
    else:
        sampler = RandomSampler(features, generator=torch.Generator().manual_seed(seed))
    return DataLoader(features, batch_size=batch_size, sampler=sampler, collate_fn=collate)


def evaluate(model, task, featurized: Featurized, examples, collate, batch_size: int, accelerator) -> dict:
    """Task metrics on ``examples`` (gathered over processes), read through ``featurized``'s alignment."""
    logits = predict_logits(model, featurized.features, collate, batch_size, accelerator)
    return task.evaluate(logits, examples, featurized.alignment)


@torch.no_grad()
def predict_logits(model, features, collate, batch_size: int, accelerator=None) -> torch.Tensor:
    model.eval()
    # Longest first: each batch pads only to its own longest feature, and the results are put back in order.
    order = sorted(range(len(features)), key=lambda i: -feature_length(features[i]))
    inputs = [{k: v for k, v in features[i].items() if k != "labels"} for i in order]
    loader = _loader(inputs, collate, batch_size, None)
    if accelerator is not None:
        loader = accelerator.prepare_data_loader(loader)
    device = next(model.parameters()).device
    outputs = []
    for batch in loader:
        if accelerator is None:  # no accelerator placed the batch: follow the model (GPU at eval/predict time)
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        logits = model(**batch)
        if accelerator is not None:
            if logits.dim() == 3:  # per-token logits: processes may pad to different lengths
                logits = accelerator.pad_across_processes(logits, dim=1)
            logits = accelerator.gather_for_metrics(logits)
        outputs.append(logits.float().cpu())
    if outputs[0].dim() == 3:  # (N, L, tags) with L differing between batches
        longest = max(o.shape[1] for o in outputs)
        outputs = [torch.nn.functional.pad(o, (0, 0, 0, longest - o.shape[1])) for o in outputs]
    sorted_logits = torch.cat(outputs)
    logits = torch.empty_like(sorted_logits)
    logits[torch.tensor(order, dtype=torch.long)] = sorted_logits
    return logits


def train(
    model: PTuningModel,
    task,
    train_features: list[dict],
    eval_set: Featurized,
    eval_examples: list,
    collate,
    config: TrainConfig,
    output_dir: Path,
    save_best: Callable[[PTuningModel, dict], None],
) -> dict:
    """Train ``model`` and keep the best-dev artifact; return the summary for ``metrics.json``.

    ``save_best`` receives the model and the scores that made it the best, so the artifact can keep what
    the evaluation tuned (``task.calibrated``).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    precision = check_precision(config.mixed_precision)
    _forget_other_precision(precision)
    accelerator = Accelerator(gradient_accumulation_steps=config.grad_accum, mixed_precision=precision)
    set_seed(config.seed)
    main = accelerator.is_main_process
    output_dir = Path(output_dir)
    lr = config.lr or model.learning_rate()
    if config.gradient_checkpointing:
        model.enable_gradient_checkpointing()

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(model.parameter_groups(config.weight_decay), lr=lr)
    steps_per_epoch = math.ceil(len(train_features) / config.batch_size / config.grad_accum)
    total = steps_per_epoch * config.epochs
    warmup = int(total * config.warmup_ratio)
    schedule = lr_lambda(config.scheduler, warmup, total, config.decay_gamma, steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    loop = {"epoch": 0, "batches_done": 0, "step": 0, "best": None, "best_metrics": None, "bad_evals": 0}
    loop.update({"best_epoch": None, "history": [], "elapsed_s": 0.0})
    if config.resume and checkpoint.exists(output_dir):
        loop = checkpoint.load(output_dir, model, optimizer, scheduler)
        accelerator.print(
            f"resumed from {output_dir / checkpoint.CHECKPOINT} at epoch {loop['epoch']} step {loop['step']}"
        )
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(model)
    n_train, n_backbone = unwrapped.trainable_parameters(), unwrapped.backbone_parameters()
    accelerator.print(
        f"method {unwrapped.config.method}: {n_train:,} trainable parameters "
        f"({100 * n_train / n_backbone:.3f}% of the {n_backbone:,}-parameter backbone); lr {lr:g}"
    )
    loss_fn = getattr(unwrapped.head, "loss", None) or task.loss  # a CRF head scores whole sequences
    log = JsonlLog(output_dir, main)
    metric = task.main_metric
    started = time.perf_counter() - loop["elapsed_s"]
    stop = False
    steps_this_run = 0
    total_loss, seen = 0.0, 0  # the running loss of the current epoch

    def evaluate_and_keep(epoch_float: float, train_loss: float) -> bool:
        """Evaluate, keep the best artifact, checkpoint; True when patience or the time cap ran out."""
        scores = evaluate(model, task, eval_set, eval_examples, collate, config.eval_batch_size, accelerator)
        model.train()
        row = {"epoch": round(epoch_float, 3), "step": loop["step"], "train_loss": train_loss, **scores}
        row["elapsed_s"] = round(time.perf_counter() - started, 2)
        loop["history"].append(row)
        improved = loop["best"] is None or scores[metric] > loop["best"]
        if improved:
            loop.update(best=scores[metric], best_metrics=scores, best_epoch=row["epoch"], bad_evals=0)
            if main:
                save_best(accelerator.unwrap_model(model), scores)
        else:
            loop["bad_evals"] += 1
        log.write({**row, "best_" + metric: loop["best"]})
        accelerator.print(
            f"epoch {row['epoch']}: "
            + ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
            + (" (best)" if improved else "")
        )
        loop["elapsed_s"] = time.perf_counter() - started
        if main:
            checkpoint.save(output_dir, dict(trainable), optimizer.optimizer, scheduler.scheduler, loop)
        accelerator.wait_for_everyone()
        if config.patience is not None and loop["bad_evals"] >= config.patience:
            loop["stopped_by"] = "patience"
        elif config.max_minutes is not None and _time_is_up(loop["elapsed_s"], config.max_minutes, accelerator):
            loop["stopped_by"] = "time"
        return "stopped_by" in loop

    model.train()
    while loop["epoch"] < config.epochs and not stop:
        epoch = loop["epoch"]
        loader = accelerator.prepare_data_loader(
            _loader(train_features, collate, config.batch_size, config.seed * 1000 + epoch, config.group_by_length)
        )
        if loop["batches_done"]:
            loader = accelerator.skip_first_batches(loader, loop["batches_done"])
        total_loss, seen = 0.0, 0
        bar = tqdm(
            loader, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, **({} if main else {"disable": True})
        )
        for batch in bar:
            labels = batch.pop("labels")
            with accelerator.accumulate(model):
                loss = loss_fn(model(**batch), labels)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_([p for _, p in trainable], config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            loop["batches_done"] += 1
            total_loss, seen = total_loss + loss.item(), seen + 1
            bar.set_postfix(loss=f"{total_loss / seen:.4f}")
            if accelerator.sync_gradients:
                loop["step"] += 1
                steps_this_run += 1
                if config.eval_steps and loop["step"] % config.eval_steps == 0:
                    stop = evaluate_and_keep(epoch + loop["batches_done"] / len(loader), total_loss / seen)
                if stop or (config.stop_after_steps and steps_this_run >= config.stop_after_steps):
                    break
        if config.stop_after_steps and steps_this_run >= config.stop_after_steps and not stop:
            log.close()
            return {"interrupted": True, **_summary(loop, metric, n_train, n_backbone, started)}
        if stop:
            break
        loop.update(epoch=epoch + 1, batches_done=0)
        if not config.eval_steps:
            stop = evaluate_and_keep(float(epoch + 1), total_loss / max(seen, 1))
    unscored = not loop["history"] or loop["history"][-1]["step"] != loop["step"]
    if config.eval_steps and not stop and unscored:  # the steps after the last --eval-steps boundary count too
        stop = evaluate_and_keep(float(loop["epoch"]), total_loss / max(seen, 1))
    log.close()
    summary = _summary(loop, metric, n_train, n_backbone, started)
    summary["stopped_early"] = stop
    summary["stopped_by"] = loop.pop("stopped_by", None) or "epochs"
    summary["config"] = {**asdict(config), "lr": lr}
    return summary


def _time_is_up(elapsed_s: float, max_minutes: float, accelerator) -> bool:
    """The main process's clock decides, so that every process stops at the same evaluation."""
    from accelerate.utils import broadcast_object_list

    decision = [elapsed_s >= 60 * max_minutes]
    if accelerator.num_processes > 1:
        broadcast_object_list(decision, from_process=0)
    return decision[0]


def _summary(loop: dict, metric: str, n_train: int, n_backbone: int, started: float) -> dict:
    return {
        "best": loop["best_metrics"],
        "best_epoch": loop["best_epoch"],
        "main_metric": metric,
        "trainable_params": n_train,
        "backbone_params": n_backbone,
        "epochs_run": loop["epoch"],
        "steps": loop["step"],
        "train_time_s": round(time.perf_counter() - started, 2),
        "history": loop["history"],
    }
