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

METHODS = ["ptv2", "apt", "ptv2-ptp-noise", "ptv2-ptp-adv", "lpt", "prompt-tuning", "prompt-tuning-residual"]
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
    parts.append(cost_table())
    return "\n".join(p for p in parts if p)
