"""Re-run the summary table's runs with one command, for a CPU or a GPU budget, and say first how long it takes.

The summary table (``report_summary.SUMMARY``) mixes rounds run on several machines over many sessions. This script
is the single command that re-makes a table of the same shape from scratch: every (task, method) cell of one
budget, 3 seeds each, with ``methods.py`` (the same harness, early stopping on patience), one run after another.

    python benchmarks/reproduce.py --budget cpu --dry-run     # the plan and its estimated time
    python benchmarks/reproduce.py --budget cpu               # runs it into benchmarks/results/reproduce-cpu/
    python benchmarks/reproduce.py --budget gpu --methods since-ptv2 --dry-run   # issue 20's head-to-head

* ``cpu``: the data this 2-core machine can train to convergence: CB, COPA and WSC whole, SST-2 on its first 4,000
  training sentences and CoNLL-2003 on its first 1,000 (their dev sets whole), with ``--backbone-dropout 0``
  (the fused attention kernel; BENCHMARKS.md's dropout study measures what it changes).
* ``gpu``: every task of the table on its full data, ``--mixed-precision bf16 --group-by-length``.

The estimate is read, never typed: the mean wall time of earlier runs of the same task and method on the same kind of
machine (``cpu-*`` or GPU rounds), times the runs planned; a cell without earlier runs says so. Each output file holds
one (task, method) cell; a re-run skips the files that already exist, so an interrupted plan resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from report_runs import HERE, Run, load_runs

METHODS = ["finetune", "ptv2", "prompt-tuning", "ptv1", "peft-prefix"]
# `--methods since-ptv2`: the head-to-head of the methods published after P-Tuning v2 (issue 20), each at methods.py's
# settings; ptv2 and plain prompt-tuning are the baselines every row is read against.
METHOD_SETS = {
    "summary": METHODS,
    "since-ptv2": ["ptv2", "apt", "ptv2-ptp-noise", "ptv2-ptp-adv", "lpt", "prompt-tuning", "prompt-tuning-residual"],
}
SEEDS = "1,2,3"
STEP_RATIOS = HERE / "results" / "cpu" / "since-ptv2-efficiency.json"  # each method's step time / ptv2's, paired
# budget -> (task, methods.py options that pick its data); the data each budget can train to convergence.
PLANS: dict[str, list[tuple[str, list[str]]]] = {
    "cpu": [
        ("cb", []),
        ("copa", []),
        ("wsc", []),
        ("sst2", ["--max-train-samples", "4000", "--group-by-length"]),
        ("conll03", ["--max-train-samples", "1000"]),
    ],
    "gpu": [(task, []) for task in ("cb", "rte", "boolq", "copa", "wsc", "multirc", "sst2", "conll03", "squad")],
}
BUDGET_OPTIONS = {
    "cpu": ["--backbone-dropout", "0"],
    "gpu": ["--mixed-precision", "bf16", "--group-by-length"],
}


def plan(
    budget: str, data_root: Path, out_dir: Path, methods: list[str] | None = None, tasks: list[str] | None = None
) -> list[tuple[str, str, list[str], Path]]:
    """Every cell of the budget (``methods``, ``tasks``: a part of it): (task, method, methods.py command, output)."""
    cells = []
    for task, options in PLANS[budget]:
        if tasks and task not in tasks:
            continue
        for method in methods or METHODS:
            out = out_dir / f"{task}-{method}.json"
            command = [sys.executable, str(HERE / "methods.py"), "--data-root", str(data_root), "--tasks", task]
            command += ["--methods", method, "--seeds", SEEDS, "--pooling", "mean", *options]
            command += [*BUDGET_OPTIONS[budget], "--out", str(out)]
            cells.append((task, method, command, out))
    return cells


def _machine(run: Run) -> str:
    return "cpu" if run.round.startswith("cpu") else "gpu"


def estimate(task: str, method: str, budget: str, runs: list[Run]) -> float | None:
    """Seconds for 3 seeds: earlier runs' mean wall time for this task and method on this kind of machine."""
    walls = [
        r.row["wall_s"]
        for r in runs
        if r.row
        and r.row.get("wall_s")
        and r.task == task
        and r.row["method"] == method
        and _machine(r) == budget
        and not r.row.get("quick")
        and not r.row.get("reported")  # few-shot runs train on 32 examples
    ]
    return 3 * statistics.mean(walls) if walls else None


def step_ratios(path: Path | None = None) -> dict[str, float]:
    """``{method: its train step time / ptv2's}``, measured paired in one process (``efficiency.py --pairs``)."""
    path = path or STEP_RATIOS
    if not path.exists():
        return {}
    paired = json.loads(path.read_text()).get("paired", [])
    return {p["methods"][1]: p["ratio"] for p in paired if p["methods"][0] == "ptv2"}


def describe(cells: list, budget: str) -> str:
    """The plan, one line per cell, with its estimated time and the total.

    A method without earlier runs of a task, but with a measured step ratio to ptv2, is estimated as ptv2's runs of
    that task times the ratio (it assumes as many epochs as ptv2 ran), and the line says so.
    """
    runs, ratios = load_runs(), step_ratios()
    lines, total, unknown = [], 0.0, 0
    for task, method, _, out in cells:
        seconds, how = estimate(task, method, budget, runs), ""
        baseline = estimate(task, "ptv2", budget, runs)
        if seconds is None and method in ratios and baseline is not None:
            seconds, how = baseline * ratios[method], f" (ptv2's runs x step ratio {ratios[method]:.2f})"
        done = " (done)" if out.exists() else ""
        if seconds is None:
            unknown += 1
            lines.append(f"{task:8} {method:14} no earlier {budget} run to estimate from{done}")
        else:
            total += 0 if done else seconds
            lines.append(f"{task:8} {method:14} ~{seconds / 60:5.0f} min{how}{done}")
    lines.append(f"estimated: {total / 3600:.1f} h for the cells with earlier runs; {unknown} cell(s) without")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=sorted(PLANS), required=True)
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out-dir", type=Path, default=None, help="Default: benchmarks/results/reproduce-<budget>.")
    parser.add_argument("--dry-run", action="store_true", help="Print the plan and its estimated time only.")
    parser.add_argument(
        "--methods", default="summary", help="summary (the table's), since-ptv2 (issue 20's), or a comma list."
    )
    parser.add_argument("--tasks", default=None, help="A comma list of the budget's tasks (default: all of them).")
    args = parser.parse_args(argv)
    if not args.data_root.is_dir():
        raise SystemExit(f"no data at {args.data_root}: pass --data-root pointing at the shared data folder")
    methods = METHOD_SETS.get(args.methods) or args.methods.split(",")
    from methods import SETTINGS  # the harness's rows: a name it lacks would fail only when its cell runs

    unknown = [m for m in methods if m not in SETTINGS]
    if unknown:
        raise SystemExit(f"--methods: no harness row {', '.join(unknown)}; choose from {', '.join(SETTINGS)}")
    tasks = args.tasks.split(",") if args.tasks else None
    known = [task for task, _ in PLANS[args.budget]]
    if tasks and set(tasks) - set(known):
        raise SystemExit(f"--tasks: the {args.budget} budget plans {', '.join(known)}")
    suffix = "" if args.methods == "summary" else f"-{args.methods}" if args.methods in METHOD_SETS else "-custom"
    out_dir = args.out_dir or HERE / "results" / f"reproduce-{args.budget}{suffix}"
    cells = plan(args.budget, args.data_root, out_dir, methods, tasks)
    print(describe(cells, args.budget), flush=True)
    if args.dry_run:
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for task, method, command, out in cells:
        if out.exists():
            continue
        print(f"=== {task} {method}: {' '.join(command)}", flush=True)
        if subprocess.run(command).returncode:
            raise SystemExit(f"the {task} {method} runs failed; fix the cause and run the same command again")


if __name__ == "__main__":
    main()
