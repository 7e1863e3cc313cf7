"""PNG plots of an inspection report (matplotlib, the ``inspect`` extra): each names its task and artifact,
and every axis says what it measures and in which unit.

The plots read only the report (``inspect.json``'s content), so they can be redrawn from the file.
"""

from __future__ import annotations

import io
from pathlib import Path

from ..errors import PTuningError
from ..io import atomic_write_bytes

PLOT_FILES = ("attention_share.png", "slot_attention.png", "norms.png", "ablation.png")
MISSING = "ptuning inspect draws its plots with matplotlib: pip install 'ptuning[inspect]', or pass --no-plots"


def require_matplotlib():
    """``matplotlib.pyplot`` on the file-only Agg backend, or one line saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise PTuningError(MISSING) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def subject(report: dict) -> str:
    """The line every plot of ``report`` carries: task, artifact, method and prompt, data."""
    prompt = report["prompt"]
    line = f"task {report['task']['name']} · artifact {report['name']} · {report['method']['method']}"
    if prompt["slots"]:
        line += f", {prompt['kind']} of {prompt['slots']} slots"
    data = report.get("data")
    if data:
        line += f" · {data['split']} split, {data['examples']} examples"
    return line


def _save(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _heat_map(plt, values: list[list[float]], *, title: str, xlabel: str, colorbar: str, center=None):
    """A layers x columns heat map of percentages, each cell annotated when the grid is small enough to read.

    ``center``: a diverging scale around that value (above it red, below it blue); else 0 to the largest value.
    """
    import numpy as np

    grid = np.array(values, dtype=float) * 100  # (layers, columns), percent
    rows, cols = grid.shape
    fig, ax = plt.subplots(figsize=(min(2.5 + 0.6 * cols, 16), 1.6 + 0.45 * rows))
    finite = np.isfinite(grid).any()
    if center is None:
        low, high, cmap = 0.0, max(float(np.nanmax(grid)) if finite else 1.0, 1e-9), "viridis"
    else:
        spread = max(float(np.nanmax(np.abs(grid - center))) if finite else 0.0, 0.05 * center, 1e-9)
        low, high, cmap = center - spread, center + spread, "RdBu_r"
    image = ax.imshow(grid, cmap=cmap, vmin=low, vmax=high, aspect="auto")
    if rows * cols <= 400:
        for (r, c), value in np.ndenumerate(grid):
            if np.isfinite(value):
                position = (value - low) / (high - low)  # where the cell's colour sits on the scale, 0-1
                dark = position > 0.6 if center is None else abs(position - 0.5) > 0.35
                ax.text(c, r, f"{value:.1f}", ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_xticks(range(cols))
    ax.set_yticks(range(rows))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("layer (0 = closest to the input)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label=colorbar)
    return fig


def plot_attention_share(plt, report: dict, directory: Path) -> Path | None:
    attention = report.get("attention")
    if not attention or not attention["probabilities"]:
        return None
    title = f"Share of real tokens' attention on the prompt, per layer and head\n{subject(report)}"
    colorbar = "attention on prompt slots (% of a real token's attention)"
    fig = _heat_map(plt, attention["share"], title=title, xlabel="attention head", colorbar=colorbar)
    return _save(fig, directory / "attention_share.png")


def plot_slot_attention(plt, report: dict, directory: Path) -> Path | None:
    """How each layer's attention on the prompt splits among its slots (each row sums to 100 %): the layers'
    totals differ far more than their slots do, so absolute shares would hide which slots a layer prefers."""
    attention = report.get("attention")
    slots = report["prompt"]["slots"]
    if not attention or not attention["probabilities"] or not slots:
        return None
    rows = [
        [value / total if total > 0 else float("nan") for value in row]
        for row, total in ((row, sum(row)) for row in attention["slot_share"])
    ]
    title = (
        "Which prompt slots the attention on the prompt goes to, per layer "
        f"(every slot alike = {100 / slots:.1f} %: white)\n{subject(report)}"
    )
    colorbar = "share of the layer's attention on the prompt (%)"
    fig = _heat_map(plt, rows, title=title, xlabel="prompt slot", colorbar=colorbar, center=100 / slots)
    return _save(fig, directory / "slot_attention.png")


def plot_norms(plt, report: dict, directory: Path) -> Path | None:
    norms = report.get("norms")
    if not norms:
        return None
    by_layer = norms["by_layer"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    for ax, kind in zip(axes, ("key", "value"), strict=True):
        layers = range(len(by_layer[f"prompt_{kind}"]))
        ax.plot(layers, by_layer[f"prompt_{kind}"], "o-", label=f"prompt slots' {kind}s")
        if by_layer[f"token_{kind}"] is not None:
            ax.plot(layers, by_layer[f"token_{kind}"], "s--", label=f"real tokens' {kind}s (backbone)")
        ax.set_xlabel("layer (0 = closest to the input)")
        ax.set_ylabel(f"{kind} norm (mean L2 norm per head vector)")
        ax.set_xticks(list(layers))
        ax.set_ylim(bottom=0)
        ax.set_title(f"{kind.capitalize()}s", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    where = "measured on the inputs" if norms["per_head"]["token_key"] is not None else "the stored prefix, no inputs"
    title = f"Key and value norms per layer: the prompt's slots vs the backbone's real tokens ({where})"
    fig.suptitle(f"{title}\n{subject(report)}", fontsize=10)
    fig.tight_layout()
    return _save(fig, directory / "norms.png")


def plot_ablation(plt, report: dict, directory: Path) -> Path | None:
    """Markers, not bars: layers often differ by a few points, which bars from 0 would hide; the axis spans the
    scores with a margin, and the two reference scores are drawn across it."""
    ablation = report.get("ablation")
    if not ablation:
        return None
    import numpy as np

    def percent(values):
        return np.array([np.nan if v is None else 100 * v for v in values], dtype=float)

    without, only = percent(ablation["without_layer"]), percent(ablation["only_layer"])
    layers = np.arange(len(without))
    fig, ax = plt.subplots(figsize=(max(6.5, 0.9 * len(layers) + 4), 4))
    ax.plot(layers, without, "v", markersize=9, label="prompt removed from this layer only")
    ax.plot(layers, only, "o", markersize=8, label="prompt in this layer only")
    references = (
        (ablation["all_layers"], "-", "prompt in every layer"),
        (ablation["no_layer"], ":", "no prompt at all"),
    )
    for value, style, label in references:
        if value is not None:
            ax.axhline(100 * value, color="black", linestyle=style, linewidth=1.2, label=f"{label}: {100 * value:.1f}")
    scores = np.concatenate([without, only, [100 * v for v, _, _ in references if v is not None]])
    if np.isfinite(scores).any():
        low, high = np.nanmin(scores), np.nanmax(scores)
        margin = max(2.0, 0.15 * (high - low))
        ax.set_ylim(low - margin, high + margin)
    ax.set_xticks(layers)
    ax.set_xlabel("layer (0 = closest to the input)")
    ax.set_ylabel(f"{ablation['metric']} (%)")
    title = f"Which layers carry the task: {ablation['metric']} with one layer's prompt removed or kept alone"
    ax.set_title(f"{title}\n{subject(report)}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    return _save(fig, directory / "ablation.png")


def plot_report(report: dict, directory: Path) -> list[Path]:
    """Every plot ``report`` has data for, written into ``directory``; stale plots of earlier runs are removed."""
    plt = require_matplotlib()
    written = []
    for name, draw in zip(
        PLOT_FILES, (plot_attention_share, plot_slot_attention, plot_norms, plot_ablation), strict=True
    ):
        path = draw(plt, report, Path(directory))
        plt.close("all")
        if path is None:
            (Path(directory) / name).unlink(missing_ok=True)
        else:
            written.append(path)
    return written


def plot_similarity(comparison: dict, directory: Path) -> list[Path]:
    """Pairs x layers heat maps of the cosine similarity of the compared prompts: ``similarity.png`` for deep
    prefixes, ``similarity_input.png`` for input-level prompts (the two kinds do not compare with each other)."""
    written = []
    for kind, name in (("deep", "similarity.png"), ("input", "similarity_input.png")):
        pairs = [p for p in comparison["pairs"] if p["kind"] == kind]
        if pairs:
            written.append(_similarity_map(comparison, pairs, Path(directory) / name))
    return written


def _similarity_map(comparison: dict, pairs: list[dict], path: Path) -> Path:
    plt = require_matplotlib()
    import numpy as np

    grid = np.array([p["cosine"] for p in pairs], dtype=float)  # (pairs, layers)
    rows, cols = grid.shape
    labels = {a["name"]: f"{a['name']} ({a['task']})" for a in comparison["artifacts"]}
    fig, ax = plt.subplots(figsize=(min(4 + 0.7 * cols, 16), 1.8 + 0.45 * rows))
    image = ax.imshow(grid, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    for (r, c), value in np.ndenumerate(grid):
        color = "white" if abs(value) > 0.6 else "black"
        ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=8, color=color)
    ax.set_yticks(range(rows), [f"{labels[p['a']]} vs {labels[p['b']]}" for p in pairs], fontsize=8)
    deep = pairs[0]["kind"] == "deep"
    ax.set_xticks(range(cols), [str(i) for i in range(cols)] if deep else ["input prompt"])
    ax.set_xlabel("layer (0 = closest to the input)" if deep else "")
    what = "mean prefix slot (keys and values)" if deep else "mean input prompt vector"
    ax.set_title(f"How alike the prompts are: cosine similarity of their {what}, per layer", fontsize=10)
    fig.colorbar(image, ax=ax, label="cosine similarity (-1 to 1)")
    _save(fig, path)
    plt.close("all")
    return path
