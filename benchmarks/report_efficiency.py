"""The cost sections: training-step time and memory per method (efficiency.py's files); serving is report_serve.py.

Each reads one script's JSON file and prints its ratios against the goals the issue set; a missing file leaves its
section out (or says how to produce it), so the page can be generated before every measurement exists.
"""

from __future__ import annotations

import json

from report_runs import results_dir


def efficiency() -> str:
    """Step time, peak memory and artifact size per method (efficiency.json), then its paired ratios and phases."""
    path = results_dir("cpu", "efficiency.json")
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
    return "\n".join(lines) + "\n"


def efficiency_details() -> str:
    """The lab notebook's cost studies: where a step's time goes, what dropout costs, other input shapes."""
    path = results_dir("cpu", "efficiency.json")
    if not path.exists():
        return ""
    data = json.loads(path.read_text())
    base = next(r for r in data["rows"] if r["method"] == "finetune")
    lines = ["## Where a training step's time goes\n"]
    phased = [r for r in data["rows"] + data.get("peft_rows", []) if "forward_s" in r]
    if phased:
        lines.append(
            "The Efficiency table's steps split into phases (medians of the same timed steps, so the parts need not add up to the step). "
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
    files = [results_dir("cpu", "efficiency.json"), *sorted(results_dir("cpu").glob("efficiency-nodropout*.json"))]
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
    paths = sorted(results_dir("cpu").glob("efficiency-*.json"))
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


GPU_BF16_COMMAND = (
    "python benchmarks/efficiency.py --device cuda --methods finetune,finetune-autocast,ptv2,ptv2-bf16 "
    '--pairs "ptv2,ptv2-bf16;finetune-autocast,ptv2-bf16;finetune-autocast,ptv2" --batch-size 32 --length 128 '
    "--steps 50 --out benchmarks/results/gpu-bf16/efficiency.json"
)


def frozen_backbone_speedups() -> str:
    """What only a frozen backbone allows, beyond partial depth: a half-precision backbone, forward-only search."""
    return backbone_dtype() + search_vs_gradient()


def backbone_dtype() -> str:
    """A bf16 frozen backbone against fp32 ptv2 and autocast fine-tuning on a GPU (``gpu-bf16/efficiency.json``)."""
    path = results_dir("gpu-bf16", "efficiency.json")
    intro = (
        "\n### A half-precision frozen backbone (`--backbone-dtype bf16`)\n\n"
        "Step time and peak GPU memory of ptv2 on a bf16 backbone against fp32 ptv2 and fine-tuning under bf16 "
        "autocast (fp32 weights: what fine-tuning can do instead); the dev metric comes from `methods.py "
        "--backbone-dtype bf16` runs. "
    )
    if not path.exists():
        return intro + f"Not measured yet (it needs a CUDA GPU):\n\n```bash\n{GPU_BF16_COMMAND}\n```\n"
    data = json.loads(path.read_text())
    s, rows = data["setup"], {r["method"]: r for r in data["rows"]}
    base = rows.get("ptv2")
    lines = [
        intro + f"{s['machine']}, batch {s['batch']}, length {s['length']}, P={s['prompt_length']}, median of "
        f"{s['steps']} steps, {s['date']}.\n\n```bash\n{s['command']}\n```\n",
        "| method | step ms | step / fp32 ptv2 | peak GPU MB | memory / fp32 ptv2 |",
        "|---|---|---|---|---|",
    ]
    for method, r in rows.items():
        step = f"{r['step_s'] / base['step_s']:.3f}" if base else "-"
        memory = f"{r['peak_cuda_mb'] / base['peak_cuda_mb']:.3f}" if base and "peak_cuda_mb" in r else "-"
        lines.append(
            f"| {method} | {1000 * r['step_s']:.1f} | {step} | {r.get('peak_cuda_mb', float('nan')):.0f} | {memory} |"
        )
    lines += [
        "",
        *(f"Paired, one process: {p['methods'][1]} / {p['methods'][0]} = {p['ratio']:.3f}  " for p in data["paired"]),
    ]
    return "\n".join(lines) + "\n"


def search_vs_gradient() -> str:
    """Forward-only prompt search (CMA-ES) against gradient ptv2 at equal wall time (``cpu-search/*.json``)."""
    paths = [p for p in sorted(results_dir("cpu-search").glob("*.json")) if "comparison" in json.loads(p.read_text())]
    intro = (
        "\n### Forward-only prompt search (`--optimizer cma`) against gradient ptv2, equal wall time\n\n"
        "Black-Box Tuning's CMA-ES (z of 500 numbers, 20 candidates per generation, the prompt and head a random "
        "projection of z) and AdamW ptv2 (constant rate) each train P=20 on MiniLM for the same `--max-minutes`; "
        "CPU seconds are each run's own process's. The cap is checked after each epoch, and a FewGLUE epoch is one "
        "CMA generation (20 forward passes over the 32 training examples), so on a busy machine CMA overshoots a short "
        "cap (its wall seconds say by how much). "
    )
    if not paths:
        return intro + (
            "Not measured yet:\n\n```bash\npython benchmarks/search_vs_gradient.py --tasks cb,rte,sst2 --minutes 5 "
            "--seeds 1,2,3 --out benchmarks/results/cpu-search/all.json\n```\n"
        )
    lines = [
        intro + "\n",
        "| file | task | method | seed | minutes | steps | selection | reported | CPU s | wall s | load average |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    commands = []
    for path in paths:
        data = json.loads(path.read_text())
        commands.append(data["setup"]["command"])
        load = data["setup"].get("load_average")
        for r in data["comparison"]:
            lines.append(
                f"| {path.name} | {r['task']} | {r['method']} | {r['seed']} | {r['minutes']:g} | {r['steps']} "
                f"| {r['selection']:.4f} | {r['reported']:.4f} | {r['cpu_s']:.0f} | {r['wall_s']:.0f} | {load:.1f} |"
            )
    lines += ["", "```bash", *dict.fromkeys(commands), "```"]
    return "\n".join(lines) + "\n" + update_costs()


def update_costs() -> str:
    """What one update costs: a gradient step against a CMA-ES generation (``search_vs_gradient.py --costs``)."""
    path = results_dir("cpu-search", "costs.json")
    if not path.exists():
        return ""
    data = json.loads(path.read_text())
    lines = [
        "\nWhat one update costs, in CPU seconds on a real training batch (one process, "
        f"{data['costs'][0]['threads']} thread): a gradient step (batch 16, forward and backward) against a CMA "
        "generation (20 forward passes of batch 32):\n",
        "| task | gradient step s | its batch (rows, length) | CMA generation s | its batch | generation / step |",
        "|---|---|---|---|---|---|",
    ]
    for r in data["costs"]:
        lines.append(
            f"| {r['task']} | {r['adamw_cpu_s']:.2f} | {tuple(r['adamw_batch'])} | {r['cma_cpu_s']:.1f} "
            f"| {tuple(r['cma_batch'])} | {r['generation_per_step']:.1f} |"
        )
    lines += ["", f"```bash\n{data['setup']['command']}\n```"]
    return "\n".join(lines) + "\n"


DEPTH_COMMAND = (
    "python benchmarks/efficiency.py --depth --task cb --data ../shared/data/superglue/cb --epochs 3 --rounds 3 "
    "--out benchmarks/results/cpu/partial-depth.json"
)


def partial_depth() -> str:
    """Epoch and step time of prompts in the top layers, with and without the activation cache (partial-depth.json)."""
    path = results_dir("cpu", "partial-depth.json")
    if not path.exists():
        return (
            "\n### Prompts in the top layers, and the activation cache\n\n"
            f"Not measured yet:\n\n```bash\n{DEPTH_COMMAND}\n```\n"
        )
    data = json.loads(path.read_text())
    s, summary = data["setup"], data["summary"]
    lines = [
        "\n### Prompts in the top layers, and the activation cache\n",
        f"{s['machine']}, torch {s['torch']} ({s['threads']} threads), MiniLM, {s['task']} ({s['data']}), "
        f"{s['epochs']} epochs, batch {s['batch']}, P={s['prompt_length']}, backbone dropout "
        f"{'the checkpoint' + chr(39) + 's' if s['backbone_dropout'] is None else s['backbone_dropout']}; each setting "
        f"trained by the library's own loop in a fresh process, in rotated order, rounds: {s['rounds']}; ratios taken "
        f"within a round (median over rounds), {s['date']}. Epoch 1 fills the cache; later epochs read it. "
        "`top:half` is `top:3` and `top:third` `top:2` on MiniLM's 6 layers.\n",
        f"```bash\n{s['command']}\n```\n",
        "| setting | epoch 1 s | later epoch s | later epoch / finetune | step ms | step / finetune | step / PEFT prefix "
        "| peak RSS MB | RSS / finetune | same metrics as without the cache |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def ratio(entry: dict, key: str) -> str:
        return f"{entry[key]:.3f}" if key in entry else ""

    for setting, e in summary.items():
        same = {True: "yes", False: "**no**"}.get(e.get("same_metrics_as_nocache"), "")
        lines.append(
            f"| {setting} | {e['first_epoch_s']:.1f} | {e['later_epoch_s']:.1f} | {ratio(e, 'later_epoch_s_vs_finetune')} "
            f"| {1000 * e['step_s']:.0f} | {ratio(e, 'step_s_vs_finetune')} | {ratio(e, 'step_s_vs_peft_prefix')} "
            f"| {e['peak_rss_mb']:.0f} | {ratio(e, 'peak_rss_mb_vs_finetune')} | {same} |"
        )
    lines.append(
        "\nGoals set by the issue: a `top:half` epoch with the cache ≤ 0.35 × a fine-tuning epoch; full-depth ptv2 "
        "step ≤ 0.95 × PEFT's prefix step; peak RSS ≤ 0.6 × fine-tuning."
    )
    return "\n".join(lines) + "\n"
