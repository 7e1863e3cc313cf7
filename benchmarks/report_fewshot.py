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


def curve_points(runs: list[Run]) -> dict:
    """``{task: {method: [(K, mean, std, n)]}}`` of the K-shot rows' reported metric, in percent, K ascending."""
    grouped: dict = defaultdict(list)
    for run in fewshot_runs(runs):
        if run.row.get("few_shot"):
            grouped[(run.task, run.label, run.row["few_shot"])].append(100 * run.row["reported"][run.metric])
    curves: dict = defaultdict(lambda: defaultdict(list))
    for (task, label, k), values in sorted(grouped.items(), key=lambda item: (*item[0][:2], _order(item[0][2]))):
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        curves[task][label].append((k, statistics.mean(values), spread, len(values)))
    return curves


def _order(k) -> float:
    """K in ascending order; ``full`` (the whole training file, standard protocol) last."""
    return float("inf") if k == "full" else float(k)


def plot_learning_curves(runs: list[Run], plt, path) -> bool:
    """One panel per task: the reported metric against K (log axis), a line per method, a band of ± one std."""
    curves = curve_points(runs)
    if not curves:
        return False
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.6), squeeze=False)
    for ax, (task, methods) in zip(axes[0], sorted(curves.items()), strict=True):
        numeric = [p[0] for points in methods.values() for p in points if p[0] != "full"]
        full_at = 2 * max(numeric, default=256)  # where "full" sits on the log axis
        for label, points in sorted(methods.items()):
            ks = [full_at if p[0] == "full" else p[0] for p in points]
            means = [p[1] for p in points]
            low = [p[1] - p[2] for p in points]
            high = [p[1] + p[2] for p in points]
            ax.plot(ks, means, marker="o", label=f"{label} (n={min(p[3] for p in points)}-{max(p[3] for p in points)})")
            ax.fill_between(ks, low, high, alpha=0.2)
        ax.set_xscale("log", base=2)
        ticks = sorted({*numeric, full_at})
        ax.set_xticks(ticks, [f"{t}" if t != full_at else "full" for t in ticks], fontsize=7)
        ax.set_xlabel("K (training examples drawn; as many more select)")
        ax.set_ylabel("reported metric on the full validation set (%)")
        ax.set_title(f"{task}: K-shot learning curve", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle("MiniLM, one draw per seed (band: ± one std over draws)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
