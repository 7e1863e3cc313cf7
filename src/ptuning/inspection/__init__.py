"""``ptuning inspect``: what did the prompt learn?

For one artifact (``report.py``): per layer and head, how much of real tokens' attention goes to the prompt
and to which slots, and how large the prompt's keys and values are beside the backbone's own
(``attention.py``, read through the injector's probe); which layers carry the task, by removing each layer's
prompt or keeping it alone (``ablation.py``, through the method's :meth:`~ptuning.method.Method.prompt_in_layers`);
for input-level prompts, the nearest vocabulary tokens of each prompt vector (``prompts.py``). For several
artifacts, how alike their prompts are, layer by layer.

Output: ``inspect.json`` (finite JSON, written atomically), PNG plots (``plots.py``, matplotlib from the
``inspect`` extra; ``--no-plots`` does without) and a short table in the terminal (``table.py``).
"""

from __future__ import annotations

from pathlib import Path

from .. import artifact
from ..errors import PTuningError
from ..io import atomic_write_json
from .prompts import similarity
from .report import InspectOptions, inspect_artifact

REPORT_FILE = "inspect.json"
SIMILARITY_FILE = "similarity.json"


def output_directories(artifacts: list[Path], output: Path | None) -> list[Path]:
    """Where each artifact's report goes: ``ARTIFACT/inspect`` (one artifact, no ``--output``), ``OUTPUT`` (one),
    ``OUTPUT/NAME`` (several; a repeated name gets ``-2``, ``-3``...)."""
    if len(artifacts) == 1:
        return [Path(output) if output is not None else Path(artifacts[0]) / "inspect"]
    if output is None:
        raise PTuningError("several artifacts: give --output DIR (each report goes to DIR/NAME, the comparison to DIR)")
    names: list[str] = []
    for path in artifacts:
        base = Path(path).resolve().name
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return [Path(output) / name for name in names]


def run(artifacts: list[Path], options: InspectOptions, output: Path | None = None, console=None) -> dict:
    """Inspect ``artifacts``, write every report (and, for several, their comparison); return what was written.

    Every artifact is checked to be one before any work; matplotlib too, unless ``options.plots`` is off.
    """
    from rich.console import Console

    from .table import print_report, print_similarity

    console = console or Console()
    artifacts = [Path(a) for a in artifacts]
    if not artifacts:
        raise PTuningError("give at least one artifact directory")
    targets = output_directories(artifacts, output)
    for path in artifacts:
        artifact.read_meta(path)
    if options.plots:
        from .plots import require_matplotlib

        require_matplotlib()
    reports, vectors = [], []
    for path, target in zip(artifacts, targets, strict=True):
        report, prompt = inspect_artifact(path, options, name=target.name if len(artifacts) > 1 else None)
        report["plots"] = _write(report, target, options.plots)
        print_report(report, console, str(target))
        reports.append(report)
        vectors.append(prompt)
    result = {"reports": reports, "comparison": None}
    if len(artifacts) > 1:
        result["comparison"] = _compare(reports, vectors, Path(output), options.plots)
        print_similarity(result["comparison"], console)
    return result


def _write(report: dict, directory: Path, plots: bool) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    if plots:
        from .plots import plot_report

        written = [p.name for p in plot_report(report, directory)]
    atomic_write_json(directory / REPORT_FILE, {**report, "plots": written})
    return written


def _compare(reports: list[dict], vectors: list, directory: Path, plots: bool) -> dict:
    comparison = {
        "artifacts": [{"name": r["name"], "task": r["task"]["name"], "artifact": r["artifact"]} for r in reports],
        "measure": "cosine similarity of the mean prompt slot (deep: keys and values of every head), per layer",
        **similarity([v for v in vectors if v is not None]),
    }
    comparison["skipped"] += [
        f"{r['name']}: no prompt to compare" for r, v in zip(reports, vectors, strict=True) if v is None
    ]
    comparison["plots"] = []
    if plots:
        from .plots import plot_similarity

        comparison["plots"] = [p.name for p in plot_similarity(comparison, directory)]
    atomic_write_json(directory / SIMILARITY_FILE, comparison)
    return comparison


__all__ = ["InspectOptions", "inspect_artifact", "run"]
