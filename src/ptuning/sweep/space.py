"""The search space of a sweep: the method's default, overridden by ``--space FILE``, minus fixed options.

Every mistake in a space is a one-line :class:`PTuningError` before the study is created: an unknown
parameter or key, an option the method does not take, a NaN or reversed range, a log range through 0,
a fractional bound of a whole-number option, a value the option refuses (each bound and choice is
built into a real run request and checked by the same code ``ptuning train`` uses), two parameters
that set the same option in one trial.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

from ..errors import PTuningError
from ..method import method_class
from ..method.space import Param
from ..trainconfig import TrainConfig

SPEC_KEYS = ("low", "high", "log", "choices", "when", "option")
# TrainConfig fields that say how an invocation runs, not what it learns: never searched.
NOT_SEARCHED = ("resume", "stop_after_steps", "max_minutes", "eval_batch_size", "gradient_checkpointing")


def option_kinds(method: str) -> dict[str, str]:
    """``{option: "int" | "float" | "bool" | "str"}`` of every option a trial may set for ``method``."""
    train = [f for f in fields(TrainConfig) if f.name not in NOT_SEARCHED]
    own = list(fields(method_class(method).config_class))
    return {f.name: _kind(str(f.type)) for f in [*train, *own]}


def _kind(annotation: str) -> str:
    for kind in ("bool", "int", "float", "str"):
        if annotation.startswith(kind):
            return kind
    return "str"


def read_space_file(path: Path) -> dict:
    """The ``--space`` YAML: ``name: {low, high, log, when, option}``, ``name: [choices]`` or ``name: null``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise PTuningError(f"--space {path}: no such file")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise PTuningError(f"--space {path}: not valid YAML{f' (line {mark.line + 1})' if mark else ''}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise PTuningError(f"--space {path}: expected `name: {{low: .., high: ..}}` lines, got {type(values).__name__}")
    return values


def build_space(method: str, prompt_range: tuple[int, int], overrides: dict | None = None, source="--space") -> tuple:
    """The method's default space with ``overrides`` applied (an entry replaces the fields it names of the
    default parameter of that name, or adds a parameter; ``null`` removes one), every parameter checked."""
    space = {p.name: p for p in method_class(method).search_space(prompt_range)}
    kinds = option_kinds(method)
    for name, spec in (overrides or {}).items():
        if spec is None:
            if name not in space:
                raise PTuningError(f"{source}: {name!r} is not in the default space, nothing to remove")
            del space[name]
            continue
        space[name] = _parse(str(name), spec, space.get(name), kinds, method, source)
    params = tuple(space.values())
    _check_conditions(params, kinds, source)
    return params


def _parse(name: str, spec, default: Param | None, kinds: dict, method: str, source: str) -> Param:
    where = f"{source}: {name}"
    if isinstance(spec, list):
        spec = {"choices": spec}
    if not isinstance(spec, dict):
        raise PTuningError(f"{where}: give {{low: .., high: ..}} (log: true), a list of choices, or null to drop it")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise PTuningError(f"{where}: unknown key {unknown[0]!r}; keys are {', '.join(SPEC_KEYS)}")
    option = str(spec.get("option", default.option if default else "") or "")
    target = option or name
    if target not in kinds:
        close = difflib.get_close_matches(target, list(kinds), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise PTuningError(
            f"{where}: unknown parameter {target!r} for --method {method}; {hint}searchable: {', '.join(kinds)}"
        )
    when = _when(spec["when"], where) if "when" in spec else (default.when if default else None)
    if "choices" in spec:
        return Param(name, choices=_choices(spec["choices"], where), when=when, option=option)
    base = default if default is not None and default.choices is None else None
    low, high = spec.get("low", base.low if base else None), spec.get("high", base.high if base else None)
    log = spec.get("log", base.log if base else False)
    if not isinstance(log, bool):
        raise PTuningError(f"{where}: log must be true or false, got {log!r}")
    integer = kinds[target] == "int"
    if kinds[target] not in ("int", "float"):
        raise PTuningError(f"{where}: {target} is not a number; give a list of choices")
    low, high = _bound(low, "low", where, integer), _bound(high, "high", where, integer)
    if not low < high:
        raise PTuningError(f"{where}: low {low:g} must be below high {high:g}")
    if log and low <= 0:
        raise PTuningError(f"{where}: a log range needs low > 0, got {low:g}")
    return Param(name, low=low, high=high, log=log, integer=integer, when=when, option=option)


def _bound(value, which: str, where: str, integer: bool) -> float:
    if value is None:
        raise PTuningError(f"{where}: {which} is missing")
    if isinstance(value, str):  # YAML reads 1e-3 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            raise PTuningError(f"{where}: {which} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PTuningError(f"{where}: {which} must be a finite number, got {value!r}")
    if integer:
        if value != int(value):
            raise PTuningError(f"{where}: {which} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


def _choices(values, where: str) -> tuple:
    if not isinstance(values, list) or not values:
        raise PTuningError(f"{where}: choices must be a non-empty list")
    for value in values:
        if not (value is None or isinstance(value, (bool, int, float, str))):
            raise PTuningError(f"{where}: choice {value!r} is not a number, a word, true/false or null")
        if isinstance(value, float) and not math.isfinite(value):
            raise PTuningError(f"{where}: choice {value!r} is not a finite number")
    if len({repr(v) for v in values}) != len(values):
        raise PTuningError(f"{where}: choices repeat a value")
    return tuple(values)


def _when(value, where: str) -> tuple[str, object]:
    if not isinstance(value, dict) or len(value) != 1:
        raise PTuningError(f"{where}: when must be one `name: value` pair, e.g. {{reparam: true}}")
    ((name, wanted),) = value.items()
    return str(name), wanted


def _check_conditions(space: tuple[Param, ...], kinds: dict, source: str) -> None:
    """A condition names an unconditional parameter or an option; an option is set by one parameter per trial."""
    names = {p.name: p for p in space}
    for p in space:
        if p.when is None:
            continue
        other = names.get(p.when[0])
        if other is not None and other.when is not None:
            raise PTuningError(f"{source}: {p.name}'s condition names {other.name}, itself conditional; nest one level")
        if other is None and p.when[0] not in kinds:
            raise PTuningError(f"{source}: {p.name}'s condition names {p.when[0]!r}, neither a parameter nor an option")
    by_target: dict[str, list[Param]] = {}
    for p in space:
        by_target.setdefault(p.target, []).append(p)
    for target, params in by_target.items():
        conditions = [p.when for p in params]
        exclusive = all(c is not None for c in conditions) and len({c[0] for c in conditions}) == 1
        if len(params) > 1 and not (exclusive and len({repr(c[1]) for c in conditions}) == len(conditions)):
            shown = " and ".join(p.name for p in params)
            raise PTuningError(
                f"{source}: {shown} both set {target}; give each `when` on one parameter with different values"
            )


def without_fixed(space: tuple[Param, ...], fixed: set[str]) -> tuple[tuple[Param, ...], list[str]]:
    """The space minus parameters whose option a flag fixes; and those names (said once on the console)."""
    kept = tuple(p for p in space if p.target not in fixed)
    return kept, [p.name for p in space if p.target in fixed]


def check_values(space: tuple[Param, ...], build: Callable[[dict], object], source: str = "--space") -> None:
    """Each bound and choice, set alone on the fixed run, must make a valid run (``build`` raises otherwise)."""
    for p in space:
        values = p.choices if p.choices is not None else (p.low, p.high)
        for value in values:
            try:
                build({p.target: value})
            except PTuningError as exc:
                raise PTuningError(f"{source}: {p.name} {_shown(value)}: {exc}") from None


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else repr(value)


def active(space: tuple[Param, ...], values: dict, fixed: Callable[[str], object]):
    """The parameters a trial samples, in an order where each condition is decided before it is read."""
    for p in sorted(space, key=lambda p: p.when is not None):
        if p.when is not None:
            name, wanted = p.when
            current = values[name] if name in values else fixed(name)
            if current != wanted or type(current) is not type(wanted):
                continue
        yield p


def suggest(trial, space: tuple[Param, ...], fixed: Callable[[str], object]) -> dict:
    """Sample one trial's values (``{name: value}``) with Optuna's ``trial.suggest_*``."""
    values: dict = {}
    for p in active(space, values, fixed):
        if p.choices is not None:
            values[p.name] = trial.suggest_categorical(p.name, p.choices)
        elif p.integer:
            values[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
        else:
            values[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
    return values


def as_options(space: tuple[Param, ...], values: dict) -> dict:
    """``{option: value}`` of sampled ``{name: value}`` (``lr_reparam`` sets ``lr``)."""
    targets = {p.name: p.target for p in space}
    return {targets.get(name, name): value for name, value in values.items()}


def defaults_inside(space: tuple[Param, ...], fixed: Callable[[str], object]) -> dict:
    """The fixed run's own values of the parameters, where the space contains them: the first trial.

    The sweep starts from the defaults, so its best is never worse on dev than the run without a sweep.
    """
    values: dict = {}
    for p in active(space, values, fixed):
        value = fixed(p.target)
        if p.contains(value):
            values[p.name] = int(value) if p.integer else value
    return values
