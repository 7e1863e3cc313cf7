"""The low-resource section: FewGLUE 32-shot (dev32 selects, val reported) and K-shot learning curves.

Its figures are the *reported* metrics: the full validation set scored once with the artifact the
K-example selection split picked (``metrics.json``'s ``reported``). Runs whose rows carry no reported
metrics (the standard protocol) never appear in its tables, and these runs never appear in the dev tables.
The curves' last point, ``full``, is the summary table's full-data cell (its dev metric: there the
validation set both selects and is reported), drawn apart from the K-shot line because the protocol differs.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

from report_runs import Run, pct
from report_summary import FULL, SUMMARY

CURVE_METHODS = ("finetune", "ptv2", "prompt-tuning")
CURVE_COLOURS = {"finetune": "tab:gray", "ptv2": "tab:blue", "prompt-tuning": "tab:orange"}  # the bar plot's
GOAL_K = (16, 32, 64)  # the goal: ptv2 >= fine-tuning at K <= 64
MIN_DRAWS = 5
# FewGLUE averages leave WSC out: its train file holds one label, so its rows measure the data (section text).
FEWGLUE_EXCLUDED = {"wsc"}
FEWGLUE_FINETUNE_ROUND = "cpu-fewglue-ft"  # fine-tuning on the few-shot schedule (FEW_SHOT_SETTINGS)

INTRO = (
    "FewGLUE's fixed files (`python benchmarks/methods.py --fewglue`, benchmarks/README.md): 32 training "
    "examples, the 32-example `dev32` split selects the checkpoint, and the full SuperGLUE validation set is "
    "scored once with the selected artifact (`reported`). Mean ± std over training seeds; the majority class "
    "of the validation set is the floor. A row with fewer than 5 seeds is not yet a result. Prompts train for at "
    "most 60 epochs with patience 10. Fine-tuning in round `cpu-fewglue` ran the harness's full-data schedule (at "
    "most 20 epochs, patience 4: at 32 examples and batch 16, at most 40 optimizer steps; PET fine-tunes for 250), "
    "so read those rows as a lower bound; round `cpu-fewglue-ft` reruns it on the few-shot schedule "
    "(`FEW_SHOT_SETTINGS` in methods.py: at most 100 epochs, the prompts' patience 10). FewGLUE's WSC train file "
    "holds 32 positive examples only (PET trains WSC as span generation, not as a classifier), so the WSC rows "
    "train a classifier on one label: the prompts predict True (almost) everywhere (31.2 % of dev32 and 36.5 % of "
    "val are True), and training now warns about such a set. Those rows measure the data, not the methods.\n"
)
CURVES_INTRO = (
    "K-shot draws (`python benchmarks/methods.py --few-shot K`, benchmarks/README.md): each seed draws K training "
    "and K selection examples from the training file (stratified by label; sentences for CoNLL-2003), the "
    "selection split alone stops training and picks the checkpoint, and the full validation set is scored once. "
    "Schedules as for FewGLUE above, backbone dropout 0. `full` is the summary table's full-data cell, from its "
    "own round: the standard protocol (the whole training file; the validation set selects and is reported), "
    "so it is an upper reference, not a point of the same protocol; the plot draws it apart from the line.\n"
)


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
        if protocol != "FewGLUE 32":
            continue  # K-shot draws: the curve table below
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


def _stats(values: list[float]) -> tuple[float, float, int]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)


def full_points(runs: list[Run], tasks) -> dict:
    """``{task: {method: (mean, std, n)}}``: the summary table's full-data cells, dev metric in percent."""
    points: dict = defaultdict(dict)
    for task, data, cells in SUMMARY:
        if data != FULL or task not in tasks:
            continue
        for method, (round_name, label) in cells.items():
            values = [100 * r.best[r.metric] for r in runs if (r.round, r.label, r.task) == (round_name, label, task)]
            if method in CURVE_METHODS and values:
                points[task][method] = _stats(values)
    return points


def curve_points(runs: list[Run]) -> dict:
    """``{task: {method: [(K, mean, std, n)]}}`` of the K-shot rows' reported metric, in percent, K ascending.

    A method without K-shot rows of its own at ``full`` gets the summary table's full-data cell there.
    """
    grouped: dict = defaultdict(list)
    seen: dict = {}
    for run in fewshot_runs(runs):
        if run.row.get("few_shot"):
            key = (run.task, run.label, run.row["few_shot"])
            if (*key, run.seed) in seen:  # the same draw twice would count as two and shrink the std
                raise SystemExit(
                    f"{run.task} {run.label} K={key[2]} seed {run.seed} is in rounds {seen[(*key, run.seed)]} and "
                    f"{run.round}: keep one of them"
                )
            seen[(*key, run.seed)] = run.round
            grouped[key].append(100 * run.row["reported"][run.metric])
    curves: dict = defaultdict(lambda: defaultdict(list))
    for (task, label, k), values in sorted(grouped.items(), key=lambda item: (*item[0][:2], _order(item[0][2]))):
        curves[task][label].append((k, *_stats(values)))
    for task, methods in full_points(runs, set(curves)).items():
        for label, stats in methods.items():
            if label in curves[task] and all(p[0] != "full" for p in curves[task][label]):
                curves[task][label].append(("full", *stats))
    return curves


def _order(k) -> float:
    """K in ascending order; ``full`` (the whole training file, standard protocol) last."""
    return float("inf") if k == "full" else float(k)


def curve_table(curves: dict, majority: dict) -> str:
    """Per task and method, the reported metric at each K: ``mean ± std (draws)``; the task's majority class."""
    if not curves:
        return ""
    ks = sorted({p[0] for methods in curves.values() for pts in methods.values() for p in pts}, key=_order)
    header = "| task | method | " + " | ".join(f"K={k}" for k in ks) + " | majority class |"
    lines = [header, "|---|---|" + "---|" * (len(ks) + 1)]
    for task, methods in sorted(curves.items()):
        floor = f"{majority[task]:.1f}" if task in majority else "—"
        for label, points in sorted(methods.items()):
            at = {p[0]: p for p in points}
            cells = [f"{at[k][1]:.1f} ± {at[k][2]:.1f} ({at[k][3]})" if k in at else "—" for k in ks]
            lines.append(f"| {task} | {label} | " + " | ".join(cells) + f" | {floor} |")
    return "\n".join(lines) + "\n"


def majority_classes(runs: list[Run]) -> dict:
    """``{task: percent}``: the validation set's majority class the K-shot rows recorded, for accuracy tasks only
    (an early CoNLL-2003 row recorded a label frequency, which is no floor for F1)."""
    rows = [r for r in fewshot_runs(runs) if r.row.get("few_shot") and r.metric == "accuracy"]
    found = {r.task: 100 * r.row["majority"] for r in rows if r.row.get("majority") is not None}
    return dict(sorted(found.items()))


def _gaps(methods: dict) -> dict:
    """``{K: (ptv2 mean − finetune mean, ptv2 std, finetune std, min draws)}`` where both methods have the K."""
    ptv2 = {p[0]: p for p in methods.get("ptv2", [])}
    finetune = {p[0]: p for p in methods.get("finetune", [])}
    shared = sorted(set(ptv2) & set(finetune), key=_order)
    return {
        k: (ptv2[k][1] - finetune[k][1], ptv2[k][2], finetune[k][2], min(ptv2[k][3], finetune[k][3])) for k in shared
    }


def goal_verdict(curves: dict, majority: dict | None = None) -> str:
    """The issue's goal, computed (ptv2 ≥ fine-tuning at K ≤ 64 on average, smaller std), and where lines cross.

    Points where neither method beats the task's majority class are named: their gap is noise, not a lead.
    """
    at_goal = [
        (task, k, *gap)
        for task, methods in sorted(curves.items())
        for k, gap in _gaps(methods).items()
        if k in GOAL_K and gap[3] >= MIN_DRAWS
    ]
    if not at_goal:
        return ""
    gap = statistics.mean(g[2] for g in at_goal)
    ptv2_std, finetune_std = statistics.mean(g[3] for g in at_goal), statistics.mean(g[4] for g in at_goal)
    met = gap >= 0 and ptv2_std < finetune_std
    points = ", ".join(f"{t} K={k}" for t, k, *_ in at_goal)
    noun = "points" if len(at_goal) > 1 else "point"
    text = (
        f"**Goal (ptv2 ≥ fine-tuning at K ≤ 64 on average over the tasks, with a smaller std across draws): "
        f"{'met' if met else 'not met'}.** Over the {len(at_goal)} {noun} with ≥ {MIN_DRAWS} draws of both ({points}), "
        f"ptv2 − fine-tuning is {gap:+.1f} points on average, and the std across draws averages {ptv2_std:.1f} for "
        f"ptv2 against {finetune_std:.1f} for fine-tuning."
    )
    text += _below_floor(curves, at_goal, majority or {}) + "\n\n"
    for task, methods in sorted(curves.items()):
        gaps = _gaps(methods)
        if gaps:
            text += f"- {task}, ptv2 − fine-tuning by K: " + ", ".join(f"{k} {g[0]:+.1f}" for k, g in gaps.items())
            text += _crossings(gaps) + "\n"
    return text + "\n"


def _below_floor(curves: dict, at_goal: list, majority: dict) -> str:
    """Name the goal's points where neither ptv2 nor fine-tuning reaches the majority class."""
    means = {(t, m, p[0]): p[1] for t, methods in curves.items() for m, pts in methods.items() for p in pts}
    floor = [
        f"{t} K={k}"
        for t, k, *_ in at_goal
        if t in majority and all(means[(t, m, k)] < majority[t] for m in ("ptv2", "finetune"))
    ]
    if not floor:
        return ""
    return (
        f" At {len(floor)} of them ({', '.join(floor)}) neither method reaches the majority class, so the gap there "
        "is noise between two models that have not learnt the task."
    )


def _crossings(gaps: dict) -> str:
    """Where the sign of ptv2 − fine-tuning changes along K (the lines cross), in words."""
    ks = list(gaps)
    crossed = [(a, b) for a, b in zip(ks, ks[1:], strict=False) if (gaps[a][0] >= 0) != (gaps[b][0] >= 0)]
    if not crossed:
        leader = "ptv2" if gaps[ks[0]][0] >= 0 else "fine-tuning"
        return f"; {leader} leads at every K."
    return "; the lines cross " + ", and ".join(f"between K={a} and K={b}" for a, b in crossed) + "."


def fewglue_verdict(runs: list[Run]) -> str:
    """FewGLUE's fixed files, averaged over the tasks where both have ≥ 5 seeds (WSC left out: one label)."""
    reported: dict = defaultdict(list)
    compared = ("ptv2", "finetune")
    for run in fewshot_runs(runs):
        if run.row.get("fewglue") and run.task not in FEWGLUE_EXCLUDED:
            if run.label == "ptv2" or (run.label == "finetune" and run.round == FEWGLUE_FINETUNE_ROUND):
                reported[(run.task, run.label)].append(100 * run.row["reported"][run.metric])
    tasks = sorted({t for t, _ in reported if all(len(reported.get((t, m), [])) >= MIN_DRAWS for m in compared)})
    if not tasks:
        return ""
    gap = statistics.mean(_stats(reported[(t, "ptv2")])[0] - _stats(reported[(t, "finetune")])[0] for t in tasks)
    ptv2_std = statistics.mean(_stats(reported[(t, "ptv2")])[1] for t in tasks)
    finetune_std = statistics.mean(_stats(reported[(t, "finetune")])[1] for t in tasks)
    return (
        f"Over FewGLUE's {', '.join(tasks)} (WSC left out, see above), ptv2 − fine-tuning ({FEWGLUE_FINETUNE_ROUND}) "
        f"is {gap:+.1f} points on the reported validation metric on average; the std across seeds averages "
        f"{ptv2_std:.1f} for ptv2 against {finetune_std:.1f} for fine-tuning.\n"
    )


def fewshot_section(runs: list[Run], plot: str | None) -> str:
    """The whole low-resource section: FewGLUE table and verdict, then the K-shot curves, their table and the goal."""
    curves = curve_points(runs)
    parts = ["## Low-resource: FewGLUE 32-shot and K-shot learning curves\n", INTRO, fewshot_table(runs)]
    parts.append(fewglue_verdict(runs))
    if curves:
        majority = majority_classes(runs)
        parts += ["### K-shot learning curves\n", CURVES_INTRO, curve_table(curves, majority)]
        parts.append(goal_verdict(curves, majority))
        parts.append(f"![{plot}]({plot})\n" if plot else "")
    return "\n".join(p for p in parts if p)


def plot_learning_curves(runs: list[Run], plt, path) -> bool:
    """One panel per task: the reported metric against K (log axis), a line per method, a band of ± one std."""
    curves = curve_points(runs)
    if not curves:
        return False
    floors = majority_classes(runs)
    fig, axes = plt.subplots(1, len(curves), figsize=(max(4.2 * len(curves), 6.0), 3.8), squeeze=False)
    for ax, (task, methods) in zip(axes[0], sorted(curves.items()), strict=True):
        numeric = [p[0] for points in methods.values() for p in points if p[0] != "full"]
        full_at = 2 * max(numeric, default=256)  # where "full" sits on the log axis
        for label, points in sorted(methods.items()):
            shots = [p for p in points if p[0] != "full"]
            ks, means = [p[0] for p in shots], [p[1] for p in shots]
            draws = f"{min(p[3] for p in shots)}-{max(p[3] for p in shots)}" if shots else "0"
            colour = {"color": CURVE_COLOURS[label]} if label in CURVE_COLOURS else {}
            (line,) = ax.plot(ks, means, marker="o", label=f"{label} (draws {draws})", **colour)
            band = ([p[1] - p[2] for p in shots], [p[1] + p[2] for p in shots])
            ax.fill_between(ks, *band, alpha=0.2, color=line.get_color())
            for p in points:
                if p[0] == "full":  # another protocol: a hollow marker with its std, not joined to the line
                    ax.errorbar([full_at], [p[1]], yerr=[p[2]], fmt="o", mfc="none", color=line.get_color())
        if task in floors:
            ax.axhline(floors[task], color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log", base=2)
        ticks = sorted({*numeric, full_at})
        ax.set_xticks(ticks, [f"{t}" if t != full_at else "full" for t in ticks], fontsize=7)
        ax.set_xlabel("K (training examples drawn; as many more select)")
        ax.set_ylabel("metric on the full validation set (%)")
        ax.set_title(f"{task}: K-shot learning curve", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(
        "MiniLM, one draw per seed\nband: ± one std over draws; hollow: full data, standard protocol; dotted: majority",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
