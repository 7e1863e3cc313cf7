"""The runs BENCHMARKS.md is built from: every result file under benchmarks/results/ read into ``Run`` records.

Kept apart from the sections so that each section reads runs the same way: one notion of a run's label, seed,
best evaluation and reason for stopping. ``RESULTS`` is read at call time (``load_runs``, ``results_dir``), so a
test that points it at another directory moves every section with it.
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MAIN_METRIC = {"multirc": "f1a", "conll03": "f1", "squad": "f1"}
# The GPU rounds rerun a run in fp32 when its bf16 attempt fails at start (tag suffix -fp32): the same run label,
# and the round's description says which seeds ran in fp32.
FALLBACK_SUFFIX = "-fp32"


def results_dir(*parts: str) -> Path:
    """A path under ``RESULTS``, looked up at call time so that patching ``RESULTS`` here reaches every section."""
    return RESULTS.joinpath(*parts)


@dataclass
class Run:
    """One training run (round, task, label, seed): its per-evaluation history and, if it finished, its row."""

    round: str
    task: str
    label: str
    seed: int
    history: list[dict]
    row: dict | None = None  # the finished run's row; None when the run was killed before it finished
    setup: dict = field(default_factory=dict)

    @property
    def metric(self) -> str:
        return MAIN_METRIC.get(self.task, "accuracy")

    @property
    def best(self) -> dict:
        return max(self.history, key=lambda h: h[self.metric]) if self.history else {}

    @property
    def stopped_by(self) -> str:
        if self.row is None:
            return "killed (time)"
        return self.row.get("stopped_by") or ("patience" if self.row["epochs_run"] < self.row["epochs"] else "epochs")


def _label(row: dict) -> str:
    """A finished row's run label: method plus tag, the fp32 fallback suffix dropped so reruns join their seed."""
    return (row["method"] + (row.get("tag") or "")).removesuffix(FALLBACK_SUFFIX)


def load_runs() -> list[Run]:
    """Every run under RESULTS: GPU rounds' histories (joined to their finished rows) and CPU files' method rows."""
    runs: list[Run] = []
    for directory in sorted(p for p in RESULTS.iterdir() if p.is_dir()):
        for path in sorted(directory.glob("*.json")):
            data = json.loads(path.read_text())
            if isinstance(data, dict) and "partial" in data:  # a GPU round: finished rows + every run's history
                finished = {}
                for part in data["complete"]:
                    for row in part["rows"]:
                        finished[(row["task"], _label(row), row["seed"])] = (row, part)
                for name, history in data["partial"].items():
                    task, rest = name.split("-", 1)
                    label, seed = rest.rsplit("-", 1)
                    label = re.sub(r"-P\d+$", "", label)  # run directories also carry the prompt length
                    label = label.removesuffix(FALLBACK_SUFFIX)
                    row, part = finished.get((task, label, int(seed)), (None, {}))
                    setup = {k: v for k, v in part.items() if k != "rows"}
                    runs.append(Run(directory.name, task, label, int(seed), history, row, setup))
            elif isinstance(data, (dict, list)) and (isinstance(data, list) or "rows" in data):
                for part in data if isinstance(data, list) else [data]:
                    setup = {k: v for k, v in part.items() if k != "rows"}
                    for row in (r for r in part["rows"] if "task" in r):  # method rows, not efficiency rows
                        run = Run(directory.name, row["task"], _label(row), row["seed"], row["history"], row, setup)
                        if row.get("sweep"):
                            run.label += f"-P{row['prompt_length']}"
                        runs.append(run)
    return sorted(runs, key=lambda r: (r.round, r.task, r.label, r.seed))  # seeds in order, whatever the file order


def epoch(entry: dict) -> str:
    """The (possibly fractional, with --eval-steps) epoch of one evaluation: 5, or 2.4."""
    return f"{round(entry['epoch'], 1):g}"


def pct(values: list[float]) -> str:
    """Fractions as percent: one value alone, several as mean ± std over seeds, none as a dash."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"
