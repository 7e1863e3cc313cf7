"""The appendix of BENCHMARKS.md: one table per round listing every run, under the round's description.

A round's description (hardware, how the machine was shared, the commands) is written once, in the README.md
beside its result files (``benchmarks/results/<round>/README.md``): the JSON holds the numbers, the README how
they were made, and this module only joins the two.
"""

from __future__ import annotations

from report_runs import Run, epoch, results_dir

# The rounds in the order they ran (the appendix lists them so); each one's description is the README.md beside
# its result files.
ROUNDS = [
    "h200-round1",
    "h200-round2",
    "h200-round3",
    "h200-round4",
    "h200-round5",
    "h200-round9",
    "h200-round10",
    "h100-round11",
    "h100-round12",
    "h100-round13",
    "h100-round14",
    "h100-round15",
    "cpu-reparam",
    "cpu-small",
    "cpu-peft",
    "cpu-init",
    "cpu-sst2",
    "cpu-peft-mc",
    "cpu-peft-conll",
    "cpu-peft-rte",
    "cpu-reparam-lr",
    "cpu-nodrop",
    "cpu-depth",
]


def detail(runs: list[Run], round_name: str) -> str:
    """Every run of one round with its whole dev curve, so a reader can check any headline figure against it."""
    lines = ["| task | method | seed | best dev | test | epochs (best / run) | stopped by | wall s | dev per epoch |"]
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for r in sorted((r for r in runs if r.round == round_name), key=lambda r: (r.task, r.label, r.seed)):
        best = r.best
        extra = (
            f", EM {100 * best['em']:.1f}"
            if "em" in best
            else (f", EM {100 * best['exact']:.1f}" if "exact" in best else "")
        )
        test = "—"
        if r.row and r.row.get("test"):
            t = r.row["test"]
            test = f"{r.metric} {100 * t[r.metric]:.1f}" + (f", EM {100 * t['exact']:.1f}" if "exact" in t else "")
        wall = f"{r.row['wall_s']:.0f}" if r.row else f"> {r.history[-1].get('elapsed_s', 0):.0f}"
        curve = " ".join(f"{100 * h[r.metric]:.1f}" for h in r.history)
        lines.append(
            f"| {r.task} | {r.label} | {r.seed} | {r.metric} {100 * best[r.metric]:.1f}{extra} | {test} "
            f"| {epoch(best)} / {epoch(r.history[-1])} | {r.stopped_by} | {wall} | {curve} |"
        )
    return "\n".join(lines)


def round_sections(runs: list[Run]) -> list[str]:
    """One section per round that has runs, in ``ROUNDS`` order (oldest first), not the directories' sort order."""
    rounds = [name for name in ROUNDS if any(r.round == name for r in runs)]
    return [f"### {name}: {description(name)}\n\n{detail(runs, name)}\n" for name in rounds]


def description(round_name: str) -> str:
    """The round's README.md beside its results, its heading dropped and its lines joined into one paragraph."""
    path = results_dir(round_name, "README.md")
    if not path.exists():
        raise SystemExit(f"{path} is missing: every round listed in report_rounds.ROUNDS describes itself there")
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return " ".join(lines)
