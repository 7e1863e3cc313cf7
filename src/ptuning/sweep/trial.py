"""One trial of a sweep: the fixed run with the trial's values, trained by ``pipeline.train``.

The trial reports its dev metric to Optuna after every evaluation (the training loop's
``on_evaluation`` hook) and stops when the pruner gives up on it; what it ends as (complete with its
best dev score, pruned, failed) is told to the study by ``study.py``.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, fields, replace
from pathlib import Path

from .. import checkpoint, pipeline
from ..errors import PTuningError
from ..method import method_class, method_config
from ..pipeline import TrainRequest
from ..stopping import TrainingDiverged
from ..trainconfig import TrainConfig

TRAIN_FIELDS = frozenset(f.name for f in fields(TrainConfig))


def fixed_value(base: TrainRequest, option: str):
    """The value the fixed run has for ``option`` (an unset learning rate: the method's default for it)."""
    if option in base.method.option_names():
        return getattr(base.method, option)
    if option == "lr" and base.train.lr is None:
        return method_class(base.method.method).default_learning_rate(base.method)
    return getattr(base.train, option)


def trial_request(base: TrainRequest, options: dict, output: Path, **train_changes) -> TrainRequest:
    """``base`` with ``options`` (method and training options by name) applied, writing to ``output``.

    Built through :func:`method_config` and :class:`TrainConfig`, so a value either refuses is a one-line
    error naming its flag, exactly as on ``ptuning train``'s command line.
    """
    own = {k: v for k, v in options.items() if k in base.method.option_names()}
    training = {k: v for k, v in options.items() if k not in own}
    unknown = sorted(set(training) - TRAIN_FIELDS)
    if unknown:
        raise PTuningError(f"{unknown[0]} is neither a training option nor one of --method {base.method.method}'s")
    current = {k: v for k, v in base.method.to_dict().items() if k != "method"}
    method = method_config(base.method.method, **{**current, **own})
    train = replace(base.train, **{"resume": False, **training, **train_changes})
    return replace(base, output=Path(output), method=method, train=train, overwrite=True)


@dataclass
class Reporter:
    """The training loop's ``on_evaluation`` hook: report the dev metric, stop when the pruner says so.

    Optuna's step is the epoch when the run evaluates once per epoch, else the optimizer step: both
    survive a resume and compare across trials. The first evaluation of a trial is never pruned (the
    prompt methods often sit at chance for an epoch before they move).
    """

    trial: object
    metric: str
    per_epoch: bool
    reports: int = 0

    def __call__(self, row: dict) -> str | None:
        value = row.get(self.metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        step = int(round(row["epoch"])) if self.per_epoch else int(row["step"])
        self.trial.report(float(value), step)
        self.reports += 1
        return "pruned" if self.reports > 1 and self.trial.should_prune() else None

    def replay(self, intermediate: dict[int, float]) -> None:
        """Report what an interrupted attempt of this trial had reported, before resuming its checkpoint."""
        for step, value in sorted(intermediate.items()):
            self.trial.report(value, step)
            self.reports += 1


@dataclass
class Outcome:
    """How a trial ended: ``state`` complete / pruned / failed, its best dev ``value``, and what to record."""

    state: str
    value: float | None
    attrs: dict


def adopt_checkpoint(directory: Path, previous: Path | None) -> bool:
    """Move an interrupted attempt's directory to this trial's when it holds a checkpoint: resume from it."""
    if previous is None or previous == directory or not checkpoint.exists(previous):
        return False
    shutil.rmtree(directory, ignore_errors=True)
    directory.parent.mkdir(parents=True, exist_ok=True)
    previous.rename(directory)
    return True


def train_trial(request: TrainRequest, reporter: Reporter, metric: str) -> Outcome:
    """Train the trial's run; its outcome. Ctrl-C and usage errors propagate (the caller records them)."""
    try:
        summary = pipeline.train(request, on_evaluation=reporter)
    except PTuningError as exc:
        if not request.train.resume or isinstance(exc, TrainingDiverged):
            if isinstance(exc, TrainingDiverged):
                return _diverged(request.output, metric, str(exc))
            raise
        # the interrupted attempt's checkpoint was refused (made by an older version...): start it afresh
        shutil.rmtree(request.output, ignore_errors=True)
        return train_trial(replace(request, train=replace(request.train, resume=False)), reporter, metric)
    attrs = {"stopped_by": summary["stopped_by"], "epochs_run": summary["epochs_run"]}
    attrs["train_time_s"] = summary["train_time_s"]
    if summary.get("reported"):
        attrs["reported"] = summary["reported"]
    if summary["stopped_by"] == "pruned":
        return Outcome("pruned", None, attrs)
    value = (summary.get("best") or {}).get(metric)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return Outcome("failed", None, {**attrs, "error": f"no finite dev {metric}", "counted": True})
    return Outcome("complete", float(value), attrs)


def _diverged(output: Path, metric: str, message: str) -> Outcome:
    """A diverged run keeps its best artifact so far: that score is the trial's value (none: a counted failure)."""
    attrs = {"stopped_by": "diverged", "error": message}
    try:
        summary = json.loads((Path(output) / "metrics.json").read_text())
    except (OSError, ValueError):
        summary = {}
    value = (summary.get("best") or {}).get(metric)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return Outcome("complete", float(value), attrs)
    return Outcome("failed", None, {**attrs, "counted": True})
