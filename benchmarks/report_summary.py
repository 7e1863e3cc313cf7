"""The table BENCHMARKS.md opens with: per task, fine-tuning against every prompt method, with the gap.

A newcomer should read it in a minute, so each task gets one row (two where a CPU subset was measured beside
the full set) and each cell one figure: the mean ± std over seeds of the task's reported metric (test where the
task has a test split, else dev), with the method's trainable share of the backbone. Which round and run label
stand for each cell is configuration (``SUMMARY``), chosen as the best converged evidence of each method on the
same data; the numbers are read from the runs, and the table's sources line names every cell's round.
"""

from __future__ import annotations

import statistics

from report_runs import Run

COLUMNS = ["finetune", "ptv2", "ptv2 (recipe)", "prompt-tuning", "ptv1", "peft-prefix"]
FULL = "full"
# (task, data, {column: (round, run label)}): a column left out has no converged run on that data yet.
SUMMARY: list[tuple[str, str, dict[str, tuple[str, str]]]] = [
    (
        "cb",
        FULL,
        {
            "finetune": ("h200-round2", "finetune"),
            "ptv2": ("h200-round2", "ptv2"),
            "prompt-tuning": ("h200-round2", "prompt-tuning"),
            "ptv1": ("h200-round4", "ptv1"),
            "peft-prefix": ("cpu-peft", "peft-prefix"),
        },
    ),
    (
        "rte",
        FULL,
        {
            "finetune": ("h200-round2", "finetune"),
            "ptv2": ("h200-round2", "ptv2"),
            "prompt-tuning": ("h200-round2", "prompt-tuning"),
            "ptv1": ("h100-round12", "ptv1"),
        },
    ),
    (
        "boolq",
        "val split 80/20",
        {
            "finetune": ("h100-round14", "finetune-e10"),
            "ptv2": ("h100-round14", "ptv2-e30"),
            "prompt-tuning": ("h100-round15", "prompt-tuning"),
            "ptv1": ("h100-round15", "ptv1"),
        },
    ),
    (
        "copa",
        FULL,
        {
            "finetune": ("cpu-small", "finetune"),
            "ptv2": ("cpu-small", "ptv2"),
            "prompt-tuning": ("h100-round15", "prompt-tuning"),
            "ptv1": ("h100-round15", "ptv1"),
            "peft-prefix": ("cpu-peft-mc", "peft-prefix"),
        },
    ),
    (
        "wsc",
        FULL,
        {
            "finetune": ("cpu-small", "finetune"),
            "ptv2": ("cpu-small", "ptv2"),
            "prompt-tuning": ("h100-round15", "prompt-tuning"),
            "ptv1": ("h100-round15", "ptv1"),
            "peft-prefix": ("cpu-peft-mc", "peft-prefix"),
        },
    ),
    # ptv2 at lr 1e-2 (round 12) ran on round 11's setup and beat its lr 2e-2 run (the lab notebook's gap table).
    ("multirc", FULL, {"finetune": ("h100-round11", "finetune-e8"), "ptv2": ("h100-round12", "ptv2-lr1e-2-e20")}),
    ("sst2", FULL, {"finetune": ("h100-round14", "finetune-e3"), "ptv2": ("h100-round14", "ptv2-e10")}),
    (
        "sst2",
        "4k train subset",
        {
            "finetune": ("cpu-sst2", "finetune"),
            "ptv2": ("cpu-sst2", "ptv2-e20"),
            "peft-prefix": ("cpu-sst2", "peft-prefix-e20"),
        },
    ),
    (
        "conll03",
        FULL,
        {
            "finetune": ("h200-round9", "finetune-e10"),
            "ptv2": ("h200-round9", "ptv2-e30"),
            "prompt-tuning": ("h200-round9", "prompt-tuning-e30"),
        },
    ),
    (
        "conll03",
        "1k train subset",
        {
            "finetune": ("cpu-peft-conll", "finetune-n1000"),
            "ptv2": ("cpu-peft-conll", "ptv2-n1000"),
            "peft-prefix": ("cpu-peft-conll", "peft-prefix-n1000"),
        },
    ),
    (
        "squad",
        "article split",
        {
            "finetune": ("h200-round9", "finetune-e10"),
            "ptv2": ("h200-round9", "ptv2-e30"),
            "prompt-tuning": ("h200-round9", "prompt-tuning-e30"),
        },
    ),
]


def _reported(run: Run) -> float:
    """The figure a task reports: the test metric of the best-dev checkpoint where there is one, else best dev."""
    test = run.row.get("test") if run.row else None
    return test[run.metric] if test else run.best[run.metric]


def _members(runs: list[Run], source: tuple[str, str], task: str) -> list[Run]:
    return [r for r in runs if (r.round, r.label, r.task) == (source[0], source[1], task)]


def _cell(members: list[Run]) -> tuple[str, float | None]:
    """``"79.2 ± 2.1 (0.41 %)"`` and the mean; marks one seed and runs a time cap stopped."""
    if not members:
        return "—", None
    values = [100 * _reported(r) for r in members]
    mean = statistics.mean(values)
    text = f"{mean:.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else f"{mean:.1f} (1 seed)"
    if any(r.stopped_by != "patience" for r in members):
        text += " †"
    rows = [r.row for r in members if r.row]
    if rows and rows[0].get("trainable_params") and rows[0].get("backbone_params"):
        text += f" ({100 * rows[0]['trainable_params'] / rows[0]['backbone_params']:.2f} %)"
    return text, mean


def _gap(value: float | None, finetune: float | None) -> str:
    return "—" if value is None or finetune is None else f"{value - finetune:+.1f}"


def summary_table(runs: list[Run]) -> str:
    """One row per (task, data): every column's cell, then ptv2's and the recipe's gap to fine-tuning."""
    header = ["task", "data", "metric", *COLUMNS, "ptv2 − finetune", "recipe − finetune"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    sources = []
    for task, data, cells in SUMMARY:
        members = {column: _members(runs, source, task) for column, source in cells.items()}
        present = [m for m in members.values() if m]
        if not present:
            continue
        metric = present[0][0].metric + (" (test)" if present[0][0].row and present[0][0].row.get("test") else "")
        texts, means = {}, {}
        for column in COLUMNS:
            texts[column], means[column] = _cell(members.get(column, []))
        gaps = [_gap(means["ptv2"], means["finetune"]), _gap(means["ptv2 (recipe)"], means["finetune"])]
        lines.append("| " + " | ".join([task, data, metric, *texts.values(), *gaps]) + " |")
        used = ", ".join(f"{c} {r}/{label}" for c, (r, label) in cells.items() if members[c])
        sources.append(f"{task} ({data}): {used}")
    legend = (
        "\nEach cell: mean ± std over seeds (3 unless it says 1 seed) of the reported metric, in percent, and the "
        "method's trainable parameters as a share of the backbone's. † marks cells where a time cap, not patience, "
        "ended at least one run. `ptv2 (recipe)` is the built-in recipe (sweep, multi-task init, distillation): not "
        "run yet. The cells come from these rounds and run labels (their details are in the lab notebook below): "
        + "; ".join(sources)
        + ".\n"
    )
    return "\n".join(lines) + "\n" + legend
