"""The low-resource section: FewGLUE 32-shot (dev32 selects, val reported) and K-shot draws.

Its figures are the *reported* metrics: the full validation set scored once with the artifact the
32-example selection split picked (``metrics.json``'s ``reported``). Runs whose rows carry no reported
metrics (the standard protocol) never appear here, and these runs never appear in the dev tables.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

from report_runs import Run, pct


def fewshot_runs(runs: list[Run]) -> list[Run]:
    """Finished runs of a low-resource protocol (FewGLUE files or --few-shot)."""
    return [r for r in runs if r.row and r.row.get("reported") and (r.row.get("fewglue") or r.row.get("few_shot"))]


def fewshot_table(runs: list[Run]) -> str:
    """Per task and method: the reported metric (mean ± std over seeds), the selection split's, the floor."""
    chosen = fewshot_runs(runs)
    if not chosen:
        return "No low-resource runs yet.\n"
    groups: dict = defaultdict(list)
    for run in chosen:
        protocol = "FewGLUE 32" if run.row.get("fewglue") else f"K={run.row['few_shot']}"
        groups[(run.task, protocol, run.label, run.round)].append(run)
    lines = [
        "| task | protocol | method | round | seeds | reported (val) | selection (dev32) | majority class "
        "| stopped by | backbone dropout |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (task, protocol, label, round_name), members in sorted(groups.items()):
        metric = members[0].metric
        reported = [m.row["reported"][metric] for m in members]
        selected = [m.row["best"][metric] for m in members]
        stops = ", ".join(sorted({m.stopped_by for m in members}))
        majority = statistics.mean(m.row["majority"] for m in members if m.row.get("majority") is not None)
        dropout = members[0].row.get("backbone_dropout")
        lines.append(
            f"| {task} | {protocol} | {label} | {round_name} | {len(members)} | {pct(reported)} | {pct(selected)} "
            f"| {100 * majority:.1f} | {stops} | {'checkpoint' if dropout is None else dropout} |"
        )
    return "\n".join(lines) + "\n"
