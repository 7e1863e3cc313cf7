"""Sections that explain a difference rather than rank methods: why the MLP reparameterisation diverges, what
PEFT's prefix computes against ours (and its two settings tried one at a time), what an imported PEFT prefix loses
without PEFT's position numbering, and ptv2 without backbone dropout.
"""

from __future__ import annotations

import json
import statistics

from report_runs import Run, pct, results_dir


def reparam_steps() -> str:
    """Why ``ptv2-reparam`` is unstable at ptv2's learning rates: the step it takes on the prefix."""
    path = results_dir("cpu", "prefix_step_size.json")
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
    path = results_dir("cpu", "peft_parity.json")
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


# peft_import_shift.py's variants: (key, real tokens' positions, token types).
PEFT_IMPORT_VARIANTS = [
    ("peft_conventions", "P..P+L-1 (PEFT's)", "dropped (PEFT's)"),
    ("no_shift", "0..L-1", "dropped (PEFT's)"),
    ("token_types_kept", "P..P+L-1 (PEFT's)", "kept"),
    ("neither", "0..L-1", "kept"),
]


def peft_import() -> str:
    """A prefix PEFT trained, imported with and without PEFT's conventions (benchmarks/peft_import_shift.py)."""
    path = results_dir("cpu", "peft_import_shift.json")
    if not path.exists():
        return ""
    data = json.loads(path.read_text())
    setup, rows = data["setup"], data["rows"]
    lines = [
        "## An imported PEFT prefix with and without PEFT's position numbering\n",
        f"A prefix trained by PEFT itself on {setup['task'].upper()} (its feature-extraction model on "
        f"{setup['backbone']}, P={setup['prompt_length']}, a {setup['head']}, {setup['epochs']} epochs at lr "
        f"{setup['lr']:g}, backbone dropout {setup['backbone_dropout']:g}, {setup['text_tokens']} text tokens per "
        f"input; a short run, the last epoch kept), saved by PEFT, imported with `ptuning import-peft` four ways and "
        f"scored on the {setup['split']} file ({rows[0]['examples']} examples), beside PEFT's own score of the same "
        f"prefix; transformers {setup['transformers']}, PEFT {setup['peft']}, {setup['date']}:\n",
        f"```bash\n{setup['command']}\n```\n",
        "| seed | import | real tokens' positions | token types | accuracy | macro-F1 | predictions changed vs PEFT "
        "| largest logit change vs PEFT |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        peft = row["peft"]
        lines.append(
            f"| {row['seed']} | PEFT itself | P..P+L-1 | dropped | {100 * peft['accuracy']:.1f} | "
            f"{100 * peft['macro_f1']:.1f} | | |"
        )
        for key, positions, types in PEFT_IMPORT_VARIANTS:
            r = row[key]
            lines.append(
                f"| {row['seed']} | {key.replace('_', ' ')} | {positions} | {types} | {100 * r['accuracy']:.1f} | "
                f"{100 * r['macro_f1']:.1f} | {r['predictions_changed']} | {r['max_abs_logit_diff_vs_peft']:.3g} |"
            )
    if len(rows) > 1:
        lines += ["", *_peft_import_means(rows)]
    lines.append(
        "\nWith PEFT's conventions (the import's default) the artifact gives PEFT's logits (the largest difference "
        "is float rounding) and so its score. Numbering the real tokens from 0 instead (`--no-shift-positions`) "
        "shows the prefix inputs at positions it never saw in training: the rows above give the cost. Keeping the "
        "segment ids (`--keep-token-types`) moved this backbone's logits far less.\n"
    )
    return "\n".join(lines)


def _peft_import_means(rows: list[dict]) -> list[str]:
    """Accuracy mean ± std over the seeds for PEFT and each import, and the predictions changed in all."""
    import statistics

    def stat(values: list[float]) -> str:
        return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"

    lines = [f"| import | accuracy over {len(rows)} seeds | predictions changed vs PEFT (all seeds) |", "|---|---|---|"]
    lines.append(f"| PEFT itself | {stat([100 * r['peft']['accuracy'] for r in rows])} | |")
    for key, _, _ in PEFT_IMPORT_VARIANTS:
        changed = sum(r[key]["predictions_changed"] for r in rows)
        total = sum(r["examples"] for r in rows)
        lines.append(
            f"| {key.replace('_', ' ')} | {stat([100 * r[key]['accuracy'] for r in rows])} | {changed} of {total} |"
        )
    return lines


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
    """The dropout-accuracy table under its heading, or nothing until a no-dropout twin has been run."""
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


# ptv2 with the prompt in every layer and the same command in the top layers only: CB (cpu-nodrop's command) and
# SST-2 on its 4k subset (cpu-sst2's 20-epoch command; the layers below the prompt lose their dropout, as always).
DEPTH_ROWS = [
    ("cb", "all 6", ("cpu-nodrop", "ptv2-nodrop")),
    ("cb", "top 3 (`--prefix-layers top:3`)", ("cpu-depth", "ptv2-nodrop-top3")),
    ("cb", "top 2 (`--prefix-layers top:2`)", ("cpu-depth", "ptv2-nodrop-top2")),
    ("sst2", "all 6", ("cpu-sst2", "ptv2-e20")),
    ("sst2", "top 3 (`--prefix-layers top:3`)", ("cpu-depth", "ptv2-e20-top3")),
]


def depth_quality(runs: list[Run]) -> str:
    """Dev accuracy against prompted depth, same command otherwise; nothing until a top-layers row exists."""
    rows = []
    for task, layers, key in DEPTH_ROWS:
        members = sorted(
            (r for r in runs if (r.round, r.label, r.task) == (*key, task) and r.row), key=lambda r: r.seed
        )
        if members:
            rows.append((task, layers, key, members, statistics.mean(r.best[r.metric] for r in members)))
    if len(rows) < 2:
        return ""
    full = {task: mean for task, layers, _, _, mean in rows if layers.startswith("all")}
    lines = [
        "\nWhat the depth costs in accuracy (dev, mean ± std over seeds; the same harness command but for "
        "`--prefix-layers`, all runs stopped as `stopped by` says):\n",
        "| task | prompted layers | round, row | seeds | dev accuracy | vs all layers | stopped by |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, layers, key, members, mean in rows:
        gap = f"{100 * (mean - full[task]):+.1f}" if task in full else "—"
        seeds = ",".join(str(r.seed) for r in members)
        stops = ", ".join(sorted({r.stopped_by for r in members}))
        values = [r.best[r.metric] for r in members]
        lines.append(f"| {task} | {layers} | {', '.join(key)} | {seeds} | {pct(values)} | {gap} | {stops} |")
    return "\n".join(lines) + "\n"
