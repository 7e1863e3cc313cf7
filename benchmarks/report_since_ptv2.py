"""BENCHMARKS.md's head-to-head of the deep-prompt methods published since P-Tuning v2 (issue 20).

Two sources, each from one command: the quality rows of ``reproduce.py --methods since-ptv2`` (rounds named
``reproduce-<budget>-since-ptv2``, 3 seeds per cell, stopped on patience) and the step cost of every method measured
against ptv2 in one process (``efficiency.py`` with the same methods, ``since-ptv2-efficiency.json``). A section with
no quality rows yet says so and gives the command, rather than leaving a table of dashes.
"""

from __future__ import annotations

import json
import statistics

from report_runs import Run, results_dir
from report_summary import _cell, _reported

# The CPU-sized head-to-head: low-data settings where ptv2 learns (above the majority class) and a run takes
# minutes. Same harness for every method; ptv2's and prompt-tuning's rows are the low-resource section's own.
LOW_DATA = (("cb", "fewglue", True), ("sst2", "few_shot", 64), ("conll03", "few_shot", 32))
LOW_DATA_ROUNDS = ("cpu-fewglue", "cpu-fewshot", "cpu-since")
LOW_DATA_MIN_SEEDS = 5
GOAL_POINTS = 1.0
LOW_DATA_INTRO = (
    "A CPU-sized head-to-head while the full table waits for a GPU: three low-data settings where ptv2 learns "
    "(it is well above the majority class) and one run takes minutes here. CB on FewGLUE's fixed 32-shot files "
    "(dev32 selects), SST-2 with K=64 drawn examples and CoNLL-2003 with K=32 drawn sentences (`--few-shot K`: as "
    "many more select); the full validation set is scored once (`reported`). Each seed is one draw, the same draw "
    "for every method; each method's harness defaults (prompt length and lr: the lab notebook's list; the "
    "few-shot schedule, patience 10), backbone dropout 0, every run stopped on patience unless marked †. ptv2's "
    "and prompt-tuning's rows are the low-resource section's; the others come from "
    "`python benchmarks/methods.py ... --methods apt,ptv2-ptp-noise,ptv2-ptp-adv,lpt,"
    "prompt-tuning-residual --out benchmarks/results/cpu-since/...` (benchmarks/README.md).\n"
)

METHODS = ["ptv2", "apt", "ptv2-ptp-noise", "ptv2-ptp-adv", "lpt", "prompt-tuning", "prompt-tuning-residual"]
PUBLISHED_SINCE = ["apt", "ptv2-ptp-noise", "ptv2-ptp-adv", "lpt", "prompt-tuning-residual"]  # the goal's candidates
TASKS = ["cb", "rte", "copa", "wsc", "sst2", "boolq", "conll03"]
EFFICIENCY = ("cpu", "since-ptv2-efficiency.json")
COMMAND = "python benchmarks/reproduce.py --budget gpu --methods since-ptv2"


def _rounds(runs: list[Run]) -> list[str]:
    return sorted({r.round for r in runs if r.round.startswith("reproduce-") and r.round.endswith("-since-ptv2")})


def quality_table(runs: list[Run]) -> str:
    """Per method and task: the reported metric, mean ± std over seeds; the mean over the tasks every method ran."""
    lines = []
    for round_name in _rounds(runs):
        mine = [r for r in runs if r.round == round_name and r.row]
        tasks = [t for t in TASKS if any(r.task == t for r in mine)]
        lines += [f"Round `{round_name}`:\n", "| method | " + " | ".join(tasks) + " | mean | vs ptv2 |"]
        lines.append("|---" * (len(tasks) + 3) + "|")
        cell = {(t, m): [r for r in mine if (r.task, r.label) == (t, m)] for t in tasks for m in METHODS}
        complete = [t for t in tasks if all(cell[t, m] for m in METHODS)]
        means = {}
        for method in METHODS:
            cells = [_cell(cell[t, method])[0] for t in tasks]
            values = [statistics.mean(_reported(r) for r in cell[t, method]) for t in complete]
            means[method] = 100 * statistics.mean(values) if values else None
            mean = "—" if means[method] is None else f"{means[method]:.1f}"
            gap = "" if means[method] is None or means["ptv2"] is None else f"{means[method] - means['ptv2']:+.1f}"
            lines.append(f"| {method} | " + " | ".join(cells) + f" | {mean} | {gap} |")
        lines.append(
            f"\nMean: over the tasks every method ran ({', '.join(complete) or 'none yet'}), each task's mean over "
            "seeds. † marks cells where a time cap, not patience, ended a run. Percentages in brackets: trainable "
            "parameters of the backbone's.\n"
        )
    return "\n".join(lines)


def _setting_name(task: str, key: str, value) -> str:
    return f"{task} (FewGLUE 32)" if key == "fewglue" else f"{task} (K={value})"


def low_data_cells(runs: list[Run]) -> dict:
    """``{(setting, method): [run, ...]}`` over LOW_DATA; one run per seed (a seed in two rounds is refused)."""
    cells: dict = {}
    seen: dict = {}
    for run in runs:
        if run.round not in LOW_DATA_ROUNDS or not (run.row and run.row.get("reported")) or run.label not in METHODS:
            continue
        for task, key, value in LOW_DATA:
            if run.task == task and run.row.get(key) == value:
                setting = _setting_name(task, key, value)
                if (setting, run.label, run.seed) in seen:
                    raise SystemExit(
                        f"{setting} {run.label} seed {run.seed} is in rounds {seen[(setting, run.label, run.seed)]} "
                        f"and {run.round}: keep one of them"
                    )
                seen[(setting, run.label, run.seed)] = run.round
                cells.setdefault((setting, run.label), []).append(run)
    return cells


def _reported_pct(members: list[Run]) -> list[float]:
    return [100 * r.row["reported"][r.metric] for r in members]


def low_data_table(runs: list[Run]) -> str:
    """Per method: each setting's reported metric (mean ± std over seeds), the mean, the gap to ptv2, the std."""
    cells = low_data_cells(runs)
    settings = [_setting_name(*s) for s in LOW_DATA if any(k[0] == _setting_name(*s) for k in cells)]
    if not settings:
        return ""
    full = [s for s in settings if all(len(cells.get((s, m), [])) >= LOW_DATA_MIN_SEEDS for m in METHODS)]
    lines = [
        "| method | trainable / ptv2 | " + " | ".join(settings) + " | mean | vs ptv2 | mean std |",
        "|---" * (len(settings) + 5) + "|",
    ]
    summary = {}
    for method in METHODS:
        texts = []
        for setting in settings:
            values = _reported_pct(cells.get((setting, method), []))
            capped = any(r.stopped_by != "patience" for r in cells.get((setting, method), []))
            text = "—" if not values else f"{statistics.mean(values):.1f}"
            text += f" ± {statistics.stdev(values):.1f} ({len(values)})" if len(values) > 1 else ""
            texts.append(text + (" †" if capped else ""))
        means = [statistics.mean(_reported_pct(cells[(s, method)])) for s in full]
        stds = [statistics.stdev(_reported_pct(cells[(s, method)])) for s in full]
        summary[method] = (statistics.mean(means), statistics.mean(stds)) if full else None
        lines.append(f"| {method} | {_param_ratio(cells, method)} | " + " | ".join(texts) + " | " + _tail(summary))
    lines.append(
        f"\nMean, gap and mean std over the settings where every method has ≥ {LOW_DATA_MIN_SEEDS} seeds "
        f"({', '.join(full) or 'none yet'}). Trainable / ptv2: the largest ratio over the settings.\n"
    )
    return "\n".join(lines) + "\n" + low_data_verdict(cells, summary, full)


def _param_ratio(cells: dict, method: str) -> str:
    ratio = _largest_param_ratio(cells, method)
    return "—" if ratio is None else f"{ratio:.2f}"


def _largest_param_ratio(cells: dict, method: str) -> float | None:
    """The method's trainable parameters over ptv2's in the same setting, the largest over the settings."""
    ratios = [
        members[0].row["trainable_params"] / cells[(setting, "ptv2")][0].row["trainable_params"]
        for (setting, label), members in cells.items()
        if label == method and cells.get((setting, "ptv2"))
    ]
    return max(ratios) if ratios else None


def _tail(summary: dict) -> str:
    """The mean, the gap to ptv2 and the mean std of the method just added to ``summary``."""
    method, stats = list(summary.items())[-1]
    if stats is None:
        return "— | — | — |"
    gap = "" if summary.get("ptv2") is None else f"{stats[0] - summary['ptv2'][0]:+.1f}"
    return f"{stats[0]:.1f} | {gap} | {stats[1]:.1f} |"


def low_data_verdict(cells: dict, summary: dict, full: list[str]) -> str:
    """The issue's goal on this protocol: a method ≥ 1.0 point over ptv2 at no more trainable parameters."""
    if not full or summary.get("ptv2") is None:
        return ""
    base, base_std = summary["ptv2"]
    gaps = {m: summary[m][0] - base for m in PUBLISHED_SINCE if summary.get(m)}  # plain prompt-tuning: a baseline
    lean = [m for m in gaps if (_largest_param_ratio(cells, m) or float("inf")) <= 1.0]
    best_lean = max(lean, key=gaps.get) if lean else None
    best_any = max(gaps, key=gaps.get)
    met = best_lean is not None and gaps[best_lean] >= GOAL_POINTS
    text = (
        f"**Goal (a method published since ptv2 ≥ {GOAL_POINTS:.1f} point over it on average at no more trainable "
        "parameters), on this "
        f"low-data protocol: {'met' if met else 'not met'}.** "
    )
    if best_lean:
        text += f"Best at ≤ ptv2's parameters: {best_lean} {gaps[best_lean]:+.1f}. "
    text += f"Best of all: {best_any} {gaps[best_any]:+.1f} (trainable / ptv2 {_param_ratio(cells, best_any)}). "
    steadier = [m for m in gaps if summary[m][1] < base_std]
    text += (
        f"Std across seeds, averaged: ptv2 {base_std:.1f}; lower for {', '.join(steadier)}.\n"
        if steadier
        else f"No method has a lower mean std than ptv2's {base_std:.1f}.\n"
    )
    return text


def cost_table() -> str:
    """Trainable parameters, and step time and peak RSS relative to ptv2 measured in one run."""
    path = results_dir(*EFFICIENCY)
    if not path.exists():
        return ""
    data = json.loads(path.read_text())
    setup, rows = data["setup"], {r["method"]: r for r in data["rows"]}
    paired = {p["methods"][1]: p for p in data.get("paired", []) if p["methods"][0] == "ptv2"}
    base = rows["ptv2"]
    lines = [
        f"Cost of a training step ({setup['machine']}, {setup['threads']} threads, batch {setup['batch']}, length "
        f"{setup['length']}, P={setup['prompt_length']} for every method, median of {setup['steps']} steps), "
        f"{setup['date']}:\n",
        f"```bash\n{setup['command']}\n```\n",
        "| method | trainable params | % of backbone | step / ptv2, paired in one process | step / ptv2, own "
        "process | peak RSS / ptv2 |",
        "|---|---|---|---|---|---|",
    ]
    for method in [m for m in METHODS if m in rows]:
        r = rows[method]
        pair = f"{paired[method]['ratio']:.3f}" if method in paired else ("1" if method == "ptv2" else "—")
        lines.append(
            f"| {method} | {r['trainable_params']:,} | {r['trainable_pct']:.3f} | {pair} | "
            f"{r['step_s'] / base['step_s']:.3f} | {r['peak_rss_mb'] / base['peak_rss_mb']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def since_ptv2(runs: list[Run]) -> str:
    """The section: quality (or the command that fills it), then the cost table."""
    parts = ["## Methods published since P-Tuning v2, head to head\n"]
    quality = quality_table(runs)
    parts.append(
        quality
        or "No quality rows yet: the full table (7 methods x 7 tasks x 3 seeds) is a GPU budget's work, "
        f"`{COMMAND}` (`--dry-run` prints its plan and time); on this CPU `--budget cpu` plans the subsets.\n"
    )
    low_data = low_data_table(runs)
    if low_data:
        parts += ["### On this CPU: three low-data settings\n", LOW_DATA_INTRO, low_data]
    parts.append(cost_table())
    return "\n".join(p for p in parts if p)
