"""The accuracy tables: the headline, P-Tuning v2 against fine-tuning, equal wall time and the prompt-length sweep.

Which runs the headline and gap tables show is configuration (``HEADLINE``, ``SAME_SETUP``, ``SWEEP_JOIN``); the
numbers are read from the runs. Tests patch that configuration on this module, where the tables look it up.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

from report_runs import Run, epoch, pct

QUICK_ROUND = "cpu"  # the directory --quick writes to: its sweep checks the harness, it is not a result
# Rounds run with the same hardware, precision and sharing as an earlier one: the gap table compares across them.
SAME_SETUP = {f"h100-round{n}": "h100-round11" for n in (12, 13, 14, 15)}
# A sweep's point taken from an earlier run of the same setup and schedule: (sweep round, task) -> [(round, label)].
SWEEP_JOIN = {("h100-round14", "conll03"): [("h100-round11", "ptv2-e25")]}
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


def headline(runs: list[Run]) -> str:
    """One row per (task, round, label) HEADLINE names, in its order; rows without runs are left out."""
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
    """The round whose setup ``round_name`` shares (itself unless SAME_SETUP joins it to an earlier one)."""
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


def sweep_rounds(sweep: list[Run], task: str) -> list[str]:
    """The rounds whose sweep on ``task`` is drawn as a line: a round SWEEP_JOIN borrows points from is drawn only
    inside the sweep that borrows them."""
    joined = {round_name for keys in SWEEP_JOIN.values() for round_name, _ in keys}
    return sorted({r.round for r in sweep if r.task == task} - joined)


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
