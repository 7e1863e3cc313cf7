"""Regenerate BENCHMARKS.md and benchmarks/plots/*.png from the result files under benchmarks/results/.

Nothing in that page is typed by hand: every figure is read from a JSON file that
one of the benchmark scripts wrote (the command is printed beside it). Which runs
make the headline table is configuration (``HEADLINE``); their numbers are read.

    python benchmarks/report.py            # rewrites BENCHMARKS.md and the plots
    python benchmarks/report.py --check    # exit 1 if BENCHMARKS.md is not what the results give
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ptuning.io import atomic_write_text

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PLOTS = HERE / "plots"
OUT = HERE.parent / "BENCHMARKS.md"
MAIN_METRIC = {"multirc": "f1a", "conll03": "f1", "squad": "f1"}
QUICK_ROUND = "cpu"  # the directory --quick writes to: its sweep checks the harness, it is not a result
MAJORITY = {"cb": 50.0, "rte": 52.7, "copa": 55.0, "wsc": 63.5, "sst2": 50.9, "boolq": 61.3}
ROUNDS = {
    "h200-round1": "[CLS] pooling, seed 42, batch 16, max length 256, one process per run",
    "h200-round2": "mean pooling, seeds 1-3, batch 16, max length 256, 18 runs sharing the GPU",
    "h200-round3": "mean pooling, seed 1, 6 runs sharing the GPU, each capped at 185 s",
    "h200-round4": "mean pooling, seed 1, 12 runs sharing the GPU, each capped at 6.3 min of training "
    "(`--max-minutes 6.3`) and killed at 555 s",
    "h200-round5": "seed 1, 2 runs sharing the GPU, an 8-epoch schedule each, killed at 195 s",
    "h200-round9": "mean pooling, seed 1, fp32, 6 runs sharing the GPU under CUDA MPS (so their kernels run "
    "concurrently), each capped at 7 min of training (`--max-minutes 7`) and killed at 535 s; CoNLL-2003 on a "
    "30-epoch schedule for the prompts (patience 5) and 10 for fine-tuning (patience 3), SQuAD patience 4 / 2",
    "h200-round10": "mean pooling, seed 1, fp32, the ptv2 prompt-length sweep on RTE (`--prompt-length P --tag=-PP`, "
    "P in 1, 5, 20, 50, 100), 5 runs sharing the GPU under CUDA MPS, each capped at 1.8 min of training and 30 "
    "epochs (patience 10)",
    "h100-round11": "one H100, mean pooling, seed 1, bf16 autocast (`--mixed-precision bf16`), 6 processes sharing "
    "the GPU under CUDA MPS, each capped at 7.6 min of training and killed at 560 s: CoNLL-2003 prompts on a 25-epoch "
    "schedule (patience 5); MultiRC with `--group-by-length`, fine-tuning 8 epochs (patience 2), ptv2 at lr 2e-2, 20 "
    "epochs (patience 3); CB and RTE ptv2 with `--prefix-init-std 1.0`, seeds 1-3 one after another, fp32",
    "h100-round12": "the same setup as h100-round11 (one H100, bf16, seed 1, CUDA MPS), 5 processes, each capped at "
    "5.9 min of training and killed at 380 s: CoNLL-2003 prompt tuning on a 40-epoch schedule (patience 5); MultiRC "
    "ptv2 at lr 5e-3 and 1e-2, 20 epochs (patience 5), grouped by length; RTE ptv1 and ptv2-reparam at the harness "
    "defaults, seeds 1-3 one after another, 1.7 min cap per run",
    "h100-round13": "the same setup as h100-round11 (one H100, bf16), RTE ptv2-reparam at lr 1e-3 (`--lr 1e-3 "
    "--tag=-lr1e-3`), seeds 1-3 side by side, 2.4 min cap per run",
    "h100-round14": "the same setup as h100-round11 (one H100, bf16, CUDA MPS), 18 processes, each capped at 7.5 min "
    "of training and killed at 555 s. GLUE SST-2 on the full 67k training set, evaluated every 400 steps "
    "(`--eval-steps 400`, patience counts evaluations), grouped by length: fine-tuning 3 epochs (patience 4) and ptv2 "
    "10 epochs (patience 6), seeds 1-3. BoolQ (the val file split 80/20 by a hash of the passage: 2,642 train, 628 "
    "dev questions): fine-tuning 10 epochs (patience 3) and ptv2 30 epochs (patience 8), seeds 1-3; fine-tuning "
    "seed 3 and ptv2 seed 1 ran in fp32, because their bf16 attempts crashed at start, reading the split file "
    "while another run was still writing it (a harness race, fixed since: the split is now written atomically). "
    "The CoNLL-2003 prompt-length sweep on full data (P in 1, 5, 20, 50, `--prompt-length P --tag=-PP`; P=100 is "
    "h100-round11's ptv2-e25) on round 11's 25-epoch schedule (patience 5, lr 2e-2). `ptv2-reparam` at lr 5e-4 "
    "(`--tag=-lr5e-4`), 40 epochs, patience 8, CB and RTE, seeds 1-3 one after another",
    "h100-round15": "the same setup as h100-round11 (one H100, bf16, CUDA MPS), 18 processes, each capped at 4.5 min "
    "of training and killed at 295 s (none reached the cap): prompt-tuning, ptv1 and ptv2-reparam (its default lr "
    "5e-4) at the harness defaults on BoolQ (30 epochs, patience 8, seeds 1-3 side by side), COPA and WSC (seeds "
    "1-3 one after another); BoolQ ptv2 with P=50 (`--prompt-length 50 --tag=-P50`), seeds 1-3",
    "cpu-reparam": "this 2-core CPU, mean pooling, seeds 1-3 one after another, batch 16, max length 256, "
    "patience 5, `--max-minutes 12`",
    "cpu-small": "this 2-core CPU, mean pooling, seeds 1-3 one after another, harness defaults (batch 16, max "
    "length 256); other benchmark jobs shared the CPU at times (WSC ptv2 seeds 2-3 ran in a second process "
    "beside seed 1), so wall times are inflated",
    "cpu-peft": "this 2-core CPU, PEFT 0.21.2 prefix tuning under transformers 5.23 (`--peft-python`), one thread "
    "per run (seed 1 in session 3; seeds 2 and 3 side by side later; COPA not run). PEFT drops BERT's "
    "`token_type_ids` (its warning: 'Token type ids are not supported for parameter efficient tuning'), so its "
    "sentence pairs lose the segment embedding",
    "cpu-init": "this 2-core CPU, one thread per run, two runs side by side: ptv2 with the prefix started at std 1.0 "
    "(`--prefix-init-std 1.0`, nn.Embedding's default, which PEFT and the official code keep) against our default "
    "0.02, harness defaults otherwise (lr 1e-2, P=20, patience 10)",
    "cpu-sst2": "this 2-core CPU, GLUE SST-2 on its first 4,000 training sentences (`--max-train-samples 4000`; a "
    "fine-tuning epoch over all 67k would take about 30 min here, extrapolated from the subset's 110 s) scored on "
    "the full 872-sentence dev set, `--group-by-length`, batch 32, max length 128, one thread per run. Fine-tuning "
    "seeds 1-3 (20-epoch schedule, patience 4, 25-min cap); ptv2 seeds 1-3 on a 20-epoch schedule (`--max-epochs 20 "
    "--patience 5 --tag=-e20`, 30-min cap); a first seed-1 ptv2 run on the harness's 60-epoch schedule (patience 5, "
    "28-min cap); PEFT 0.21.2 prefix tuning (methods.py run by the transformers-5.23 environment's interpreter), "
    "seeds 1-3 on the ptv2-e20 schedule (27-min cap); then ptv2-e20 with the prefix started at PEFT's "
    "std 1.0 (`--prefix-init-std 1.0 --tag=-e20-init1`), seeds 1-2 side by side (20-min cap); last, in a later session, "
    "ptv2 on the same schedule without early stopping (`--patience 20 --max-minutes 27 --tag=-e20-nostop`), PEFT's "
    "cap, seeds 1-2 one after another beside one other run; then the same with the real tokens numbered from P as "
    "PEFT's cache does (`--shift-positions --tag=-e20-nostop-shift`, a diagnostic), seeds 1-2 side by side, 22-min "
    "cap. In session 8, after `peft_parity.py` showed PEFT's prefix is ours with the real tokens numbered from P: "
    "ptv2-e20 with both of PEFT's settings (`--prefix-init-std 1.0 --shift-positions --tag=-e20-init1-shift`, "
    "PEFT's 27-min cap), seeds 1-2 side by side, then seed 3 beside `ptv2-e20-init1` seed 3 (its seeds 1-2's "
    "20-min cap); then the positions alone on the same schedule (`--shift-positions --tag=-e20-shift`, 27-min cap), "
    "seeds 1-2 side by side and seed 3 alone. Two to four runs "
    "shared the 2 cores at any time, and a CPU smoke test of another script shared them for 7 minutes during "
    "fine-tuning seed 1 and the 60-epoch ptv2 run, so wall times are inflated unevenly and the time cap ended some "
    "runs (`stopped by`)",
    "cpu-peft-mc": "this 2-core CPU, PEFT 0.21.2 prefix tuning under transformers 5.23 (methods.py run by that "
    "environment's interpreter) on COPA and WSC at the harness defaults (P=20, lr 1e-2, patience 10, batch 16, max "
    "length 256), seeds one after another, 25-min cap per run, one thread, beside one other run: the same setup as "
    "cpu-small's fine-tuning and ptv2 rows",
    "cpu-peft-conll": "this 2-core CPU, CoNLL-2003 on its first 1,000 training sentences (`--max-train-samples "
    "1000`) scored on the full dev file: PEFT 0.21.2 prefix tuning (transformers 5.23, `--peft-python`) and ptv2 "
    "side by side, one thread each, seeds one pair after another; both P=100, lr 2e-2, batch 16, a 30-epoch "
    "schedule (patience 5) capped at 32 min of training; the cap ended some runs with dev F1 still rising, patience "
    "the others (`stopped by`): a comparison on equal data and time, not of converged runs. Only ptv2 has a test F1: these PEFT "
    "runs predate the harness's test pass for peft-prefix rows (its best-dev weights kept in memory). Fine-tuning, "
    "added in a later session, ran the same command at its own lr 5e-5 (no `--lr`), one thread beside one other run",
    "cpu-peft-rte": "this 2-core CPU, SuperGLUE RTE on its first 1,000 training examples (`--max-train-samples 1000`) "
    "scored on the full 277-example dev set, `--group-by-length`: PEFT 0.21.2 prefix tuning (transformers 5.23, "
    "`--peft-python`) and ptv2 side by side, one thread each, seeds one pair after another; both at the harness "
    "defaults (P=20, lr 1e-2, batch 16, max length 256) on a 20-epoch schedule (patience 5) capped at 22 min of "
    "training (no run reached it: patience ended all). A full-data RTE epoch took more than 6.5 min here, so the "
    "full task did not fit. On 1,000 examples neither prefix learns the task: both stay at the majority class's "
    "52.7 % within a point, the dev accuracy falling below it in most epochs, so this round shows that the PEFT "
    "row runs on RTE under the same rule, not which method is better there",
    "cpu-reparam-lr": "this 2-core CPU, `ptv2-reparam` at learning rates 1e-4 and 5e-4 (see 'Why the MLP "
    "reparameterisation diverges'), seeds 1-3 at 1e-4 and seed 1 at 5e-4 (the rest cut for time), one thread, "
    "each run capped at 6 min of training (`--max-minutes 6`): all of them were still improving when the cap hit",
    "cpu-nodrop": "this 2-core CPU, ptv2 with every dropout rate inside the backbone set to 0 (`--backbone-dropout 0`), "
    "otherwise the command of an earlier CPU row: SST-2's 4k subset as cpu-sst2's ptv2-e20 (20 epochs, patience 5, "
    "30-min cap, grouped by length), CB as cpu-init's ptv2 and COPA and WSC as cpu-small's ptv2 (harness defaults); "
    "one thread per run, seeds one after another, always two runs side by side (each other, or cpu-peft-conll's "
    "fine-tuning rows)",
}
# Rounds run with the same hardware, precision and sharing as an earlier one: the gap table compares across them.
SAME_SETUP = {f"h100-round{n}": "h100-round11" for n in (12, 13, 14, 15)}
# A sweep's point taken from an earlier run of the same setup and schedule: (sweep round, task) -> [(round, label)].
SWEEP_JOIN = {("h100-round14", "conll03"): [("h100-round11", "ptv2-e25")]}
# The GPU rounds rerun a run in fp32 when its bf16 attempt fails at start (tag suffix -fp32): the same run label,
# and the round's description says which seeds ran in fp32.
FALLBACK_SUFFIX = "-fp32"
# (task, round, method label) of the runs the headline table shows, best converged evidence first.
HEADLINE = [
    ("cb", "h200-round2", ["finetune", "ptv2", "prompt-tuning"]),
    ("cb", "h200-round4", ["ptv1", "ptv2-reparam"]),
    ("cb", "cpu-reparam", ["ptv2-reparam"]),
    ("cb", "cpu-peft", ["peft-prefix"]),
    ("cb", "cpu-init", ["ptv2-init1", "ptv2"]),
    ("cb", "h100-round11", ["ptv2-init1"]),
    ("cb", "cpu-reparam-lr", ["ptv2-reparam-lr1e-4", "ptv2-reparam-lr5e-4"]),
    ("cb", "h100-round14", ["ptv2-reparam-lr5e-4"]),
    ("cb", "cpu-nodrop", ["ptv2-nodrop"]),
    ("rte", "h200-round2", ["finetune", "ptv2", "prompt-tuning"]),
    ("rte", "h200-round4", ["ptv2-reparam"]),
    ("rte", "h100-round11", ["ptv2-init1"]),
    ("rte", "h100-round12", ["ptv1", "ptv2-reparam"]),
    ("rte", "h100-round13", ["ptv2-reparam-lr1e-3"]),
    ("rte", "h100-round14", ["ptv2-reparam-lr5e-4"]),
    ("rte", "cpu-peft-rte", ["ptv2-n1000", "peft-prefix-n1000"]),
    ("boolq", "h100-round14", ["finetune-e10", "ptv2-e30"]),
    ("boolq", "h100-round15", ["ptv2-P50", "prompt-tuning", "ptv1", "ptv2-reparam"]),
    ("sst2", "h100-round14", ["finetune-e3", "ptv2-e10"]),
    (
        "sst2",
        "cpu-sst2",
        [
            "finetune",
            "ptv2-e20",
            "ptv2",
            "peft-prefix-e20",
            "ptv2-e20-init1",
            "ptv2-e20-nostop",
            "ptv2-e20-nostop-shift",
            "ptv2-e20-shift",
            "ptv2-e20-init1-shift",
        ],
    ),
    ("sst2", "cpu-nodrop", ["ptv2-e20-nodrop"]),
    ("copa", "cpu-small", ["finetune", "ptv2"]),
    ("copa", "h200-round3", ["finetune", "ptv2"]),
    ("copa", "h100-round15", ["prompt-tuning", "ptv1", "ptv2-reparam"]),
    ("copa", "cpu-peft-mc", ["peft-prefix"]),
    ("copa", "cpu-nodrop", ["ptv2-nodrop"]),
    ("wsc", "cpu-small", ["finetune", "ptv2"]),
    ("wsc", "h200-round3", ["finetune", "ptv2"]),
    ("wsc", "h100-round15", ["prompt-tuning", "ptv1", "ptv2-reparam"]),
    ("wsc", "cpu-peft-mc", ["peft-prefix"]),
    ("wsc", "cpu-nodrop", ["ptv2-nodrop"]),
    ("multirc", "h100-round11", ["finetune-e8", "ptv2-lr2e-2-e20"]),
    ("multirc", "h100-round12", ["ptv2-lr1e-2-e20", "ptv2-lr5e-3-e20"]),
    ("multirc", "h200-round4", ["finetune", "ptv2"]),
    ("conll03", "h200-round9", ["finetune-e10", "ptv2-e30", "prompt-tuning-e30"]),
    ("conll03", "h100-round11", ["ptv2-e25", "prompt-tuning-e25"]),
    ("conll03", "h100-round12", ["prompt-tuning-e40"]),
    ("conll03", "h100-round14", ["ptv2-P50"]),
    ("conll03", "h200-round4", ["finetune", "ptv2", "ptv2-lr2e-2", "prompt-tuning"]),
    ("conll03", "h200-round5", ["ptv2-lr2e-2-e8", "prompt-tuning-e8"]),
    ("conll03", "cpu-peft-conll", ["finetune-n1000", "ptv2-n1000", "peft-prefix-n1000"]),
    ("squad", "h200-round9", ["finetune-e10", "ptv2-e30", "prompt-tuning-e30"]),
    ("squad", "h200-round4", ["finetune", "ptv2", "prompt-tuning"]),
]


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


@dataclass
class Run:
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
    return (row["method"] + (row.get("tag") or "")).removesuffix(FALLBACK_SUFFIX)


def load_runs() -> list[Run]:
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
    if not values:
        return "—"
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def headline(runs: list[Run]) -> str:
    lines = [
        "| task | method | runs | seeds | dev metric | test metric | best epoch / run | stopped by | P | lr |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, round_name, labels in HEADLINE:
        for label in labels:
            group = [r for r in runs if (r.round, r.task, r.label) == (round_name, task, label)]
            if not group:
                continue
            metric = group[0].metric
            dev = pct([r.best[metric] for r in group])
            tests = [r.row["test"][metric] for r in group if r.row and r.row.get("test")]
            test = pct(tests) if tests else ("not measured" if task in ("conll03", "squad") else "— (no test set)")
            epochs = ", ".join(f"{epoch(r.best)}/{epoch(r.history[-1])}" for r in group)
            rows = [r.row for r in group if r.row]
            p = rows[0].get("prompt_length", "—") if rows else "—"
            lr = f"{rows[0]['lr']:g}" if rows else "—"
            lines.append(
                f"| {task} | {label} | {round_name} | {','.join(str(r.seed) for r in group)} | {metric} {dev} "
                f"| {test} | {epochs} | {', '.join(sorted({r.stopped_by for r in group}))} | {p} | {lr} |"
            )
    return "\n".join(lines)


def setup(round_name: str) -> str:
    return SAME_SETUP.get(round_name, round_name)


def gaps(runs: list[Run]) -> str:
    """Per task: fine-tuning against the best P-Tuning v2 row of the same setup (test where both have one).

    Fine-tuning's row is the first one HEADLINE lists for the task (best evidence first); comparing within one
    round (or rounds SAME_SETUP joins) keeps the hardware, precision and sharing the same on both sides.
    """
    lines = [
        "| task | round | finetune row | finetune | best ptv2 row | ptv2 | ptv2 − finetune | on |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task in dict.fromkeys(t for t, _, _ in HEADLINE):
        groups: dict[tuple[str, str], list[Run]] = {}
        for t, round_name, labels in HEADLINE:
            for label in labels if t == task else []:
                group = [r for r in runs if (r.round, r.task, r.label) == (round_name, task, label)]
                if group:
                    groups[(round_name, label)] = group
        ft_key = next((k for k in groups if k[1].startswith("finetune")), None)
        if ft_key is None:
            continue
        finetune = groups[ft_key]

        def score(group: list[Run], split: str) -> float | None:
            if split == "test":
                tests = [r.row["test"][r.metric] for r in group if r.row and r.row.get("test")]
                return statistics.mean(tests) if len(tests) == len(group) else None
            return statistics.mean(r.best[r.metric] for r in group)

        candidates: dict[tuple[str, str], float] = {}
        for split in ("test", "dev"):  # test when fine-tuning and some ptv2 row both have one
            if split == "dev" or score(finetune, "test") is not None:
                scored = {
                    k: score(g, split)
                    for k, g in groups.items()
                    if setup(k[0]) == setup(ft_key[0]) and k[1].startswith("ptv2")
                }
                candidates = {k: v for k, v in scored.items() if v is not None}
            if candidates:
                break
        if not candidates:
            continue
        best = max(candidates, key=candidates.get)
        ft = score(finetune, split)
        best_row = best[1] if best[0] == ft_key[0] else f"{best[1]} ({best[0]})"
        lines.append(
            f"| {task} | {ft_key[0]} | {ft_key[1]} | {100 * ft:.1f} | {best_row} | {100 * candidates[best]:.1f} "
            f"| {100 * (candidates[best] - ft):+.1f} | {split} {finetune[0].metric} |"
        )
    return "\n".join(lines)


def equal_time(runs: list[Run]) -> str:
    """Each method's best dev metric within the shortest run's training time (same round, task, seed)."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for r in runs:
        if r.history and "elapsed_s" in r.history[-1] and "-P" not in r.label:
            groups[(r.round, r.task, r.seed)].append(r)
    per_method: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    budget: dict[tuple, list[float]] = defaultdict(list)
    for (round_name, task, _), group in groups.items():
        if len(group) < 2:
            continue
        limit = min(r.history[-1]["elapsed_s"] for r in group)
        budget[(round_name, task)].append(limit)
        for r in group:
            within = [h[r.metric] for h in r.history if h["elapsed_s"] <= limit]
            per_method[(round_name, task, r.label)].append((max(within) if within else float("nan"), r.best[r.metric]))
    lines = [
        "| round | task | method | seeds | time budget s | best dev within budget | best dev over the whole run |",
        "|---|---|---|---|---|---|---|",
    ]
    for (round_name, task, label), pairs in sorted(per_method.items()):
        within = [a for a, _ in pairs if a == a]
        seconds = ", ".join(f"{t:.0f}" for t in budget[(round_name, task)])
        lines.append(
            f"| {round_name} | {task} | {label} | {len(pairs)} | {seconds} | {pct(within)} "
            f"| {pct([b for _, b in pairs])} |"
        )
    return "\n".join(lines)


def detail(runs: list[Run], round_name: str) -> str:
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


def reparam_steps() -> str:
    """Why ``ptv2-reparam`` is unstable at ptv2's learning rates: the step it takes on the prefix."""
    path = RESULTS / "cpu" / "prefix_step_size.json"
    if not path.exists():
        return ""
    data = json.loads(path.read_text())
    keys, values = statistics.mean(data["key_rms"]), statistics.mean(data["value_rms"])
    lines = [
        "## Why the MLP reparameterisation diverges at ptv2's learning rates\n",
        "How far one AdamW step moves the prefix (RMS over all its values, first "
        f"{data['steps']} steps on a fixed batch, P={data['prompt_length']}), against the RMS of the backbone's own "
        f"keys ({keys:.2f}) and values ({values:.2f}), averaged over layers, {data['date']}:\n",
        "```bash\npython benchmarks/prefix_step_size.py --out benchmarks/results/cpu/prefix_step_size.json\n```\n",
        "| reparameterised | lr | initial prefix RMS | RMS change per step (mean) | largest step |",
        "|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {'yes' if r['reparam'] else 'no'} | {r['lr']:g} | {r['initial_rms']:.3f} | "
            f"{statistics.mean(r['step_rms']):.4f} | {max(r['step_rms']):.4f} |"
        )
    lines.append(
        "\nAdam moves each weight by about the learning rate per step. Without the MLP the weights are the prefix; "
        "with it, every prefix value is a sum over the 512 hidden units, so the same rate moves it tens of times "
        "further: at 5e-3 each step changes the prefix by a sizeable fraction of the keys' own scale, i.e. the "
        "prompt is largely redrawn every step. The rows below 5e-3 show how far the rate must fall before the steps shrink to the plain prefix's.\n"
    )
    return "\n".join(lines)


def peft_parity() -> str:
    """What the peft-prefix rows compare: PEFT's prefix fed our prefix's values (benchmarks/peft_parity.py)."""
    path = RESULTS / "cpu" / "peft_parity.json"
    if not path.exists():
        return ""
    data = json.loads(path.read_text())
    lines = [
        "## PEFT's prefix tuning computes what ours does, with positions shifted\n",
        f"PEFT's prompt encoder given the exact values of our ptv2 prefix (P={data['rows'][0]['prompt_length']}, "
        f"started at std {data['rows'][0]['prefix_init_std']:g}), on the bundled MiniLM in eval mode, three sentence pairs of different lengths, "
        f"{data['setup']['date']}; largest absolute difference over real tokens in the last hidden states and in the "
        "gradient of a loss on them with respect to the prefix:\n",
        f"```bash\n{data['setup']['command']}\n```\n",
        "| transformers | PEFT | hidden states: ours vs PEFT | ours, real tokens numbered from P, vs PEFT | "
        "largest hidden value | prefix gradient: ours vs PEFT | ours shifted vs PEFT | largest gradient | "
        "PEFT's own sequence-classification prefix model |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['transformers']} | {r['peft']} | {r['hidden_max_abs_diff_unshifted']:.3g} | "
            f"{r['hidden_max_abs_diff_shifted']:.3g} | {r['hidden_max_abs']:.3g} | "
            f"{r['grad_max_abs_diff_unshifted']:.3g} | {r['grad_max_abs_diff_shifted']:.3g} | {r['grad_max_abs']:.3g} "
            f"| {r['seq_cls_prefix_model']} |"
        )
    lines.append(
        "\nSo a `peft-prefix` row is ptv2 with the prefix started at std 1.0 and the real tokens numbered from P "
        "(`--prefix-init-std 1.0 --shift-positions`), trained the same way; on sentence pairs PEFT also drops the "
        "segment ids (`token_type_ids`) that ours keep (these pairs were fed without them). A gap between the two "
        "beyond seed noise comes from those settings, not from how the prefix enters attention. The feature-extraction model the harness wraps still runs on transformers "
        "5.24 (its `past_key_values` argument goes through a deprecation shim), while PEFT's task models refuse it, "
        "as the last column shows. `tests/test_benchmarks.py` checks the same equality on a tiny random BERT.\n"
    )
    return "\n".join(lines)


# PEFT's two settings, one at a time, on the SST-2 subset where its rows led ours: (round, label, init std, positions).
PEFT_SETTINGS = [
    ("cpu-sst2", "ptv2-e20", "0.02 (ours)", "0..L-1 (ours)"),
    ("cpu-sst2", "ptv2-e20-init1", "1.0 (PEFT's)", "0..L-1 (ours)"),
    ("cpu-sst2", "ptv2-e20-shift", "0.02 (ours)", "P..P+L-1 (PEFT's)"),
    ("cpu-sst2", "ptv2-e20-init1-shift", "1.0 (PEFT's)", "P..P+L-1 (PEFT's)"),
    ("cpu-sst2", "peft-prefix-e20", "1.0", "P..P+L-1"),
]


def peft_settings(runs: list[Run]) -> str:
    """ptv2 with PEFT's prefix scale and position numbering, alone and together, against PEFT itself."""
    lines = [
        "| round | row | prefix init std | real tokens' positions | seeds | dev accuracy | per seed | stopped by |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for round_name, label, init, positions in PEFT_SETTINGS:
        group = sorted(
            (r for r in runs if (r.round, r.task, r.label) == (round_name, "sst2", label)), key=lambda r: r.seed
        )
        if not group:
            continue
        values = [r.best[r.metric] for r in group]
        stopped = ", ".join(sorted({r.row["stopped_by"] for r in group if r.row}))
        lines.append(
            f"| {round_name} | {label} | {init} | {positions} | {','.join(str(r.seed) for r in group)} | {pct(values)} "
            f"| {', '.join(f'{100 * v:.1f}' for v in values)} | {stopped} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


# ptv2 with the backbone's dropout (an earlier CPU round) and the same command with `--backbone-dropout 0`.
DROPOUT_PAIRS = [
    ("sst2", ("cpu-sst2", "ptv2-e20"), ("cpu-nodrop", "ptv2-e20-nodrop")),
    ("cb", ("cpu-init", "ptv2"), ("cpu-nodrop", "ptv2-nodrop")),
    ("copa", ("cpu-small", "ptv2"), ("cpu-nodrop", "ptv2-nodrop")),
    ("wsc", ("cpu-small", "ptv2"), ("cpu-nodrop", "ptv2-nodrop")),
]


def dropout_accuracy(runs: list[Run]) -> str:
    """ptv2's dev accuracy and seconds per epoch with and without the backbone's dropout, same command otherwise."""
    lines = [
        "| task | with dropout (round, row) | dev accuracy | s / epoch | without (round, row) | dev accuracy "
        "| s / epoch | difference |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def group(key: tuple[str, str], task: str) -> list[Run]:
        return [r for r in runs if (r.round, r.label, r.task) == (*key, task) and r.row]

    def per_epoch(rows: list[Run]) -> float:
        return statistics.mean(r.row["wall_s"] / r.row["epochs_run"] for r in rows)

    for task, with_key, without_key in DROPOUT_PAIRS:
        kept, dropped = group(with_key, task), group(without_key, task)
        if not kept or not dropped:
            continue
        a, b = ([r.best[r.metric] for r in rows] for rows in (kept, dropped))
        seeds = [
            ", seeds " + ",".join(str(r.seed) for r in sorted(rows, key=lambda r: r.seed)) for rows in (kept, dropped)
        ]
        lines.append(
            f"| {task} | {', '.join(with_key)}{seeds[0]} | {pct(a)} | {per_epoch(kept):.0f} "
            f"| {', '.join(without_key)}{seeds[1]} "
            f"| {pct(b)} | {per_epoch(dropped):.0f} | {100 * (statistics.mean(b) - statistics.mean(a)):+.1f} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


def dropout_section(runs: list[Run]) -> str:
    table = dropout_accuracy(runs)
    if not table:
        return ""
    return (
        "## Training without the backbone's dropout\n\n"
        "ptv2 with every dropout rate inside the frozen backbone at 0, against the same command with the checkpoint's "
        "0.1 (means over the seeds run; seconds per epoch are each run's wall time, loading and evaluation included, "
        "over the epochs it ran, a rough guide only: the cpu-nodrop runs shared the 2 cores two at a time, the earlier "
        "rounds' as their descriptions below say):\n\n" + table + "\n"
    )


def efficiency() -> str:
    path = RESULTS / "cpu" / "efficiency.json"
    if not path.exists():
        return "Not measured yet: `python benchmarks/efficiency.py --out benchmarks/results/cpu/efficiency.json`.\n"
    data = json.loads(path.read_text())
    s = data["setup"]
    base = next(r for r in data["rows"] if r["method"] == "finetune")
    lines = [
        f"{s['machine']}, torch {s['torch']} ({s['threads']} threads), MiniLM, batch {s['batch']}, length "
        f"{s['length']}, P={s['prompt_length']} for the prompt methods, median of {s['steps']} timed steps, each "
        f"method in a fresh process, {s['date']}.\n",
        "```bash\npython benchmarks/efficiency.py --peft-python /path/to/peft-env/bin/python "
        "--out benchmarks/results/cpu/efficiency.json\n```\n",
        "| method | transformers | trainable params | % of backbone | artifact bytes | step ms | step / finetune "
        "| peak RSS MB | RSS / finetune |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"] + data.get("peft_rows", []):
        lines.append(
            f"| {r['method']} | {r['transformers']} | {r['trainable_params']:,} | {r['trainable_pct']:.3f} "
            f"| {r['artifact_bytes']:,} | {1000 * r['step_s']:.0f} | {r['step_s'] / base['step_s']:.3f} "
            f"| {r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] / base['peak_rss_mb']:.3f} |"
        )
    lines.append(
        "\nThe rows run one after another, minutes apart, on a shared 2-core machine; the same method measured "
        "in the two environments above differs by that much drift. Paired measurements (both models in one "
        "process, alternating step by step, median of the same number of steps) are steadier for ratios"
        + (
            f" (re-measured on {s['paired_date']}, after the rows above; see the commit log for what changed)"
            if "paired_date" in s
            else ""
        )
        + ":\n"
    )
    for pair in data.get("paired", []):
        first, second = pair["methods"]
        parts = "".join(
            f", {name} {1000 * pair[f'{name}_s'][second]:.0f} vs {1000 * pair[f'{name}_s'][first]:.0f}"
            for name in ("forward", "backward", "optimizer")
            if f"{name}_s" in pair
        )
        lines.append(
            f"* {second} / {first} step time, one process, transformers {pair['transformers']}: **{pair['ratio']:.3f}** "
            f"({1000 * pair['step_s'][second]:.0f} vs {1000 * pair['step_s'][first]:.0f} ms{parts})"
        )
    lines.append("\nGoals set by the issue: step ptv2/finetune ≤ 0.65, peak RSS ptv2/finetune ≤ 0.75.")
    phased = [r for r in data["rows"] + data.get("peft_rows", []) if "forward_s" in r]
    if phased:
        lines.append(
            "\nWhere a step's time goes (medians of the same timed steps, so the parts need not add up to the step). "
            "A frozen backbone saves the weight gradients (about half of fine-tuning's backward) and the optimizer, "
            "not the forward pass:\n"
        )
        lines.append("| method | transformers | forward ms | backward ms | optimizer ms | backward / finetune's |")
        lines.append("|---|---|---|---|---|---|")
        for r in phased:
            lines.append(
                f"| {r['method']} | {r['transformers']} | {1000 * r['forward_s']:.0f} | {1000 * r['backward_s']:.0f} "
                f"| {1000 * r['optimizer_s']:.0f} | {r['backward_s'] / base['backward_s']:.2f} |"
            )
    return "\n".join(lines) + "\n" + dropout_cost() + efficiency_shapes()


def dropout_cost() -> str:
    """What the backbone's own dropout costs a CPU step: the default-shape file against its ``--backbone-dropout 0``
    twin, each read for its paired (one process, alternating steps) and per-process figures."""
    files = [RESULTS / "cpu" / "efficiency.json", *sorted((RESULTS / "cpu").glob("efficiency-nodropout*.json"))]
    if len(files) < 2 or not files[0].exists():
        return ""
    lines = [
        "| backbone dropout | file | finetune step ms (forward) | ptv2 step ms (forward) | ptv2 / finetune step, "
        "paired | ptv2 / finetune peak RSS, per process |",
        "|---|---|---|---|---|---|",
    ]
    for path in files:
        data = json.loads(path.read_text())
        rate = data["setup"].get("backbone_dropout")
        label = "the checkpoint's (0.1)" if rate is None else f"{rate:g}"
        pair = next(p for p in data["paired"] if p["methods"] == ["finetune", "ptv2"])
        by_method = {r["method"]: r for r in data["rows"]}
        step, forward = pair["step_s"], pair["forward_s"]
        lines.append(
            f"| {label} | {path.name} | {1000 * step['finetune']:.0f} ({1000 * forward['finetune']:.0f}) "
            f"| {1000 * step['ptv2']:.0f} ({1000 * forward['ptv2']:.0f}) | {pair['ratio']:.3f} "
            f"| {by_method['ptv2']['peak_rss_mb'] / by_method['finetune']['peak_rss_mb']:.3f} |"
        )
    return (
        "\nThe backbone's own dropout is the largest single cost of a CPU training step, for every method: BERT's "
        "attention dropout draws a random mask over every attention score and keeps torch's `scaled_dot_product_"
        "attention` on its unfused path, while with dropout 0 the fused CPU kernel runs (both seen in `torch.profiler`)."
        " `--backbone-dropout 0` (`ptuning train`, `methods.py`, "
        "`efficiency.py`) sets every dropout rate inside the backbone; both methods below ran with the same "
        "setting. Each file is one run of the script; repeated runs of the same command on this shared machine differ "
        "by several hundredths in the paired ratio:\n\n" + "\n".join(lines) + "\n"
    )


def efficiency_shapes() -> str:
    """The same measurement at other tasks' input shapes (``efficiency-<shape>.json``): ratios only."""
    paths = sorted((RESULTS / "cpu").glob("efficiency-*.json"))
    if not paths:
        return ""
    lines = [
        "\nThe same measurement at other input shapes (`--batch-size B --length L --prompt-length P`; per process: "
        "fresh processes one after another; paired: one process, alternating steps):\n",
        "| file | batch | length | P | backbone dropout | steps | ptv2 / finetune step, per process | paired "
        "| ptv2 / finetune RSS | ptv2 / PEFT prefix step, paired |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    commands = []
    for path in paths:
        data = json.loads(path.read_text())
        commands.append(data["setup"].get("command"))
        s, by_method = data["setup"], {r["method"]: r for r in data["rows"]}
        ft, ptv2 = by_method["finetune"], by_method["ptv2"]
        pairs = {tuple(p["methods"]): p["ratio"] for p in data.get("paired", [])}
        peft = pairs.get(("peft-prefix", "ptv2"))
        dropout = "the checkpoint's" if s.get("backbone_dropout") is None else f"{s['backbone_dropout']:g}"
        lines.append(
            f"| {path.name} | {s['batch']} | {s['length']} | {s['prompt_length']} | {dropout} | {s['steps']} "
            f"| {ptv2['step_s'] / ft['step_s']:.3f} | {pairs[('finetune', 'ptv2')]:.3f} "
            f"| {ptv2['peak_rss_mb'] / ft['peak_rss_mb']:.3f} | {f'{peft:.3f}' if peft else 'not measured'} |"
        )
    lines += ["", "```bash", *(c for c in commands if c), "```"] if any(commands) else []
    return "\n".join(lines) + "\n"


def settings_text() -> str:
    """The harness's per-method and per-task settings, read from methods.py (never retyped)."""
    sys.path.insert(0, str(HERE))
    from methods import SETTINGS, TASK_SETTINGS

    methods = "; ".join(
        f"{m} lr {s['lr']:g}"
        + (f" P={s['prompt_length']}" if "prompt_length" in s else "")
        + f" patience {s['patience']}"
        for m, s in SETTINGS.items()
    )
    tasks = "; ".join(
        f"{t}: " + ", ".join(f"{k} {v}" for k, v in s.items() if k != "task_options") for t, s in TASK_SETTINGS.items()
    )
    return f"{methods} (per task: {tasks})"


def plots(runs: list[Run]) -> list[str]:
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
            joined = {round_name for keys in SWEEP_JOIN.values() for round_name, _ in keys}
            for round_name in sorted({r.round for r in sweep if r.task == task} - joined):
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
    return written


def sweep_runs(runs: list[Run]) -> list[Run]:
    """Finished ptv2 runs of a prompt-length sweep (their label ends in -P<length>), and the runs SWEEP_JOIN adds."""
    joined = {key for keys in SWEEP_JOIN.values() for key in keys}
    return [r for r in runs if ("-P" in r.label or (r.round, r.label) in joined) and r.row]


def sweep_points(sweep: list[Run], task: str, round_name: str) -> list[tuple[int, float]]:
    """(P, best dev metric) of one round's sweep on one task, with the points SWEEP_JOIN takes from earlier rounds."""
    members = {(round_name, None)} | {(r, label) for r, label in SWEEP_JOIN.get((round_name, task), [])}
    return sorted(
        (r.row["prompt_length"], 100 * r.best[r.metric])
        for r in sweep
        if r.task == task and ((r.round, None) in members or (r.round, r.label) in members)
    )


def prompt_lengths(runs: list[Run]) -> str:
    """The ptv2 prompt-length sweeps outside quick mode: one row per (round, task, P)."""
    sweep = sorted(
        (r for r in sweep_runs(runs) if r.round != QUICK_ROUND),
        key=lambda r: (r.round, r.task, r.row["prompt_length"], r.seed),
    )
    if not sweep:
        return "Not run outside quick mode yet.\n"
    lines = [
        "| round | task | P | seed | best dev | test | epochs (best / run) | stopped by |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sweep:
        test = f"{100 * r.row['test'][r.metric]:.1f}" if r.row.get("test") else "—"
        lines.append(
            f"| {r.round} | {r.task} | {r.row['prompt_length']} | {r.seed} | {r.metric} {100 * r.best[r.metric]:.1f} "
            f"| {test} | {epoch(r.best)} / {epoch(r.history[-1])} | {r.stopped_by} |"
        )
    return "\n".join(lines) + "\n"


def quick(runs: list[Run]) -> str:
    path = RESULTS / "cpu" / "quick.json"
    if not path.exists():
        return "Not run yet: `python benchmarks/methods.py --quick --out benchmarks/results/cpu/quick.json`.\n"
    data = json.loads(path.read_text())
    return (
        f"{data['device']}, torch {data['torch']}, transformers {data['transformers']}, {data['date']}.\n\n"
        f"```bash\n{data['command']}\n```\n\n{detail(runs, 'cpu')}\n"
    )


def serve() -> str:
    path = RESULTS / "cpu" / "serve.json"
    if not path.exists():
        return ""
    r = json.loads(path.read_text())
    t, m, h = r["throughput"], r["memory"], r["http"]
    clean, dirty = h["clean"], h["with_malformed"]
    five = sum(n for s, n in dirty["statuses"].items() if str(s).startswith("5"))
    return f"""## Serving many prompts from one backbone

CPU, 2 cores, torch {r["torch"]} ({r["threads"]} threads), MiniLM, random P=20 prompts (speed and memory do not
depend on the values), inputs: {t["inputs"]}.

```bash
python benchmarks/serve_bench.py --rounds 20 --requests 10000 --out benchmarks/results/cpu/serve.json
```

| measure | value | goal |
|---|---|---|
| pool throughput, batches of 64 from one task | {t["single_task"]["examples_per_s"]} ex/s | |
| same load over 8 tasks in mixed batches | {t["mixed_8_tasks"]["examples_per_s"]} ex/s | |
| mixed / single throughput | **{t["mixed_over_single"]}** | ≥ 0.95 |
| time with P=20 prefix / plain backbone | **{t["prefix20_time_over_plain"]}** | ≤ 1.10 |
| RSS ratio at 1 / 20 / 100 prompts | {m["ratio_1"]} / **{m["ratio_20"]}** / {m["ratio_100"]} | ≤ 1.2 at 20 |
| HTTP: {clean["requests"]} requests, {clean["clients"]} clients | {clean["requests_per_s"]} req/s, statuses {clean["statuses"]} | 0 errors |
| HTTP, every third request malformed ({dirty["requests"]}) | statuses {dirty["statuses"]}, 5xx: **{five}** | no 5xx |
"""


def main() -> None:
    check = "--check" in sys.argv[1:]
    runs = load_runs()
    images = [str(p.relative_to(HERE.parent)) for p in sorted(PLOTS.glob("*.png"))] if check else plots(runs)
    rounds = [name for name in ROUNDS if any(r.round == name for r in runs)]
    parts = [
        "# Benchmarks\n",
        "Generated by `python benchmarks/report.py` from the JSON files in `benchmarks/results/` (each written by "
        "`benchmarks/methods.py`, `efficiency.py` or `serve_bench.py`); nothing here is typed by hand. Backbone: the "
        "bundled all-MiniLM-L6-v2 (22.7 M parameters). Data: the official files in `../shared/data`. Every run keeps "
        "its best-dev checkpoint; SuperGLUE has no labelled test set, so dev selects and is reported (as in the "
        "paper); CoNLL-2003 reports its test file and SQuAD the held-out test articles (`--split-by-article 0.4` of "
        "the 1.1 dev file: 7,492 train / 1,334 validation / 1,744 test questions) with the best-dev checkpoint.\n",
        f"Harness defaults (benchmarks/methods.py): {settings_text()}; AdamW, 6 % warmup, linear decay. "
        "The GPU rounds ran on one NVIDIA H200 (`h200-*`) or H100 (`h100-*`) lent for 15 minutes per session, many runs "
        "sharing it, so wall times are "
        "inflated and several runs were stopped by the time cap before dev stopped improving: the `stopped by` column "
        "says which.\n",
        "## Headline: best dev (and test) metric per task and method\n",
        headline(runs) + "\n",
        *(f"![{p}]({p})\n" for p in images),
        "## P-Tuning v2 against fine-tuning\n",
        "The best ptv2 row of the headline table per task against fine-tuning (means over the seeds run; test where "
        "both have a test figure, else dev). Several prompt runs were stopped by the time cap while still improving "
        "(see `stopped by` above): where ptv2 trails there, longer training may narrow the gap.\n",
        gaps(runs) + "\n",
        "## At equal wall time\n",
        "Within each round, task and seed, every method's best dev metric reached within the training time of the "
        "shortest run (all runs of a round shared the GPU, so their clocks are comparable with one another, not "
        "with other rounds).\n",
        equal_time(runs) + "\n",
        "## Prompt length\n",
        "ptv2's best dev metric by prompt length P (one seed each; the RTE dev set has 277 examples, so one example "
        "is 0.36 points and single-seed differences of a few points are within seed noise: compare the seed spread "
        "of the headline rows).\n",
        prompt_lengths(runs),
        peft_parity(),
        "On the SST-2 subset (`cpu-sst2`; every row on the same 20-epoch schedule with patience 5, time caps of 20-30 "
        "min as its description says) PEFT's rows led ptv2's; these rows give ptv2 PEFT's two settings one at a time "
        "and together:\n",
        peft_settings(runs) + "\n",
        "## Efficiency\n",
        efficiency(),
        dropout_section(runs),
        reparam_steps(),
        "## Quick mode (CPU)\n",
        "`--quick` trains every method on small subsets for two epochs: it checks the harness end to end in about "
        "20 minutes on 2 CPU cores; its numbers are not results.\n",
        quick(runs),
        "## Every run outside quick mode\n",
    ]
    for name in rounds:
        parts.append(f"### {name}: {ROUNDS[name]}\n\n{detail(runs, name)}\n")
    parts.append(serve())
    text = "\n".join(p for p in parts if p)
    if check:
        if not OUT.exists() or OUT.read_text() != text:
            raise SystemExit(f"{OUT.name} differs from what benchmarks/results/ gives: run python benchmarks/report.py")
        print(f"{OUT.name} matches benchmarks/results/")
        return
    atomic_write_text(OUT, text)
    print(f"wrote {OUT} and {', '.join(images)}")


if __name__ == "__main__":
    main()
