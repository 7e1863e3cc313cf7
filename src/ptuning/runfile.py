"""Run settings as a file: ``ptuning train --config FILE`` and the ``OUT/config.yaml`` every run writes.

The file is YAML whose keys are ``ptuning train``'s option names with
underscores (``prompt_length: 20``). Each run writes its fully resolved settings
(the learning rate, ``max_length`` and pooling it actually used, absolute
paths) to ``OUT/config.yaml``, so ``ptuning train --config OUT/config.yaml``
runs it again; flags given on the command line override the file. The same
settings are recorded in every checkpoint, where ``--resume`` compares them.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict
from pathlib import Path

from .errors import PTuningError
from .io import atomic_write_text

CONFIG_FILE = "config.yaml"
# Task options, by their command-line names (TrainRequest.task_options keys).
TASK_OPTIONS = (
    "text_column",
    "text_pair_column",
    "label_column",
    "target_column",
    "labels",
    "crf",
    "doc_stride",
    "split_by_article",
)
# Keys a config file may not set: they say what to do with OUTPUT, not what the run is.
NOT_IN_FILES = ("config",)


def read(path: Path, known: list[str]) -> dict:
    """The settings in a ``--config`` file, refused in one line if it is not a mapping of ``known`` keys."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise PTuningError(f"--config {path}: no such file")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise PTuningError(f"--config {path}: not valid YAML{where}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise PTuningError(f"--config {path}: expected `option: value` lines, got a {type(values).__name__}")
    allowed = [k for k in known if k not in NOT_IN_FILES]
    for key in values:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "; keys are `ptuning train` options with underscores"
            raise PTuningError(f"--config {path}: unknown key {key!r}{hint}")
    if isinstance(values.get("labels"), list):  # the flag takes a comma-separated tag set
        values["labels"] = ",".join(map(str, values["labels"]))
    return values


def write(directory: Path, options: dict) -> Path:
    """``OUT/config.yaml``, atomically: a kill mid-write never leaves half a file."""
    import yaml

    path = Path(directory) / CONFIG_FILE
    header = f"# ptuning train --config {path} runs this again (flags on the command line override it)\n"
    atomic_write_text(path, header + yaml.safe_dump(options, sort_keys=False, allow_unicode=True))
    return path


def options_of(request, *, lr: float, max_length: int, pooling: str, backbone: str) -> dict:
    """``request`` as resolved command-line options (what ``config.yaml`` holds and checkpoints record).

    Values the run resolved (the method's default learning rate, the task's default
    ``max_length``, ``auto`` pooling, the bundled backbone's path) are written as resolved,
    so the file reproduces the run even where a default changes.
    """
    data = None if request.data is None else local_path(request.data)
    options = {"task": request.task, "data": data, "output": str(Path(request.output).resolve())}
    options["model"] = local_path(backbone)
    options.update(request.method.to_dict())
    train = asdict(request.train)
    for key in ("resume", "stop_after_steps"):  # how this invocation runs, not what the run is
        train.pop(key)
    options.update(train, lr=lr)
    options.update(max_length=max_length, max_train_samples=request.max_train_samples)
    options.update(max_eval_samples=request.max_eval_samples, pooling=pooling)
    options.update(few_shot=request.few_shot, few_shot_seed=request.few_shot_seed)
    for key in TASK_OPTIONS:
        value = request.task_options.get(key)
        options[key] = list(value) if isinstance(value, (list, tuple)) else value
    options["crf"] = bool(options["crf"])
    return {**options, **_staged_options(request)}


def _staged_options(request) -> dict:
    """A mixture's file and temperature, the artifact it starts from, its teacher (None: not used)."""
    distill = request.distill
    return {
        "tasks_file": None if request.tasks_file is None else local_path(request.tasks_file),
        "mix_temperature": request.mix_temperature,
        "init_from": None if request.init_from is None else local_path(request.init_from),
        "teacher": None if distill is None else local_path(distill.teacher),
        "distill_alpha": None if distill is None else distill.alpha,
        "distill_temperature": None if distill is None else distill.temperature,
    }


def local_path(name: str) -> str:
    """An existing local path made absolute (the file may be used from another directory); a hub id as is."""
    return str(Path(name).resolve()) if Path(name).exists() else str(name)


def request_from_options(options: dict):
    """``ptuning train``'s options (flags and ``--config`` merged) as a request; building it checks every number."""
    from dataclasses import fields

    from .distill import DistillConfig
    from .pipeline import TrainRequest
    from .trainconfig import TrainConfig

    train_keys = [f.name for f in fields(TrainConfig) if f.name != "stop_after_steps"]
    labels = options["labels"]
    return TrainRequest(
        task=options["task"],
        data=options["data"],
        output=options["output"],
        model=options["model"],
        method=_method_config(options),
        train=TrainConfig(**{key: options[key] for key in train_keys}),
        max_length=options["max_length"],
        max_train_samples=options["max_train_samples"],
        max_eval_samples=options["max_eval_samples"],
        few_shot=options["few_shot"],
        few_shot_seed=options["few_shot_seed"],
        pooling=options["pooling"],
        task_options={
            "text_column": options["text_column"],
            "text_pair_column": options["text_pair_column"],
            "label_column": options["label_column"],
            "target_column": options.get("target_column"),  # generation tasks
            "labels": labels.split(",") if labels else None,
            "crf": options["crf"] or None,
            "doc_stride": options["doc_stride"],
            "split_by_article": options["split_by_article"],
        },
        overwrite=options["overwrite"],
        tasks_file=options.get("tasks_file"),
        mix_temperature=options.get("mix_temperature"),
        init_from=options.get("init_from"),
        distill=_distill_config(options, DistillConfig),
    )


def _method_config(options: dict):
    """The chosen method's config from the flags given (None = not given: the method's own default).

    Every registered method's options are flags; one the chosen method does not take is refused in one
    line naming the method's own options (``ptuning methods`` lists them).
    """
    from .method import REGISTRY, method_config

    names = {name for method in REGISTRY.values() for name in method.config_class.option_names()}
    given = {name: options[name] for name in names if options.get(name) is not None}
    return method_config(options["method"], **given)


def _distill_config(options: dict, config_class):
    """``--teacher`` with its two settings (each None: the default); the settings alone are refused."""
    alpha, temperature = options.get("distill_alpha"), options.get("distill_temperature")
    if options.get("teacher") is None:
        if alpha is not None or temperature is not None:
            raise PTuningError("--distill-alpha and --distill-temperature need --teacher ARTIFACT")
        return None
    given = {k: v for k, v in (("alpha", alpha), ("temperature", temperature)) if v is not None}
    return config_class(teacher=options["teacher"], **given)
