"""The serving section: serve_bench.py's file against issue 25's goals, then the figures behind each goal.

Reads ``cpu/serve.json`` (the full run); while that file is still the earlier format (no ``anchor``), it
shows the earlier table and, when there is one, the quick run's goals (``cpu/serve-quick.json``), marked
as a smoke test. Every number is read from the file; the prose only says which way each goal went.
"""

from __future__ import annotations

import json

from report_runs import results_dir

COMMAND = "python benchmarks/serve_bench.py --out benchmarks/results/cpu/serve.json"
QUICK_COMMAND = "python benchmarks/serve_bench.py --quick --out benchmarks/results/cpu/serve-quick.json"


def serve() -> str:
    """The Serving section, from the newest-format file there is."""
    full, quick = results_dir("cpu", "serve.json"), results_dir("cpu", "serve-quick.json")
    data = json.loads(full.read_text()) if full.exists() else None
    if data is not None and "anchor" in data:
        return _section(data, COMMAND)
    parts = [_earlier(data)] if data is not None else []
    if quick.exists():
        parts.append(_section(json.loads(quick.read_text()), QUICK_COMMAND))
    return "\n".join(parts)


def _mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def goals(r: dict) -> list[tuple[str, str, str, bool]]:
    """``(measure, value, goal, met)`` per goal of issue 25."""
    t, a, m, h, pause = r["throughput"], r["anchor"], r["memory"], r["http"], r["load_pause"]
    small = min((v for k, v in m.items() if k.startswith("P")), key=lambda v: v["prompt_length"])
    clean, hostile = h["clean"], h["hostile"]
    return [
        (
            f"throughput, 64 distinct tasks / 1 task per batch of {r['batch']}",
            f"{t['ratio_64_over_1']:.3f}",
            "≥ 0.95",
            t["ratio_64_over_1"] >= 0.95,
        ),
        (
            f"interleaved 8-task stream ({a['requests']} requests): mixed batches / per-task switching",
            f"{a['mixed_over_per_task']:.2f}×",
            "≥ 3×",
            a["mixed_over_per_task"] >= 3,
        ),
        (
            f"{small['prompts']:,} prompts (P={small['prompt_length']}) RSS / backbone alone",
            f"{small['ratio']:.3f}",
            "≤ 1.5",
            small["ratio"] <= 1.5,
        ),
        (
            f"HTTP p99 / p50 at {clean['clients']} clients",
            f"{clean['p99_over_p50']:.2f} ({clean['p99_ms']:.0f} / {clean['p50_ms']:.0f} ms)",
            "≤ 2",
            clean["p99_over_p50"] <= 2,
        ),
        (
            f"5xx in {hostile['requests']:,} requests, {hostile['malformed_or_hostile']:,} malformed or hostile",
            str(hostile["five_xx"]),
            "0",
            hostile["five_xx"] == 0,
        ),
        (
            f"run-time loads: worst batch gap beyond a batch, in batches ({pause['loads']} loads, "
            f"{pause['unloads']} unloads)",
            f"{pause['worst_pause_in_batches']:.2f}",
            "≤ 1",
            pause["worst_pause_in_batches"] <= 1,
        ),
    ]


def _section(r: dict, command: str) -> str:
    lines = [
        "## Serving many prompts from one backbone\n",
        (
            "**Quick mode: smoke-test sizes on a shared machine; these numbers are not results.**\n"
            if r.get("quick")
            else None
        ),
        f"CPU, torch {r['torch']} ({r['threads']} threads), MiniLM, random prompts (speed and memory depend on "
        f"shapes only), {r['date']}. Inputs: {r['inputs']}, {r['input_tokens']['mean']} tokens on average "
        f"(median {r['input_tokens']['median']}, max {r['input_tokens']['max']}, cut at 256).\n",
        f"```bash\n{command}\n```\n",
        "| goal (issue 25) | measured | goal | |",
        "|---|---|---|---|",
        *(f"| {what} | {value} | {goal} | {_mark(ok)} |" for what, value, goal, ok in goals(r)),
        "",
        *_throughput(r),
        *_anchor(r),
        *_memory(r),
        *_http(r),
    ]
    return "\n".join(line for line in lines if line is not None) + "\n"


def _throughput(r: dict) -> list[str]:
    t, c = r["throughput"], r["cost_model"]
    rows = [
        f"| {k.split('_')[1]} | {v['examples_per_s']} | {v['p50_ms']} | {v['p99_ms']} | {v['cost_model_predicted_ms']} |"
        for k, v in t.items()
        if k.startswith("tasks_") and isinstance(v, dict)
    ]
    plain = t.get("plain_backbone")
    return [
        "Pool throughput by distinct tasks per batch (the same texts for every column; the prompt of each row is "
        "its task's; one model thread):\n",
        "| tasks in a batch | examples/s | p50 ms | p99 ms | cost model predicts ms |",
        "|---|---|---|---|---|",
        *rows,
        *(
            [
                f"| head-only rows (no prefix) | {plain['examples_per_s']} | {plain['p50_ms']} | {plain['p99_ms']} "
                f"| {plain['cost_model_predicted_ms']} |"
            ]
            if plain
            else []
        ),
        "",
        f"The cost model the planner cuts batches by was measured in {c['calibration_s']} s at start-up: "
        f"{1000 * c['fixed']:.2f} ms a forward + {1e6 * c['per_token']:.1f} µs a token + {1e9 * c['attention']:.2f} ns "
        f"per token and attended position + {1e6 * c['prefix']:.2f} µs per row and prefix slot (median fit error "
        f"{100 * c['fit_error']:.0f} %).\n",
    ]


def _anchor(r: dict) -> list[str]:
    a = r["anchor"]
    memory = a["memory_mb"]
    return [
        f"The anchor: {a['requests']} single-input requests, each for one of {a['tasks']} tasks drawn at random, "
        f"served in windows of {a['window']} arrivals:\n",
        "| served as | examples/s | forwards |",
        "|---|---|---|",
        f"| one mixed batch per window (ours) | {a['mixed']['examples_per_s']} | {a['mixed']['batches']} |",
        f"| per-task batches, one prompt active at a time (PEFT-style) | {a['per_task']['examples_per_s']} "
        f"| {a['per_task']['batches']} |",
        f"| arrival order, switching on every change of task | {a['fifo']['examples_per_s']} | {a['fifo']['batches']} |",
        "",
        _anchor_time(a, r["cost_model"]),
        f"Memory: {memory['ours_8_tasks_rss']:.0f} MB resident for the benchmark's process holding the pool (one "
        f"backbone and every prompt of the table above) against {memory['finetuned_8_models_rss']:.0f} MB for "
        f"{a['tasks']} fine-tuned MiniLMs (one per task) in a fresh process.\n",
    ]


def _anchor_time(a: dict, cost: dict) -> str:
    """What the switching baseline's extra time goes to, by the measured cost model."""
    extra_forwards = a["per_task"]["batches"] - a["mixed"]["batches"]
    extra_s = a["requests"] / a["per_task"]["examples_per_s"] - a["requests"] / a["mixed"]["examples_per_s"]
    return (
        f"Where the switching baseline's time goes: it ran {extra_forwards} more forwards, which the cost model prices "
        f"at {1000 * cost['fixed']:.1f} ms each ({extra_forwards * cost['fixed']:.1f} s); it took {extra_s:.1f} s "
        "longer in all. Per-token work is the same both ways: what mixing tasks in one batch saves is the fixed cost "
        "of the extra forwards, plus whatever a small batch leaves of the device idle (little on a CPU whose cores "
        "are busy at a few rows; much more on a GPU).\n"
    )


def _memory(r: dict) -> list[str]:
    rows = [
        f"| {v['prompt_length']} | {v['prompts']:,} | {v['backbone_only_mb']} | {v['loaded_mb']} | {v['ratio']} "
        f"| {v['bytes_per_prompt']:,} | {v['rss_per_prompt_kb']} | {v['load_ms_median']} / {v['load_ms_p99']} |"
        for k, v in sorted(r["memory"].items())
        if k.startswith("P")
    ]
    pause = r["load_pause"]
    return [
        "Many prompts in one fresh process (resident memory after a forward):\n",
        "| P | prompts | backbone alone MB | loaded MB | ratio | bytes per prompt | RSS KB per prompt | load ms p50 / p99 |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Loads at run time: batches of {pause['batch_rows']} rows took {pause['batch_ms_median']} ms (median); the "
        f"longest gap between two batches was {pause['quiet_max_gap_ms']} ms with nothing else running and "
        f"{pause['churn_max_gap_ms']} ms while {pause['loads']} prompts were loaded and unloaded (a load: "
        f"{pause['load_ms_median']} ms, its files read outside the model lock).\n",
    ]


def _http(r: dict) -> list[str]:
    h = r["http"]
    clean, hostile = h["clean"], h["hostile"]
    return [
        f"HTTP (`ptuning serve`, {h['tasks']} tasks, {clean['clients']} closed-loop clients on the same machine; "
        f"{h['calibration']}):\n",
        "| run | requests | req/s | p50 ms | p99 ms | statuses |",
        "|---|---|---|---|---|---|",
        f"| clean | {clean['requests']:,} | {clean['requests_per_s']} | {clean['p50_ms']} | {clean['p99_ms']} "
        f"| {clean['statuses']} |",
        f"| every third malformed or hostile | {hostile['requests']:,} | {hostile['requests_per_s']} "
        f"| {hostile['p50_ms']} | {hostile['p99_ms']} | {hostile['statuses']} |",
        "",
        f"The server counted {h['server_counted_requests']:,} requests in /metrics (the warm-up's and /metrics' own "
        f"included). Where the clean run's latency goes: the server gathered {clean['server_batches']} batches of "
        f"{clean['mean_batch_rows']} rows on average, {clean['mean_batch_ms']} ms of model time each, so p50 is "
        f"{clean['p50_ms'] / clean['mean_batch_ms']:.1f} and p99 {clean['p99_ms'] / clean['mean_batch_ms']:.1f} "
        "batch times (a request waits for the batch in flight, then rides the next; the rest is HTTP, JSON and "
        "tokenization on the same two cores as the clients).\n",
    ]


def _earlier(r: dict) -> str:
    """The table of the earlier serve_bench.py (before issue 25), kept until the full run replaces its file."""
    t, m, h = r["throughput"], r["memory"], r["http"]
    clean, dirty = h["clean"], h["with_malformed"]
    five = sum(n for s, n in dirty["statuses"].items() if str(s).startswith("5"))
    return f"""## Serving many prompts from one backbone (earlier benchmark)

CPU, 2 cores, torch {r["torch"]} ({r["threads"]} threads), MiniLM, random P=20 prompts, inputs: {t["inputs"]}. Measured
by the serve_bench.py before issue 25; `{COMMAND}` replaces this table with one against issue 25's goals.

| measure | value | goal |
|---|---|---|
| mixed (8 tasks) / single-task throughput | **{t["mixed_over_single"]}** | ≥ 0.95 |
| time with P=20 prefix / plain backbone | **{t["prefix20_time_over_plain"]}** | ≤ 1.10 |
| RSS ratio at 1 / 20 / 100 prompts | {m["ratio_1"]} / **{m["ratio_20"]}** / {m["ratio_100"]} | ≤ 1.2 at 20 |
| HTTP: {clean["requests"]} requests, {clean["clients"]} clients | {clean["requests_per_s"]} req/s, p50 {clean["p50_ms"]} ms, p99 {clean["p99_ms"]} ms | 0 errors |
| HTTP, every third request malformed ({dirty["requests"]}) | statuses {dirty["statuses"]}, 5xx: **{five}** | no 5xx |
"""
