"""What a sweep leaves behind: ``OUT/best/``, ``OUT/summary.json``, the seeds' re-runs, the console lines.

Only the best trial's directory is kept (moved to ``OUT/best/``, without its checkpoint); a trial that is
pruned, fails, or ends below the best is deleted as soon as it ends, and the previous best as soon as it
is beaten. Several processes may share one ``OUT``: the swap holds a lock file.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from .. import checkpoint
from ..finite import json_safe
from ..io import atomic_write_json
from . import storage
from .space import as_options
from .trial import train_trial, trial_request

if TYPE_CHECKING:
    from .study import Sweep

BEST = "best"
BEST_RECORD = "sweep_trial.json"  # inside OUT/best: which trial it is, and its value
COUNTED = ("COMPLETE", "PRUNED", "RUNNING", "WAITING")


def counted(trials) -> int:
    """Trials that take one of ``--trials N``'s places (interrupted, errored and dropped ones do not)."""
    return sum(1 for t in trials if t.state.name in COUNTED or (t.state.name == "FAIL" and t.user_attrs.get("counted")))


def finished(trials) -> int:
    return sum(1 for t in trials if t.state.name in ("COMPLETE", "PRUNED") or t.user_attrs.get("counted"))


def remove(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def _read(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


class BestKeeper:
    """``OUT/best/``: the best trial this output directory has seen, swapped in under a lock."""

    def __init__(self, out: Path, study_name: str) -> None:
        self.out, self.study_name = Path(out), study_name
        self.best = self.out / BEST

    def current(self) -> dict | None:
        record = _read(self.best / BEST_RECORD)
        return record if record.get("study") == self.study_name else None

    def offer(self, number: int, value: float, directory: Path) -> bool:
        """Keep ``directory`` as ``OUT/best`` when ``value`` beats the kept one; False when it does not."""
        with storage.file_lock(self.out / ".best.lock"):
            current = self.current()
            if current is not None and not value > current["value"]:
                return False
            remove(directory / checkpoint.CHECKPOINT)  # the artifact is what is kept, not the optimizer state
            atomic_write_json(directory / BEST_RECORD, {"trial": number, "value": value, "study": self.study_name})
            old = self.out / f".best-replaced-{os.getpid()}"
            if self.best.exists():
                self.best.rename(old)
            directory.rename(self.best)
            remove(old)
            return True


def trial_row(trial) -> dict:
    attrs = trial.user_attrs
    row = {"number": trial.number, "state": trial.state.name.lower(), "value": trial.value, "params": trial.params}
    row["options"] = attrs.get("options")
    row["intermediate"] = {str(step): value for step, value in sorted(trial.intermediate_values.items())}
    row["duration_s"] = round(trial.duration.total_seconds(), 1) if trial.duration else None
    for key in ("stopped_by", "epochs_run", "retry_of", "interrupted", "error", "reported", "enqueued"):
        if key in attrs:
            row[key] = attrs[key]
    return row


def write_summary(sweep: Sweep, study, seeds: dict | None = None, plots: bool = False) -> dict:
    """``OUT/summary.json`` (atomically): the best trial, every trial's value and state, the seeds' mean ± std."""
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    summary = {
        "task": sweep.task.name,
        "method": sweep.method,
        "metric": sweep.metric,
        "direction": "maximize",
        "study": {"name": sweep.name, "storage": sweep.url_shown()},
        "trials_requested": sweep.request.trials,
        "trials_finished": finished(trials),
        "states": {
            s: sum(t.state.name.lower() == s for t in trials) for s in ("complete", "pruned", "fail", "running")
        },
        "space": {p.name: p.to_dict() for p in sweep.space},
        "fixed_by_flags": sweep.fixed_names,
        "best": _best(sweep, study),
        "trials": [trial_row(t) for t in trials],
    }
    best = summary["best"]
    summary["seeds"] = seeds if seeds is not None else (seed_summary(sweep, best["trial"]) if best else None)
    if plots:
        from .plots import write_plots

        summary["plots"] = write_plots(summary, sweep.out)
    summary = json_safe(summary)
    atomic_write_json(sweep.out / "summary.json", summary)
    return summary


def _best(sweep: Sweep, study) -> dict | None:
    try:
        trial = study.best_trial
    except ValueError:  # no trial completed yet
        return None
    kept = sweep.keeper.current()
    here = kept is not None and kept["trial"] == trial.number
    return {
        "trial": trial.number,
        "value": trial.value,
        "params": trial.params,
        "options": trial.user_attrs.get("options"),
        "artifact": str(sweep.keeper.best) if here else None,  # None: another machine ran it
    }


def print_trial(sweep: Sweep, number: int, options: dict, outcome, kept: bool) -> None:
    """One line per trial: its settings and how it ended (printed above the progress bar)."""
    from tqdm.auto import tqdm

    settings = ", ".join(f"{k} {short(v)}" for k, v in options.items())
    if outcome.state == "complete":
        shown = f"{sweep.metric} {outcome.value:.4f}" + (
            f", the best so far: kept in {sweep.keeper.best}" if kept else ""
        )
    elif outcome.state == "pruned":
        shown = f"pruned after {outcome.attrs.get('epochs_run')} epoch(s)"
    else:
        shown = f"failed: {outcome.attrs.get('error', 'no score')}"
    tqdm.write(f"trial {number} ({settings}): {shown}")


def short(value) -> str:
    """A setting for the console: ``0.0042``, ``true``, ``default`` (None: the checkpoint's or method's own)."""
    if isinstance(value, bool) or value is None:
        return "default" if value is None else str(value).lower()
    return f"{value:.3g}" if isinstance(value, float) else str(value)


class ProgressBar:
    """A bar over the study's trials with the best value so far (the trainer's epoch bars run below it)."""

    def __init__(self, sweep: Sweep, study) -> None:
        self.sweep, self.study, self.bar = sweep, study, None

    def __enter__(self) -> ProgressBar:
        from tqdm.auto import tqdm

        quiet = {} if self.sweep.request.progress else {"disable": True}  # else TQDM_DISABLE may turn it off
        self.bar = tqdm(total=self.sweep.request.trials, desc=f"sweep {self.sweep.task.name}", unit="trial", **quiet)
        self.update(self.study)
        return self

    def update(self, study) -> None:
        trials = study.get_trials(deepcopy=False)
        self.bar.n = min(finished(trials), self.bar.total)
        best = _best(self.sweep, study)
        if best is not None:
            self.bar.set_postfix_str(
                f"best {self.sweep.metric} {best['value']:.4f} (trial {best['trial']})", refresh=False
            )
        self.bar.refresh()

    def __exit__(self, *exc_info) -> None:
        self.bar.close()


# -- seeds -------------------------------------------------------------------------------------------
def run_seeds(sweep: Sweep, study) -> dict | None:
    """Re-train the best configuration with each of ``--seeds`` (``OUT/seeds/seed-S/``); their mean ± std.

    A seed already trained for the same best trial is not trained again; an interrupted one resumes
    from its checkpoint. Nothing runs while other processes still run trials (the best may change).
    """
    trials = study.get_trials(deepcopy=False)
    if any(t.state.name in ("RUNNING", "WAITING") for t in trials):
        print("--seeds: trials are still running elsewhere; run the same command again once they end", flush=True)
        return None
    best = _best(sweep, study)
    if best is None:
        print("--seeds: no trial completed, there is no best configuration to re-train", flush=True)
        return None
    options = as_options(sweep.space, best["params"])
    with storage.file_lock(sweep.out / ".seeds.lock"):
        for seed in sweep.request.seeds:
            _train_seed(sweep, best, options, seed)
    summary = seed_summary(sweep, best["trial"])
    if summary is not None:
        print(describe_seeds(sweep.metric, summary), flush=True)
    return summary


def _train_seed(sweep: Sweep, best: dict, options: dict, seed: int) -> None:
    directory = sweep.out / "seeds" / f"seed-{seed}"
    record = directory.with_suffix(".json")
    plan = json_safe({"trial": best["trial"], "params": best["params"], "seed": seed})
    done = _read(record)
    if done.get("plan") == plan and "value" in done:
        return
    resume = done.get("plan") == plan and checkpoint.exists(directory)
    atomic_write_json(record, {"plan": plan})
    print(f"re-training the best configuration (trial {best['trial']}) with seed {seed}", flush=True)
    request = trial_request(sweep.request.base, {**options, "seed": seed}, directory, resume=resume)
    outcome = train_trial(request, None, sweep.metric)
    remove(directory / checkpoint.CHECKPOINT)
    reported = (outcome.attrs.get("reported") or {}).get(sweep.metric)
    atomic_write_json(record, {"plan": plan, "value": outcome.value, "reported": reported, "state": outcome.state})


def seed_summary(sweep: Sweep, trial: int) -> dict | None:
    """Mean ± std (sample std) of the seeds' re-runs of trial ``trial``, from ``OUT/seeds/seed-S.json``."""
    rows = [_read(p) for p in (sweep.out / "seeds").glob("seed-*.json")]
    rows = sorted((r for r in rows if r.get("plan", {}).get("trial") == trial and "value" in r), key=_seed)
    if not rows:
        return None
    summary = {"trial": trial, "seeds": [_seed(r) for r in rows], **_stats([r["value"] for r in rows])}
    reported = [r.get("reported") for r in rows]
    if any(v is not None for v in reported):
        summary["reported"] = _stats(reported)
    return summary


def _seed(row: dict) -> int:
    return row["plan"]["seed"]


def _stats(values: list) -> dict:
    scores = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    mean = statistics.fmean(scores) if scores else None
    std = statistics.stdev(scores) if len(scores) > 1 else (0.0 if scores else None)
    return {"values": values, "mean": mean, "std": std}


def describe_seeds(metric: str, seeds: dict) -> str:
    shown = ",".join(map(str, seeds["seeds"]))
    line = f"best configuration (trial {seeds['trial']}) over seeds {shown}: dev {metric} {_pm(seeds)}"
    if seeds.get("reported"):
        line += f"; reported split {_pm(seeds['reported'])}"
    return line


def _pm(stats: dict) -> str:
    if stats["mean"] is None:
        return "n/a"
    return f"{stats['mean']:.4f} ± {stats['std']:.4f}"
