"""The Python API: what the command line does, from Python.

    import ptuning

    ptuning.train(task="cb", data="data/cb", output="out/cb", prompt_length=20, epochs=40, lr=1e-2)
    predictor = ptuning.load("out/cb")
    predictor.predict([["It rained all day.", "The ground is wet."]])   # [{"label": ..., "score": ..., ...}]
    predictor.evaluate("data/cb")                                        # {"accuracy": ..., ...}

:func:`train` takes exactly ``ptuning train``'s options (underscores for dashes, a ``config`` file too), and
turns them into a :class:`~ptuning.pipeline.TrainRequest` with the command line's own conversion, so the two
cannot drift apart. :func:`load` returns a :class:`Predictor` for any task family: its inputs are the JSON
values the server takes (a text, a list of texts, a choice object, a list of words, a question and context).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import PTuningError


class Predictor:
    """A loaded artifact: predictions for inputs in memory, metrics on a data split."""

    def __init__(self, model, tokenizer, task, meta: dict, batch_size: int = 64) -> None:
        self.model, self.tokenizer, self.task, self.meta = model.eval(), tokenizer, task, meta
        self.batch_size = batch_size

    @property
    def labels(self) -> tuple[str, ...] | None:
        """The task's labels (tags for tagging), or None where the output is not a label (QA, regression...)."""
        labels = self.meta["task"].get("labels")
        return tuple(labels) if labels else None

    def predict(self, inputs: Sequence[Any]) -> list[dict]:
        """One prediction per input, in the shape ``ptuning predict`` writes (label and scores, choice, tags...).

        Each input is what the server's ``/v1/predict`` takes for the task (``predictor.example`` shows one);
        a malformed input is an :class:`~ptuning.errors.InputError` naming what the task expects.
        """
        from .inference import _finite_logits

        if isinstance(inputs, (str, dict)) or not isinstance(inputs, Sequence):
            raise PTuningError("predict() takes a list of inputs: predict([x]) for one input x")
        if not inputs:
            return []
        examples = [self.task.example_from_input(value) for value in inputs]
        featurized = self.task.featurize(examples, self.tokenizer, self.model.token_budget(self.meta["max_length"]))
        collate = self.task.collator(self.tokenizer)
        outputs = self.task.outputs(self.model, featurized.features, collate, self.batch_size)  # texts: generation
        logits = _finite_logits(outputs)
        return self.task.predictions(logits, examples, featurized.alignment)

    @property
    def example(self) -> Any:
        """A made-up input of the shape :meth:`predict` takes for this task."""
        return self.task.example_input()

    def evaluate(self, data: str | Path, split: str = "validation") -> dict:
        """The task's metrics on a labelled split of ``data`` (a directory of the official files, or a file)."""
        from .inference import score_split

        return score_split(self.model, self.tokenizer, self.task, str(data), split, self.meta["max_length"])

    def __repr__(self) -> str:
        method = self.meta["method"]["method"]
        return f"Predictor(task={self.task.name!r}, method={method!r}, backbone={self.meta['backbone']['name']!r})"


def load(
    path: str | Path,
    *,
    model: str | None = None,
    device: str = "auto",
    batch_size: int = 64,
    task: str | None = None,
    backbone_dtype: str | None = None,
) -> Predictor:
    """The artifact in ``path`` as a :class:`Predictor`, on ``device`` (``auto``: the GPU when there is one).

    ``model``: the backbone's path when it moved since training (its fingerprint is checked either way);
    ``task``: one task of a multi-task artifact; ``backbone_dtype``: ``fp32``, ``bf16``, ``fp16`` or ``int8`` for
    the backbone (default: what it was trained in).
    """
    from .artifact import load_artifact
    from .backbones import resolve_device

    network, tokenizer, chosen, meta = load_artifact(path, model_name=model, task=task, backbone_dtype=backbone_dtype)
    network.to(resolve_device(device))
    return Predictor(network, tokenizer, chosen, meta, batch_size)


def train(
    task: str | None = None,
    data: str | Path | None = None,
    output: str | Path | None = None,
    *,
    config: str | Path | None = None,
    **options: Any,
) -> dict:
    """Train as ``ptuning train`` does and return its summary (what ``OUTPUT/metrics.json`` holds).

    ``options`` are ``ptuning train``'s options with underscores (``prompt_length=20``, ``method="prompt-tuning"``,
    ``epochs=3``...; ``ptuning train --help`` lists them); ``config`` a YAML file of them, which the keyword
    arguments override, as flags override ``--config``. Every value is checked as on the command line: a bad one
    raises :class:`~ptuning.errors.PTuningError` before anything is written.
    """
    from . import runfile
    from .pipeline import train as run

    params = _train_options()
    unknown = sorted(set(options) - set(params) - {"task", "data", "output"})
    if unknown:
        raise PTuningError(f"ptuning.train() has no option {', '.join(unknown)}; see `ptuning train --help`")
    values = {"task": None, "data": None, **params}  # a mixture's tasks file names both
    if config is not None:
        values.update(runfile.read(Path(config), [*params, "task", "data", "output"]))
    given = {"task": task, "data": data, "output": output}
    values.update({k: v for k, v in given.items() if v is not None}, **options)
    missing = [name for name in ("task", "data", "output") if values.get(name) is None]
    if values.get("tasks_file") is not None:  # a mixture: the tasks file names the tasks and their data
        missing = [name for name in missing if name == "output"]
    if missing:
        raise PTuningError(f"ptuning.train() needs {', '.join(missing)}")
    if isinstance(values.get("labels"), (list, tuple)):
        values["labels"] = ",".join(map(str, values["labels"]))
    data = values["data"]
    values.update(data=None if data is None else str(data), output=Path(values["output"]))
    return run(runfile.request_from_options(values))  # the command line's own conversion of options


def _train_options() -> dict[str, Any]:
    """``ptuning train``'s options and their defaults (``config`` and the three required ones aside)."""
    import typer

    from .cli import app

    command = typer.main.get_command(app).commands["train"]
    return {p.name: p.default for p in command.params if p.name not in ("config", "task", "data", "output")}
