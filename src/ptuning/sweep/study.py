"""The study: Optuna's TPE sampler and a pruner over resumable, shareable ``ptuning train`` trials.

The study lives in a database (``OUT/study.db``, SQLite, unless ``--storage URL``), so a sweep is
resumable and shareable:

* ``--trials N`` is the study's total. A trial counts once it is complete, pruned, running, queued, or
  failed for its settings (a diverged loss); trials that failed otherwise, or were interrupted, do not.
  A process stops asking when the study holds N such trials; a fresh trial that finds N below its own
  number (two processes asked at once) is dropped at once, so the total is never overshot.
* An interrupted trial (Ctrl-C, SIGTERM) is queued again with the same parameters before it is marked
  failed; a trial whose process died (kill -9, a crash) is found at the next start on that host by its
  process id, marked failed and queued again. The retry resumes the interrupted attempt's checkpoint.
* Asking, telling and recovering hold a lock file beside a SQLite database: SQLite has no row locks, and
  two processes must never take the same queued trial. Server databases lock rows themselves.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from .. import checkpoint, pipeline, runfile
from ..errors import PTuningError
from ..finite import json_safe
from ..pipeline import TrainRequest
from ..stopping import Interrupted
from ..tasks import get_task
from ..trainconfig import check_count
from . import results, storage
from .space import as_options, build_space, check_values, defaults_inside, suggest, without_fixed
from .trial import Reporter, adopt_checkpoint, fixed_value, train_trial, trial_request

# Settings a re-run may change without starting another study (how long it runs, how it evaluates).
# Paths are compared by the data they name, not where it lies: machines sharing a study keep it in other places.
MAY_DIFFER = (
    "output",
    "max_minutes",
    "eval_batch_size",
    "gradient_checkpointing",
    "data",
    "model",
    "init_from",
    "teacher",
)
# What a stored prompt (--init-from) fixes: a trial cannot change its shape or its training form.
PROMPT_SHAPE = ("prompt_length", "reparam")


@dataclass
class SweepRequest:
    """A sweep: ``base`` is the fixed run (every option not searched), ``fixed`` the options never searched."""

    base: TrainRequest
    output: Path
    trials: int
    space: dict | None = None  # --space overrides, {name: spec}; None: the method's default space
    space_source: str = "--space"
    fixed: frozenset = frozenset()
    max_minutes: float | None = None  # this invocation's budget: no trial starts after it, the running one stops
    storage: str | None = None
    study_name: str | None = None
    seeds: tuple[int, ...] = ()
    sampler_seed: int | None = None
    pruner: object | None = None  # an Optuna pruner; None: the median rule (see Sweep.pruner)
    progress: bool = True

    def __post_init__(self) -> None:
        check_count("--trials", self.trials)
        check_count("--sampler-seed", self.sampler_seed, minimum=0)
        for seed in self.seeds:
            check_count("--seeds", seed, minimum=0)
        if len(set(self.seeds)) != len(self.seeds):
            raise PTuningError(f"--seeds repeats a seed: {','.join(map(str, self.seeds))}")
        minutes = self.max_minutes
        if minutes is not None and (isinstance(minutes, bool) or not math.isfinite(minutes) or minutes <= 0):
            raise PTuningError(f"--max-minutes must be a finite number > 0, got {minutes!r}")


def run_sweep(request: SweepRequest) -> dict:
    """Run (or continue) the sweep; ``OUT/summary.json``'s content."""
    return Sweep(request).run()


class Sweep:
    """One invocation of a sweep: the resolved space, the study, the best artifact, the summary."""

    def __init__(self, request: SweepRequest) -> None:
        self.request, base = request, request.base
        if base.tasks_file is not None or "," in (base.task or ""):
            raise PTuningError("ptuning sweep searches one task: give --task and --data (not a multi-task mixture)")
        task = get_task(base.task, **base.task_options)
        self.task, self.method, self.metric = task, base.method.method, task.main_metric
        full = build_space(self.method, task.sweep_prompt_lengths, request.space, request.space_source)
        self.space, self.fixed_names = without_fixed(full, set(request.fixed))
        shaped = [p.name for p in self.space if p.target in PROMPT_SHAPE]
        if base.init_from is not None and shaped:
            raise PTuningError(
                f"--init-from: the stored prompt fixes {', '.join(shaped)}; give them as flags (its --prompt-length, "
                "--no-reparam) or drop them from the space with --space"
            )
        if not self.space:
            raise PTuningError(
                "nothing left to search: flags fix every parameter of the space; drop one or use --space"
            )
        self.out = Path(request.output)
        if self.out.exists() and not self.out.is_dir():
            raise PTuningError(f"--output {self.out} is a file; give a directory")
        check_values(self.space, lambda options: trial_request(base, options, self.out), request.space_source)
        self.url = request.storage or f"sqlite:///{(self.out / 'study.db').resolve()}"
        self.name = request.study_name or f"ptuning-{task.name}-{self.method}"
        self.trials_dir = self.out / "trials"
        self.keeper = results.BestKeeper(self.out, self.name)
        self.deadline = None if request.max_minutes is None else time.monotonic() + 60 * request.max_minutes
        self._lock_path = storage.sqlite_lock(self.url)

    def fixed(self, option: str):
        return fixed_value(self.request.base, option)

    # -- the study -------------------------------------------------------------------------------
    def run(self) -> dict:
        pipeline.training_examples(self.task, self.request.base)  # a data error is said before OUT is touched
        self.out.mkdir(parents=True, exist_ok=True)
        study = self.open()
        if self.fixed_names:
            print(f"fixed by flags, not searched: {', '.join(self.fixed_names)}", flush=True)
        print("searching: " + "; ".join(p.describe() for p in self.space), flush=True)
        with storage.terminate_as_interrupt(), results.ProgressBar(self, study) as bar:
            try:
                self.recover(study)
                while self.step(study):
                    bar.update(study)
            except KeyboardInterrupt as exc:  # Ctrl-C between trials: nothing to retry but the trial just asked for
                if isinstance(exc, Interrupted):
                    raise
                raise Interrupted("between two trials of the sweep; the same command continues the study") from None
            finally:  # also when stopped: what has run so far is summarised and drawn
                summary = results.write_summary(self, study, plots=True)
                storage.remove_if_empty(self.trials_dir)
        if self.request.seeds:
            summary = results.write_summary(self, study, seeds=results.run_seeds(self, study), plots=True)
        return summary

    def open(self):
        """Create the study (and queue the fixed run's own values as its first trial), or load it."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with self.db_lock():
            database = storage.open_storage(self.url, self.request.storage)
            try:
                study = optuna.create_study(
                    storage=database,
                    study_name=self.name,
                    direction="maximize",
                    sampler=self.sampler(),
                    pruner=self.pruner(),
                )
            except optuna.exceptions.DuplicatedStudyError:
                study = optuna.load_study(
                    storage=database, study_name=self.name, sampler=self.sampler(), pruner=self.pruner()
                )
                self._check_same(study)
                return study
            study.set_user_attr("sweep", self.fingerprint())
            study.enqueue_trial(defaults_inside(self.space, self.fixed), user_attrs={"enqueued": "defaults"})
        return study

    def sampler(self):
        """TPE over the joint space (``group``: conditional parameters); a few random trials first."""
        import optuna

        startup = min(10, max(2, self.request.trials // 3))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # multivariate and group are flagged experimental
            return optuna.samplers.TPESampler(
                n_startup_trials=startup,
                seed=self.request.sampler_seed,
                multivariate=True,
                group=True,
                constant_liar=True,  # parallel workers: running trials count as bad, so workers spread out
            )

    def pruner(self):
        """Median stopping: a trial whose dev metric falls below the median of earlier trials' at the same
        epoch stops (never at its first evaluation, and not before a few trials have finished)."""
        import optuna

        if self.request.pruner is not None:
            return self.request.pruner
        return optuna.pruners.MedianPruner(n_startup_trials=min(5, max(2, self.request.trials // 5)))

    def fingerprint(self) -> dict:
        """What makes two invocations the same sweep: the fixed run's settings and the space."""
        base = self.request.base
        options = runfile.options_of(
            base, lr=base.train.lr, max_length=base.max_length, pooling=base.pooling, backbone=base.model or "bundled"
        )
        kept = {k: v for k, v in options.items() if k not in MAY_DIFFER}
        return json_safe({"settings": kept, "space": {p.name: p.to_dict() for p in self.space}})

    def _check_same(self, study) -> None:
        recorded = study.user_attrs.get("sweep")
        mine = json.loads(json.dumps(self.fingerprint()))
        if recorded is None or recorded == mine:
            return
        changed = [k for k in mine["settings"] if recorded["settings"].get(k) != mine["settings"][k]]
        shown = ", ".join(f"{k}: {recorded['settings'].get(k)!r} there, {mine['settings'][k]!r} here" for k in changed)
        if recorded["space"] != mine["space"]:
            shown = ", ".join(filter(None, [shown, "the search space"]))
        raise PTuningError(
            f"study {self.name!r} in {self.url_shown()} was made by another sweep ({shown}); "
            "give another --output or --study-name"
        )

    def url_shown(self) -> str:
        return storage.hide_password(self.url)

    @contextmanager
    def db_lock(self) -> Iterator[None]:
        with storage.file_lock(self._lock_path) if self._lock_path else nullcontext():
            yield

    # -- trials ----------------------------------------------------------------------------------
    def recover(self, study) -> None:
        """Queue again the trials this host was running when its process died (they stay RUNNING)."""
        from optuna.trial import TrialState

        with self.db_lock():
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if trial.user_attrs.get("host") != storage.HOST or storage.alive(trial.user_attrs.get("pid")):
                    continue
                try:
                    study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                except Exception:  # another process recovered it first (UpdateFinishedTrialError)
                    continue
                study.enqueue_trial(trial.params, user_attrs={"enqueued": "retry", "retry_of": trial.number})
                print(f"trial {trial.number}'s process is gone: it will be retried", flush=True)

    def step(self, study) -> bool:
        """Ask for one trial and run it; False when the study holds its trials or the budget is spent."""
        from optuna.trial import TrialState

        with self.db_lock():
            trials = study.get_trials(deepcopy=False)
            waiting = any(t.state == TrialState.WAITING for t in trials)
            if (not waiting and results.counted(trials) >= self.request.trials) or self.minutes_left() == 0:
                return False
            trial = study.ask()
            trial.set_user_attr("host", storage.HOST)
            trial.set_user_attr("pid", os.getpid())
            if "enqueued" not in trial.user_attrs:
                lower = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number]
                if results.counted(lower) >= self.request.trials:  # another process took the last place
                    trial.set_user_attr("surplus", True)
                    study.tell(trial, state=TrialState.FAIL)
                    return False
        self.run_trial(study, trial)
        return True

    def run_trial(self, study, trial) -> None:
        from optuna.trial import TrialState

        directory = self.trials_dir / f"trial-{trial.number}"
        try:
            values = suggest(trial, self.space, self.fixed)
            options = as_options(self.space, values)
            trial.set_user_attr("options", json_safe(options))
            reporter = Reporter(trial, self.metric, per_epoch=self.request.base.train.eval_steps is None)
            retry_of = trial.user_attrs.get("retry_of")
            previous = None if retry_of is None else self.trials_dir / f"trial-{retry_of}"
            resume = adopt_checkpoint(directory, previous)
            if resume:
                reporter.replay(study.trials[retry_of].intermediate_values)
            elif previous is not None:  # stopped before its first checkpoint: nothing to resume
                results.remove(previous)
            minutes = self.trial_minutes()
            request = trial_request(self.request.base, options, directory, resume=resume, max_minutes=minutes)
            outcome = train_trial(request, reporter, self.metric)
        except KeyboardInterrupt:
            with self.db_lock():
                study.enqueue_trial(trial.params, user_attrs={"enqueued": "retry", "retry_of": trial.number})
                trial.set_user_attr("interrupted", True)
                study.tell(trial, state=TrialState.FAIL)
            how = "from its checkpoint" if checkpoint.exists(directory) else "from the start"
            raise Interrupted(
                f"during trial {trial.number} of the sweep; the same command continues the study "
                f"(trial {trial.number} is retried {how})"
            ) from None
        except BaseException as exc:
            with self.db_lock():
                trial.set_user_attr("error", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                study.tell(trial, state=TrialState.FAIL)
            results.remove(directory)
            raise
        self.finish(study, trial, outcome, directory, options)

    def finish(self, study, trial, outcome, directory: Path, options: dict) -> None:
        from optuna.trial import TrialState

        with self.db_lock():
            for key, value in outcome.attrs.items():
                trial.set_user_attr(key, json_safe(value))
            if outcome.state == "complete":
                study.tell(trial, outcome.value)
            else:
                study.tell(trial, state=TrialState.PRUNED if outcome.state == "pruned" else TrialState.FAIL)
        kept = outcome.state == "complete" and self.keeper.offer(trial.number, outcome.value, directory)
        if not kept:
            results.remove(directory)
        results.print_trial(self, trial.number, options, outcome, kept)
        results.write_summary(self, study)

    def minutes_left(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, (self.deadline - time.monotonic()) / 60)

    def trial_minutes(self) -> float | None:
        """A trial's own cap (``--trial-max-minutes``), shortened to what is left of ``--max-minutes``."""
        caps = [m for m in (self.request.base.train.max_minutes, self.minutes_left()) if m is not None]
        return max(min(caps), 1e-3) if caps else None
