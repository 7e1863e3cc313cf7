"""benchmarks/plots/*.png: the bar chart of each method's converged row per task, and the prompt-length sweep.

matplotlib is imported inside ``plots`` so that ``report.py --check`` and the tests run without it.
"""

from __future__ import annotations

import statistics

from report_fewshot import plot_learning_curves
from report_quality import QUICK_ROUND, sweep_points, sweep_rounds, sweep_runs
from report_runs import HERE, MAIN_METRIC, Run

PLOTS = HERE / "plots"
MAJORITY = {"cb": 50.0, "rte": 52.7, "copa": 55.0, "wsc": 63.5, "sst2": 50.9, "boolq": 61.3}

# The bar plot's rows: per task, each method's converged row at its current defaults (the headline table has the
# variants). SST-2, RTE and CoNLL-2003 show the full-data GPU rows and the subset CPU rows, which alone have PEFT.
# COPA and WSC were run the same way: the same rounds hold each method's rows.
SMALL_SUPERGLUE_ROWS = [
    ("cpu-small", "finetune"),
    ("h100-round15", "prompt-tuning"),
    ("h100-round15", "ptv1"),
    ("cpu-small", "ptv2"),
    ("h100-round15", "ptv2-reparam"),
    ("cpu-peft-mc", "peft-prefix"),
]
PLOT = {
    "cb": [
        ("h200-round2", "finetune"),
        ("h200-round2", "prompt-tuning"),
        ("h200-round4", "ptv1"),
        ("h200-round2", "ptv2"),
        ("h100-round14", "ptv2-reparam-lr5e-4"),
        ("cpu-peft", "peft-prefix"),
    ],
    "rte": [
        ("h200-round2", "finetune"),
        ("h200-round2", "prompt-tuning"),
        ("h100-round12", "ptv1"),
        ("h200-round2", "ptv2"),
        ("h100-round14", "ptv2-reparam-lr5e-4"),
        ("cpu-peft-rte", "ptv2-n1000"),
        ("cpu-peft-rte", "peft-prefix-n1000"),
    ],
    "boolq": [
        ("h100-round14", "finetune-e10"),
        ("h100-round15", "prompt-tuning"),
        ("h100-round15", "ptv1"),
        ("h100-round14", "ptv2-e30"),
        ("h100-round15", "ptv2-reparam"),
    ],
    "sst2": [
        ("h100-round14", "finetune-e3"),
        ("h100-round14", "ptv2-e10"),
        ("cpu-sst2", "finetune"),
        ("cpu-sst2", "ptv2-e20"),
        ("cpu-sst2", "peft-prefix-e20"),
    ],
    "copa": SMALL_SUPERGLUE_ROWS,
    "wsc": SMALL_SUPERGLUE_ROWS,
    "multirc": [("h100-round11", "finetune-e8"), ("h100-round12", "ptv2-lr1e-2-e20")],
    "conll03": [
        ("h200-round9", "finetune-e10"),
        ("h100-round12", "prompt-tuning-e40"),
        ("h100-round11", "ptv2-e25"),
        ("cpu-peft-conll", "finetune-n1000"),
        ("cpu-peft-conll", "ptv2-n1000"),
        ("cpu-peft-conll", "peft-prefix-n1000"),
    ],
    "squad": [("h200-round9", "finetune-e10"), ("h200-round9", "prompt-tuning-e30"), ("h200-round9", "ptv2-e30")],
}
METHOD_COLOURS = {
    "finetune": "tab:gray",
    "prompt-tuning": "tab:orange",
    "ptv1": "tab:olive",
    "ptv2": "tab:blue",
    "ptv2-reparam": "tab:cyan",
    "peft-prefix": "tab:red",
}


def plots(runs: list[Run]) -> list[str]:
    """Draw the PNGs the page links to and return their paths (relative to the repository) in the order written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    PLOTS.mkdir(exist_ok=True)
    written = []
    tasks = list(PLOT)
    columns = (len(tasks) + 1) // 2
    fig, grid = plt.subplots(2, columns, figsize=(3.4 * columns, 7.6))
    axes = list(grid.flat)
    for ax in axes[len(tasks) :]:
        ax.axis("off")
    for ax, task in zip(axes[: len(tasks)], tasks, strict=True):
        names, means, errs, colours = [], [], [], []
        for round_name, label in PLOT[task]:
            group = [r for r in runs if (r.round, r.task, r.label) == (round_name, task, label)]
            if group:
                values = [100 * r.best[r.metric] for r in group]
                names.append(f"{label}\n{round_name} (n={len(values)})")
                means.append(statistics.mean(values))
                errs.append(statistics.stdev(values) if len(values) > 1 else 0.0)
                family = group[0].row["method"] if group[0].row else label
                colours.append(METHOD_COLOURS.get(family, "tab:gray"))
        ax.bar(range(len(names)), means, yerr=errs, capsize=3, color=colours)
        ax.set_xticks(range(len(names)), names, rotation=70, fontsize=6)
        ax.set_title(f"{task} (dev {MAIN_METRIC.get(task, 'accuracy')})", fontsize=9)
        if task in MAJORITY:
            ax.axhline(MAJORITY[task], color="grey", linestyle="--", linewidth=1)
    fig.suptitle(
        "MiniLM: best dev metric by method, one row each at the method's defaults (all rows: BENCHMARKS.md; "
        "error bars: std over seeds; dashed: majority class)\ncpu-sst2: SST-2's first 4k sentences; "
        "cpu-peft-conll: CoNLL-2003's first 1k sentences, a 32-min cap per run; cpu-peft-rte: RTE's first 1k examples, "
        "a 22-min cap per run",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(PLOTS / "methods_by_task.png", dpi=110)
    plt.close(fig)
    written.append("benchmarks/plots/methods_by_task.png")

    sweep = sweep_runs(runs)
    if sweep:
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
        for ax, task in zip(axes, ("rte", "conll03"), strict=True):
            for round_name in sweep_rounds(sweep, task):
                points = sweep_points(sweep, task, round_name)
                quick_check = round_name == QUICK_ROUND
                label = "--quick (subsets: a harness check)" if quick_check else round_name
                style = {"linestyle": "--", "alpha": 0.5} if quick_check else {}
                ax.plot([p for p, _ in points], [v for _, v in points], marker="o", label=label, **style)
            if task in MAJORITY:
                ax.axhline(MAJORITY[task], color="grey", linestyle=":", linewidth=1)
            ax.set_xscale("log")
            ax.set_xlabel("prompt length P")
            ax.set_title(f"{task}: ptv2 best dev {MAIN_METRIC.get(task, 'accuracy')} vs P", fontsize=9)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        fig.suptitle("MiniLM, seed 1 (dotted: majority class)", fontsize=8)
        fig.tight_layout()
        fig.savefig(PLOTS / "prompt_length.png", dpi=110)
        plt.close(fig)
        written.append("benchmarks/plots/prompt_length.png")
    if plot_learning_curves(runs, plt, PLOTS / "learning_curves.png"):
        written.append("benchmarks/plots/learning_curves.png")
    return written
