"""How a method declares its hyper-parameter search space (``ptuning sweep``): :class:`Param`.

A space is a tuple of :class:`Param`. Each names the option it sets (a ``ptuning train`` option:
a :class:`~ptuning.trainconfig.TrainConfig` field or a field of the method's config) and either a
range or a list of choices. The method declares its default space next to itself
(:meth:`Method.search_space <ptuning.method.base.Method.search_space>`); ``sweep/space.py`` validates
user overrides and samples it with Optuna. Nothing here imports Optuna.
"""

from __future__ import annotations

from dataclasses import dataclass

# Warmup and backbone dropout are searched for every method: dropout 0 vs the checkpoint's own often decides
# a small task (BENCHMARKS.md), and warmup matters most to the large prompt learning rates.
WARMUP = (0.0, 0.2)
BACKBONE_DROPOUTS = (0.0, None)  # None: the checkpoint's own rate (0.1 for BERT)


@dataclass(frozen=True)
class Param:
    """One searched setting: ``low``..``high`` (``log`` scale, ``integer`` steps) or one of ``choices``.

    ``name`` is the search's own name for it (Optuna's parameter name, what ``--space`` files and
    ``summary.json`` use); ``option`` the ``ptuning train`` option it sets, when that differs: ptv2
    searches ``lr`` and ``lr_reparam``, both setting ``lr``, because the rate that trains a prefix
    through the MLP is ten times smaller. ``when = (name, value)`` searches the parameter only in trials
    where that other parameter (or the fixed option of that name) has that value.
    """

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple | None = None
    when: tuple[str, object] | None = None
    option: str = ""

    @property
    def target(self) -> str:
        """The ``ptuning train`` option this parameter sets."""
        return self.option or self.name

    def contains(self, value) -> bool:
        """Whether ``value`` is one this parameter can take (a default outside the range is not enqueued)."""
        if self.choices is not None:
            return any(value is c or (type(value) is type(c) and value == c) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and value != int(value):
            return False
        return self.low <= value <= self.high

    def describe(self) -> str:
        """One line for the console and ``summary.json``: ``lr in [0.001, 0.05] (log)``."""
        if self.choices is not None:
            shown = f"{self.name} in {{{', '.join(_show(c) for c in self.choices)}}}"
        else:
            shown = f"{self.name} in [{_show(self.low)}, {_show(self.high)}]" + (" (log)" if self.log else "")
        if self.option:
            shown += f" -> {self.option}"
        if self.when is not None:
            shown += f" when {self.when[0]}={_show(self.when[1])}"
        return shown

    def to_dict(self) -> dict:
        """The ``--space`` file form of this parameter (what ``summary.json`` records)."""
        spec: dict = (
            {"choices": list(self.choices)} if self.choices is not None else {"low": self.low, "high": self.high}
        )
        if self.log:
            spec["log"] = True
        if self.when is not None:
            spec["when"] = {self.when[0]: self.when[1]}
        if self.option:
            spec["option"] = self.option
        return spec


def _show(value) -> str:
    if value is None:
        return "default"
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def learning_rates(low: float, high: float, **conditions) -> Param:
    """A log range of peak learning rates (every method searches one)."""
    return Param("lr", low=low, high=high, log=True, **conditions)


def prompt_lengths(low: int, high: int) -> Param:
    """Prompt lengths on a log scale: 4, 8 and 16 differ as much as 64, 128 and 256 do."""
    return Param("prompt_length", low=low, high=high, log=True, integer=True)


def training_params() -> tuple[Param, ...]:
    """What every method's default space searches besides its own settings: warmup and backbone dropout."""
    return (
        Param("warmup_ratio", low=WARMUP[0], high=WARMUP[1]),
        Param("backbone_dropout", choices=BACKBONE_DROPOUTS),
    )
