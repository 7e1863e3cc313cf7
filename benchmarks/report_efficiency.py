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
