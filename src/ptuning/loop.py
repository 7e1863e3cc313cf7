"""The training loop, on Hugging Face Accelerate.

Accelerate handles devices and data-parallel processes (``accelerate launch
--num_processes 2 --cpu ptuning train ...``); this file adds what P-Tuning
needs on top: AdamW over the trainable parameters only, warmup then linear or
exponential decay, clipping, evaluation every epoch (or every N steps), the
best-dev artifact, early stopping, resumable checkpoints and metric logs, and
clean stops on Ctrl-C (a checkpoint at that step) or a diverged loss (the best
artifact so far kept).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import activations, checkpoint
from .batches import (  # noqa: F401 (re-exported)
    EXAMPLE_INDEX,
    TrainData,
    _loader,
    evaluate,
    feature_length,
    indexed,
    predict_logits,
    resumed,
)
from .finite import dumps
from .model import PTuningModel
from .optim import GradientUpdate, adamw, lr_lambda, lr_scheduler  # noqa: F401 (re-exported)
from .search import CmaUpdate
from .shard import shard_frozen_backbone
from .stopping import InterruptGuard
from .trainconfig import PRECISIONS, SCHEDULERS, TrainConfig, check_precision, use_precision  # noqa: F401 (re-exported)

UPDATES = {"adamw": GradientUpdate, "cma": CmaUpdate}  # --optimizer: how one batch changes the trained parameters


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
            handle.write(dumps(row) + "\n")
        if self.board is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and math.isfinite(value) and key not in ("step", "epoch"):
                    self.board.add_scalar(key, value, row["step"])
            self.board.flush()

    def close(self) -> None:
        if self.board is not None:
            self.board.close()


def train(
    model: PTuningModel,
    data: TrainData,
    config: TrainConfig,
    output_dir: Path,
    save_best: Callable[[PTuningModel, dict], None],
    run_settings: dict | None = None,
    on_start: Callable[[], None] | None = None,
    on_evaluation: Callable[[dict], str | None] | None = None,
) -> dict:
    """Train ``model`` on ``data`` and keep the best-dev artifact; return the summary for ``metrics.json``.

    ``summary["stopped_by"]`` says what ended the run: ``epochs``, ``patience``, ``time``, ``interrupted``
    (Ctrl-C: a checkpoint was saved at that step), ``nonfinite_loss`` or ``nonfinite_outputs`` (``error``
    then explains), or ``stop_after_steps`` (the test hook that simulates a kill). ``run_settings`` is stored
    in every checkpoint so that ``--resume`` can refuse a different run. ``on_start`` runs on the main process
    once every process is set up: under ``accelerate launch`` a file written to ``output_dir`` earlier could
    fail another process's "output is not empty" check. ``on_evaluation(row)`` runs after each evaluation
    (artifact and checkpoint saved) with its ``metrics.jsonl`` row; a string it returns stops the run with that
    ``stopped_by`` (``ptuning sweep``: ``"pruned"``, when Optuna's pruner gives up on a trial).
    """
    trainer = Trainer(model, data, config, Path(output_dir), save_best, run_settings or {})
    trainer.on_evaluation = on_evaluation
    trainer.accelerator.wait_for_everyone()
    if on_start is not None and trainer.main:
        on_start()
    return trainer.run()


class Trainer:
    """One run: the prepared model, optimizer and schedule, the loop counters, and the rules that stop it."""

    on_evaluation: Callable[[dict], str | None] | None = None  # a caller's stop rule, see train()

    def __init__(self, model, data: TrainData, config: TrainConfig, output_dir: Path, save_best, settings: dict):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, set_seed

        precision = use_precision(config.mixed_precision)
        # a mixture's batch trains one task's head: under data parallelism the others are unused in that step
        handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if data.unused_parameters else []
        self.accelerator = Accelerator(
            gradient_accumulation_steps=config.grad_accum, mixed_precision=precision, kwargs_handlers=handlers
        )
        set_seed(config.seed)
        self.data, self.config, self.output_dir = data, config, output_dir
        self.save_best, self.settings, self.main = save_best, settings, self.accelerator.is_main_process
        self.update = UPDATES[config.optimizer](model, config, len(data))
        self.lr = self.update.lr  # None for forward-only search
        if config.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        self.trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.loop = {"epoch": 0, "batches_done": 0, "step": 0, "best": None, "best_metrics": None, "bad_evals": 0}
        self.loop.update({"best_epoch": None, "history": [], "elapsed_s": 0.0})
        self.saved_step: int | None = None  # the step of the newest checkpoint on disk: what --resume continues
        if config.resume and checkpoint.exists(output_dir):
            self.loop = self.update.resume(output_dir, model)
            self.saved_step = self.loop["step"]
            where = f"epoch {self.loop['epoch']} step {self.loop['step']}"
            self.accelerator.print(f"resumed from {output_dir / checkpoint.CHECKPOINT} at {where}")
        if config.shard_backbone:  # before Accelerate wraps the model for data parallelism
            self.accelerator.print(shard_frozen_backbone(model, self.accelerator))
        self.model = self.update.prepare(self.accelerator, model)
        self.unwrapped = unwrapped = self.accelerator.unwrap_model(self.model)  # the method's training_loss
        self.n_train, self.n_backbone = unwrapped.trainable_parameters(), unwrapped.backbone_parameters()
        share = f"{100 * self.n_train / self.n_backbone:.3f}% of the {self.n_backbone:,}-parameter backbone"
        self.accelerator.print(
            f"method {unwrapped.config.method}: {self.n_train:,} trainable parameters ({share}); "
            + self.update.describe()
        )
        self.data, self.activations, self.cache_line = activations.attach(
            unwrapped, data, config, output_dir, settings, self.accelerator
        )
        self.accelerator.print(self.cache_line)  # whether the frozen layers' output is kept, and why (not)
        self.log = JsonlLog(output_dir, self.main)
        self.metric = data.main_metric
        self.started = time.perf_counter() - self.loop["elapsed_s"]
        self.mark = time.perf_counter()  # the end of the last evaluation: what each row's train_s counts from
        self.steps_this_run = 0
        self.running = [0.0, 0]  # the current epoch's summed loss and batch count (this run's part of it)
        self.consistent = True  # False while a step is half done: no checkpoint may be taken then
        self.failure: str | None = None
        notice = "\nCtrl-C: stopping after this step to save a checkpoint (press it again to stop at once)\n"
        self.guard = InterruptGuard(notice if self.main else None)

    def run(self) -> dict:
        """Epochs until one of the stop rules fires; the summary says which."""
        self.model.train()
        stopped_by = None
        try:
            with self.guard:
                try:
                    pending = self.loop.pop("pending_eval", None)  # Ctrl-C cut this evaluation short last time
                    if pending is not None:
                        stopped_by = self._evaluate_and_keep(pending)
                    while self.loop["epoch"] < self.config.epochs and stopped_by is None:
                        stopped_by = self._epoch()
                    if stopped_by is None and self.config.eval_steps and self._unscored():
                        # the steps after the last --eval-steps boundary count too
                        stopped_by = self._evaluate_and_keep(float(self.loop["epoch"]))
                except KeyboardInterrupt:  # a second Ctrl-C, or one during an evaluation's forward passes
                    stopped_by = "interrupted"
                if stopped_by == "interrupted" and self.consistent:
                    self._checkpoint()  # resumable from exactly this step
        finally:
            self.log.close()
        summary = self._summary(stopped_by or "epochs")
        if stopped_by == "stop_after_steps":
            summary["interrupted"] = True
        return summary

    def _epoch(self) -> str | None:
        """One epoch (or the rest of one, after a resume); a stop reason, or None to go on."""
        config, accelerator, epoch = self.config, self.accelerator, self.loop["epoch"]
        loader = accelerator.prepare_data_loader(
            self.data.loader(config.batch_size, config.seed * 1000 + epoch, config.group_by_length)
        )
        batches = len(loader)  # the whole epoch's, also when its first batches were done before a resume
        if self.loop["batches_done"]:  # resumed mid-epoch
            loader = resumed(accelerator.skip_first_batches(loader, self.loop["batches_done"]))
        self.running = [0.0, 0]
        bar = tqdm(
            loader,
            total=batches,
            initial=self.loop["batches_done"],
            desc=f"epoch {epoch + 1}/{config.epochs}",
            leave=False,
            **({} if self.main else {"disable": True}),
        )
        for batch in bar:
            loss = self._step(batch)
            self.running = [self.running[0] + loss, self.running[1] + 1]
            bar.set_postfix(loss=f"{self.running[0] / self.running[1]:.4f}")
            stopped_by = self._after_batch(loss, batches)
            if stopped_by:
                return stopped_by
        self.loop.update(epoch=epoch + 1, batches_done=0)
        return None if config.eval_steps else self._evaluate_and_keep(float(epoch + 1))

    def _step(self, batch: dict) -> float:
        """One update on one batch (``--optimizer``: a gradient step, or a generation of prompt search)."""
        self.consistent = False
        labels = batch.pop("labels")
        loss_fn = self.data.loss_for(batch, self.unwrapped.head)  # takes out what is not a model input
        return self.update.step(self.accelerator, self.model, self.unwrapped, batch, labels, loss_fn)

    def _after_batch(self, loss: float, batches: int) -> str | None:
        """Advance the counters, then apply the stop rules that are checked after every batch."""
        loop, config = self.loop, self.config
        step_in_progress = loop["step"] + 1
        loop["batches_done"] += 1
        if self.accelerator.sync_gradients:
            loop["step"] += 1
            self.steps_this_run += 1
        self.consistent = True
        nonfinite, interrupted = self._agreed_flags(not math.isfinite(loss), self.guard.requested)
        if nonfinite:
            shown = f"{loss}" if not math.isfinite(loss) else "non-finite"
            self.failure = (
                f"the training loss became {shown} at step {step_in_progress} (epoch {loop['epoch'] + 1}); "
                f"{self.update.remedy()}; {self._what_was_kept()}"
            )
            return "nonfinite_loss"
        if interrupted:
            return "interrupted"
        if self.accelerator.sync_gradients and config.eval_steps and loop["step"] % config.eval_steps == 0:
            stopped_by = self._evaluate_and_keep(loop["epoch"] + loop["batches_done"] / batches)
            if stopped_by:
                return stopped_by
        if config.stop_after_steps and self.steps_this_run >= config.stop_after_steps:
            return "stop_after_steps"
        return None

    def _agreed_flags(self, *flags: bool) -> list[bool]:
        """The flags as every process sees them: one process stopping alone would hang the others."""
        if self.accelerator.num_processes == 1:
            return list(flags)
        local = torch.tensor([float(f) for f in flags], device=self.accelerator.device)
        return (self.accelerator.reduce(local, reduction="sum") > 0).tolist()

    def _evaluate_and_keep(self, epoch_float: float) -> str | None:
        """Evaluate, keep the best artifact, checkpoint; a stop reason (patience, time, non-finite) or None."""
        loop, metric, config = self.loop, self.metric, self.config
        loop["pending_eval"] = epoch_float  # a Ctrl-C in the forward passes leaves it to the resumed run
        evaluating = time.perf_counter()
        with self.guard.immediate():  # stopping at once loses nothing: the last step's state is intact
            scores = self.data.evaluate(self._predict)
        del loop["pending_eval"]
        self.model.train()
        if scores is None:
            self.failure = (
                f"the model's outputs on the evaluation set became NaN or infinite at step {loop['step']}; "
                f"{self.update.remedy()}; {self._what_was_kept()}"
            )
            return "nonfinite_outputs"
        train_loss = self.running[0] / self.running[1] if self.running[1] else None  # None: no batch this run
        row = {"epoch": round(epoch_float, 3), "step": loop["step"], "train_loss": train_loss, **scores}
        row["elapsed_s"] = round(time.perf_counter() - self.started, 2)
        row["train_s"] = round(evaluating - self.mark, 2)  # training since the last evaluation (an epoch's batches)
        row["eval_s"] = round(time.perf_counter() - evaluating, 2)
        loop["history"].append(row)
        score = scores[metric]
        improved = loop["best"] is None or (math.isfinite(score) and score > loop["best"])
        if improved:  # a NaN score (Pearson of constant predictions) is kept only until a real one comes
            best = score if math.isfinite(score) else None
            loop.update(best=best, best_metrics=scores, best_epoch=row["epoch"], bad_evals=0)
            if self.main:
                self.save_best(self.accelerator.unwrap_model(self.model), scores)
        else:
            loop["bad_evals"] += 1
        self.log.write({**row, "best_" + metric: loop["best"]})
        shown = ", ".join(f"{k} {_number(v)}" for k, v in scores.items())
        self.accelerator.print(f"epoch {row['epoch']}: {shown}" + (" (best)" if improved else ""))
        self._checkpoint()
        self.mark = time.perf_counter()
        if self.on_evaluation is not None:
            reason = self.on_evaluation(row)
            if self._agreed_flags(bool(reason))[0]:  # every process stops at the same evaluation
                return reason or "on_evaluation"
        if config.patience is not None and loop["bad_evals"] >= config.patience:
            return "patience"
        if config.max_minutes is not None and _time_is_up(loop["elapsed_s"], config.max_minutes, self.accelerator):
            return "time"
        return None

    def _predict(self, features: list[dict], collate: Callable, task=None):
        """What ``task`` evaluates for ``features``, from the model being trained (gathered over processes): the
        head's logits, or a generation task's decoded texts (``Task.outputs``); logits when no task is named."""
        batch_size, accelerator = self.config.eval_batch_size, self.accelerator
        if task is None:
            return predict_logits(self.model, features, collate, batch_size, accelerator, desc="evaluating")
        return task.outputs(self.model, features, collate, batch_size, accelerator, desc="evaluating")

    def _checkpoint(self) -> None:
        self.loop["elapsed_s"] = time.perf_counter() - self.started
        if self.activations is not None:
            self.activations.persist()  # the units a resumed run may reuse (after re-checking them)
        if self.update.checkpoints:  # forward-only search keeps no resumable state
            self.saved_step = self.loop["step"]
            if self.main:
                self.update.save(self.output_dir, dict(self.trainable), self.loop, self.settings)
        self.accelerator.wait_for_everyone()

    def _unscored(self) -> bool:
        history = self.loop["history"]
        return not history or history[-1]["step"] != self.loop["step"]

    def _what_was_kept(self) -> str:
        if self.loop["best_epoch"] is None:
            return "no evaluation had finished, so no artifact was saved"
        return f"the best artifact so far (epoch {self.loop['best_epoch']}) is kept in {self.output_dir}"

    def _summary(self, stopped_by: str) -> dict:
        loop = self.loop
        summary = {
            "best": loop["best_metrics"],
            "best_epoch": loop["best_epoch"],
            "main_metric": self.metric,
            "trainable_params": self.n_train,
            "backbone_params": self.n_backbone,
            "epochs_run": loop["epoch"],
            "steps": loop["step"],
            "train_time_s": round(time.perf_counter() - self.started, 2),
            "history": loop["history"],
            "stopped_early": stopped_by != "epochs",
            "stopped_by": stopped_by,
            "checkpoint_step": self.saved_step,
            "config": {**asdict(self.config), "lr": self.lr},
            "activation_cache": {"used": False, "log": self.cache_line}
            if self.activations is None
            else self.activations.summary(),
        }
        if self.failure:
            summary["error"] = self.failure
        return summary


def _number(value) -> str:
    """A metric for the console: 4 decimals, ``n/a`` for a missing or non-finite one (never ``nan``)."""
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"{value:.4f}"
    return "n/a"


def _time_is_up(elapsed_s: float, max_minutes: float, accelerator) -> bool:
    """The main process's clock decides, so that every process stops at the same evaluation."""
    from accelerate.utils import broadcast_object_list

    decision = [elapsed_s >= 60 * max_minutes]
    if accelerator.num_processes > 1:
        broadcast_object_list(decision, from_process=0)
    return decision[0]
