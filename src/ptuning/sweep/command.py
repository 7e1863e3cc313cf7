"""``ptuning sweep``'s command line: every ``ptuning train`` option, plus the sweep's own.

The command is built from ``train``'s own signature (the option definitions in ``cli_options.py``, the
``--config`` file and the one-line checks are shared, not copied), so a new ``train`` option is a sweep
option too. Options given on the command line or in ``--config`` are fixed for every trial, searched or
not; the others keep ``train``'s defaults unless the search space sets them. Two of ``train``'s options
change: ``--max-minutes`` is the whole sweep's budget (each trial's cap is ``--trial-max-minutes``), and
``--resume`` / ``--overwrite`` are gone (a sweep always continues its study).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..cli_common import quiet_weight_loading
from ..errors import PTuningError

Trials = Annotated[int, typer.Option(help="The study's total number of trials; a re-run runs only what is missing.")]
SweepMinutes = Annotated[
    Optional[float],
    typer.Option(
        "--max-minutes",
        help="This invocation's budget: no trial starts after it; the running trial stops at its next evaluation.",
    ),
]
TrialMinutes = Annotated[
    Optional[float],
    typer.Option(help="Each trial stops at its first evaluation after this many minutes (train's --max-minutes)."),
]
Space = Annotated[
    Optional[Path],
    typer.Option(
        help="YAML overriding the default search space: `name: {low: A, high: B, log: true}`, "
        "`name: <a list of choices>`, `name: null` (not searched). See README, 'Search hyper-parameters'."
    ),
]
Storage = Annotated[
    Optional[str],
    typer.Option(
        help="SQLAlchemy URL of the study (default sqlite:///OUTPUT/study.db); processes and machines that "
        "share it share the study."
    ),
]
StudyName = Annotated[
    Optional[str], typer.Option(help="The study's name in the storage (default ptuning-TASK-METHOD).")
]
Seeds = Annotated[
    Optional[str],
    typer.Option(help="Re-train the best configuration with each seed (e.g. 1,2,3) and report mean ± std."),
]
SamplerSeed = Annotated[Optional[int], typer.Option(help="Seed of the TPE sampler (reproducible one-process sweeps).")]
Output = Annotated[
    Path, typer.Option(help="Output directory: study.db, best/ (the best artifact), summary.json, plots, seeds/.")
]

SWEEP_OPTIONS = {
    "trials": (Trials, inspect.Parameter.empty),
    "max_minutes": (SweepMinutes, None),
    "space": (Space, None),
    "storage": (Storage, None),
    "study_name": (StudyName, None),
    "seeds": (Seeds, None),
    "sampler_seed": (SamplerSeed, None),
}
NOT_TAKEN = ("resume", "overwrite")
RENAMED = {"max_minutes": "trial_max_minutes"}  # train's name -> the sweep's
GIVEN = ("COMMANDLINE", "ENVIRONMENT", "DEFAULT_MAP", "PROMPT")  # click's parameter sources a user set


def sweep_command(train: Callable) -> Callable:
    """The ``sweep`` command function, with ``train``'s parameters (resolved annotations) and the sweep's."""
    hints = typing.get_type_hints(train, include_extras=True)
    keyword = inspect.Parameter.KEYWORD_ONLY
    params = []
    for param in inspect.signature(train).parameters.values():
        if param.name in NOT_TAKEN:
            continue
        name = RENAMED.get(param.name, param.name)
        annotation = {"trial_max_minutes": TrialMinutes, "output": Output}.get(name, hints.get(param.name))
        params.append(inspect.Parameter(name, keyword, default=param.default, annotation=annotation))
        if name == "output":  # the sweep's own options next to the required ones in --help
            params += [inspect.Parameter(n, keyword, default=d, annotation=a) for n, (a, d) in SWEEP_OPTIONS.items()]

    def sweep(**values) -> None:
        _run(values)

    sweep.__signature__ = inspect.Signature(params)
    sweep.__doc__ = (
        "Search hyper-parameters with Optuna (TPE, median pruning); keep the best artifact in OUTPUT/best.\n\n"
        "Takes every `ptuning train` option: those given are fixed for all trials; the default space (per method "
        "and task family) searches the rest. Killed and run again, the same command continues the study."
    )
    return sweep


def _run(values: dict) -> None:
    from ..runfile import request_from_options
    from .space import read_space_file
    from .study import SweepRequest, run_sweep

    ctx = values.pop("ctx")
    train_names = {sweep_name: name for name, sweep_name in RENAMED.items()}
    given = {train_names.get(n, n) for n in values if n not in SWEEP_OPTIONS and _given(ctx, n)}
    own = {name: values.pop(name) for name in SWEEP_OPTIONS}
    trial_minutes = values.pop("trial_max_minutes")
    options = {**values, "max_minutes": trial_minutes, "resume": False, "overwrite": False}
    output = Path(options["output"])
    base = request_from_options({**options, "output": output / "trials"})
    space = own["space"]
    overrides = read_space_file(space) if space is not None else None
    request = SweepRequest(
        base=base,
        output=output,
        trials=own["trials"],
        space=overrides,
        space_source=f"--space {space}",
        fixed=frozenset(given),
        max_minutes=own["max_minutes"],
        storage=own["storage"],
        study_name=own["study_name"],
        seeds=parse_seeds(own["seeds"]),
        sampler_seed=own["sampler_seed"],
    )
    quiet_weight_loading()
    summary = run_sweep(request)
    typer.echo(describe(summary, output))


def _given(ctx, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in GIVEN


def parse_seeds(text: str | None) -> tuple[int, ...]:
    if text is None:
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise PTuningError(f"--seeds takes comma-separated whole numbers such as 1,2,3; got {text!r}") from None


def describe(summary: dict, output: Path) -> str:
    """The closing line: the best trial, its settings, where its artifact and the summary are."""
    best, metric = summary.get("best"), summary["metric"]
    done = f"{summary['trials_finished']} of {summary['trials_requested']} trials"
    if best is None:
        return f"no trial completed ({done}); see {output / 'summary.json'}"
    from .results import short

    settings = ", ".join(f"{k} {short(v)}" for k, v in (best.get("options") or {}).items())
    where = f"artifact in {best['artifact']}" if best.get("artifact") else "artifact on the machine that ran it"
    shown = f"best dev {metric} {best['value']:.4f} in trial {best['trial']} ({done}; {settings})"
    return f"{shown}; {where}; summary and plots in {output}"
