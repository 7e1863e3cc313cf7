"""The sweep's PNG plots, drawn from ``summary.json``'s content (so they can be redrawn from the file).

* ``plot_prompt_length.png``: each trial's best dev score against its prompt length (log scale);
* ``plot_learning_rate.png``: against its peak learning rate (log scale);
* ``plot_history.png``: the score of each trial in order, with the best so far.

Pruned trials are drawn at the last score they reported, hollow: a lower bound of where they would have
ended. With the reparameterisation searched, its two settings get their own colours (their learning rates
live in different ranges). Matplotlib's object API only: no pyplot state, no display needed.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from ..io import atomic_write_bytes

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
SIZE = (6.4, 4.3)


def write_plots(summary: dict, out: Path) -> list[str]:
    """Draw every plot the summary has data for into ``out``; their file names."""
    points = _points(summary)
    written = []
    for option, name, label in (
        ("prompt_length", "plot_prompt_length.png", "prompt length (log scale)"),
        ("lr", "plot_learning_rate.png", "peak learning rate (log scale)"),
    ):
        if any(isinstance(p["options"].get(option), (int, float)) for p in points):  # searched, and scored once
            _save(_against(summary, points, option, label), Path(out) / name)
            written.append(name)
    if points:
        _save(_history(summary, points), Path(out) / "plot_history.png")
        written.append("plot_history.png")
    return written


def _points(summary: dict) -> list[dict]:
    """Trials with a score: complete ones at their value, pruned ones at their last reported value."""
    points = []
    for row in summary["trials"]:
        if row["state"] == "complete":
            value, pruned = row["value"], False
        elif row["state"] == "pruned" and row["intermediate"]:
            value, pruned = list(row["intermediate"].values())[-1], True
        else:
            continue
        if isinstance(value, (int, float)) and math.isfinite(value):
            points.append({"trial": row["number"], "value": value, "pruned": pruned, "options": row["options"] or {}})
    return points


def _groups(points: list[dict]) -> list[tuple[str, list[dict]]]:
    """Points split by the reparameterisation when trials differ in it, else one group."""
    settings = sorted({p["options"].get("reparam") for p in points}, key=str)
    if len(settings) < 2:
        return [("trials", points)]
    return [
        (f"reparam {'on' if s else 'off'}", [p for p in points if p["options"].get("reparam") == s]) for s in settings
    ]


def _figure():
    from matplotlib.figure import Figure

    figure = Figure(figsize=SIZE, dpi=120, layout="constrained")
    axes = figure.add_subplot()
    axes.margins(x=0.08, y=0.1)  # points (and the best trial's star) stay clear of the frame
    return figure, axes


def _title(summary: dict, what: str) -> str:
    return f"{summary['task']} · {summary['method']}: {what} ({summary['trials_finished']} trials)"


def _against(summary: dict, points: list[dict], option: str, label: str):
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    figure, axes = _figure()
    metric = summary["metric"]
    for (name, group), colour in zip(_groups(points), COLOURS, strict=False):
        group = [p for p in group if isinstance(p["options"].get(option), (int, float))]
        done = [p for p in group if not p["pruned"]]
        cut = [p for p in group if p["pruned"]]
        axes.scatter(
            [p["options"][option] for p in done], [p["value"] for p in done], color=colour, label=name, zorder=3
        )
        if cut:
            axes.scatter(
                [p["options"][option] for p in cut],
                [p["value"] for p in cut],
                facecolors="none",
                edgecolors=colour,
                label=f"{name}, pruned (last score)",
                zorder=3,
            )
    best = summary.get("best")
    if best and isinstance((best.get("options") or {}).get(option), (int, float)):
        axes.scatter([best["options"][option]], [best["value"]], marker="*", s=260, color="#ff9f1c", edgecolors="black",
                     label=f"best: trial {best['trial']} ({best['value']:.4f})", zorder=4)  # fmt: skip
    # plain numbers at 1-2-5 steps (rates) or powers of two (lengths); minor ticks unlabelled: no overlapping labels
    prompt = option == "prompt_length"
    axes.set_xscale("log", base=2 if prompt else 10)
    axes.xaxis.set_major_locator(LogLocator(base=2) if prompt else LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel(label)
    axes.set_ylabel(f"dev {metric} (best evaluation)")
    axes.set_title(_title(summary, f"dev {metric} vs {label.split(' (')[0]}"), fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    return figure


def _history(summary: dict, points: list[dict]):
    figure, axes = _figure()
    metric = summary["metric"]
    done = [p for p in points if not p["pruned"]]
    cut = [p for p in points if p["pruned"]]
    axes.scatter([p["trial"] for p in done], [p["value"] for p in done], color=COLOURS[0], label="complete", zorder=3)
    if cut:
        axes.scatter([p["trial"] for p in cut], [p["value"] for p in cut], marker="x", color=COLOURS[1],
                     label="pruned (last score)", zorder=3)  # fmt: skip
    steps, best = [], None
    for p in sorted(done, key=lambda p: p["trial"]):
        best = p["value"] if best is None else max(best, p["value"])
        steps.append((p["trial"], best))
    if steps:
        last = max(p["trial"] for p in points)
        xs, ys = [s[0] for s in steps] + [last], [s[1] for s in steps] + [steps[-1][1]]
        axes.step(xs, ys, where="post", color="#ff9f1c", linewidth=2, label="best so far")
    axes.set_xlabel("trial")
    axes.set_ylabel(f"dev {metric} (best evaluation)")
    axes.set_title(_title(summary, "optimisation history"), fontsize=10)
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    return figure


def _save(figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())
