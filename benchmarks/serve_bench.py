"""Serving benchmark on the bundled MiniLM: many prompts on one backbone, against the goals of issue 25.

    python benchmarks/serve_bench.py --out benchmarks/results/cpu/serve.json      # full (see BENCHMARKS.md)
    python benchmarks/serve_bench.py --quick --out /tmp/serve-quick.json          # a few minutes: smoke test

Prompts are random artifacts on the real backbone (``serve_setup.py``); inputs are CB/RTE validation pairs.

1. memory: 1,000 prompts loaded in one fresh process (small P, and P=20) vs the backbone alone, load time;
   and the "one fine-tuned model per task" alternative for 8 tasks (goal: 1,000 prompts <= 1.5x).
2. pool throughput vs distinct tasks per batch (1, 8, 64), batches of 64 realistic pairs, the same texts
   for every k (goal: 64 tasks >= 0.95x one task); the measured cost model's prediction beside it.
3. the anchor, in the same process: an interleaved 8-task stream served in windows of 64 requests as one
   mixed batch per window (ours), as per-task batches with one prompt active at a time (what PEFT users
   must do), and strictly in arrival order switching on every change of task (goal: >= 3x per-task).
4. run-time loads: batches on one thread while another loads and unloads prompts (goal: no pause > 1 batch).
5. HTTP (``ptuning serve``): p50/p99 at 32 closed-loop clients (goal: p99 <= 2x p50), then 10,000 requests
   with every third malformed or hostile (goal: zero 5xx).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve_http  # noqa: E402
from serve_probe import load_pause  # noqa: E402
from serve_setup import make_tasks, pair_inputs, percentile, rss_mb, stream, token_lengths  # noqa: E402

from ptuning import backbones  # noqa: E402
from ptuning.io import atomic_write_text  # noqa: E402
from ptuning.serve.forward import Sequence  # noqa: E402
from ptuning.serve.pool import PromptPool  # noqa: E402

PROBE = str(Path(__file__).resolve().parent / "serve_probe.py")


def probe(*args: str) -> dict:
    """One serve_probe.py measurement in a fresh process (its last stdout line is JSON)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, PROBE, *args], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory(root: Path, backbone, counts: dict[int, int], finetuned_copies: int) -> dict:
    result = {}
    for prompt_length, count in counts.items():
        paths = make_tasks(root / f"memory-{prompt_length}", count, prompt_length, backbone)
        result[f"P{prompt_length}"] = probe("memory", *map(str, paths))
        print("memory", prompt_length, json.dumps(result[f"P{prompt_length}"]), flush=True)
    result["finetuned"] = probe("finetuned", str(finetuned_copies))
    return result


def predicted_s(pool: PromptPool, rows: list) -> float:
    sequences = [Sequence(i, f, row.prompt) for i, row in enumerate(rows) for f in row.features]
    units = [(len(s.features["input_ids"]), s.prompt.prompt_length) for s in sequences]
    return sum(
        pool.cost_model.seconds(len(b), max(units[i][0] for i in b), max(units[i][1] for i in b))
        for b in pool.plan(sequences)
    )


def timed(pool: PromptPool, rows: list) -> float:
    started = time.perf_counter()
    pool.predict_prepared(rows)
    return time.perf_counter() - started


def summary(times: list[float], rows: int) -> dict:
    return {
        "examples_per_s": round(rows * len(times) / sum(times), 2),
        "p50_ms": round(1000 * statistics.median(times), 1),
        "p99_ms": round(1000 * percentile(times, 0.99), 1),
        "batches": len(times),
    }


def throughput(pool: PromptPool, names: list[str], pairs: list, batch: int, rounds: int) -> dict:
    """Batches of ``batch`` pairs spread over k tasks, k in (1, 8, 64), and head-only rows (k=0, the "plain"
    task: the backbone without a prefix); the k order rotates every round."""
    import random

    rng = random.Random(0)
    ks = [k for k in (1, 8, 64) if k <= len(names)] + [0]
    times: dict[int, list[float]] = {k: [] for k in ks}
    predicted: dict[int, list[float]] = {k: [] for k in ks}
    for r in range(rounds + 1):
        texts = [rng.choice(pairs) for _ in range(batch)]
        for k in ks[r % len(ks) :] + ks[: r % len(ks)]:
            rows = [pool.prepare(names[j % k] if k else "plain", texts[j]) for j in range(batch)]
            t = timed(pool, rows)
            if r:  # round 0 warms up
                times[k].append(t)
                predicted[k].append(predicted_s(pool, rows))
    result = {f"tasks_{k}" if k else "plain_backbone": summary(times[k], batch) for k in ks}
    for k in ks:
        result[f"tasks_{k}" if k else "plain_backbone"]["cost_model_predicted_ms"] = round(
            1000 * statistics.median(predicted[k]), 1
        )
    result["prefix20_time_over_plain"] = round(
        result["plain_backbone"]["examples_per_s"] / result["tasks_1"]["examples_per_s"], 3
    )
    result["ratio_64_over_1"] = round(
        result[f"tasks_{ks[-1]}"]["examples_per_s"] / result["tasks_1"]["examples_per_s"], 3
    )
    result["ratio_8_over_1"] = round(result["tasks_8"]["examples_per_s"] / result["tasks_1"]["examples_per_s"], 3)
    return result


def anchor(pool: PromptPool, names: list[str], pairs: list, requests: int, window: int) -> dict:
    """One interleaved 8-task stream, three ways, alternating per window so drift hits all alike."""
    arrivals = [pool.prepare(name, pair) for name, pair in stream(names[:8], pairs, requests, seed=5)]
    spent = {"mixed": 0.0, "per_task": 0.0, "fifo": 0.0}
    forwards = {"mixed": 0, "per_task": 0, "fifo": 0}
    for start in range(0, requests, window):
        rows = arrivals[start : start + window]
        by_task: dict[str, list] = {}
        for row in rows:
            by_task.setdefault(row.prompt.name, []).append(row)
        runs, current = [], []
        for row in rows:  # arrival order: a new batch whenever the task changes
            if current and current[-1].prompt is not row.prompt:
                runs.append(current)
                current = []
            current.append(row)
        runs.append(current)
        plans = {"mixed": [rows], "per_task": list(by_task.values()), "fifo": runs}
        order = list(plans) if (start // window) % 2 == 0 else list(plans)[::-1]
        for way in order:
            spent[way] += sum(timed(pool, part) for part in plans[way])
            forwards[way] += len(plans[way])
    result = {way: {"examples_per_s": round(requests / spent[way], 2), "batches": forwards[way]} for way in spent}
    result["mixed_over_per_task"] = round(spent["per_task"] / spent["mixed"], 3)
    result["mixed_over_fifo"] = round(spent["fifo"] / spent["mixed"], 3)
    result.update(requests=requests, window=window, tasks=8)
    return result


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes everywhere: a smoke test of a few minutes")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu/serve.json"))
    args = parser.parse_args()
    full = dict(
        batch=64,
        rounds=10,
        prompts=64,
        stream=1024,
        memory={8: 1000, 20: 1000},
        spare=50,
        clean=2000,
        hostile=10_000,
        pause_batches=5,
    )
    quick = dict(
        batch=16, rounds=2, prompts=64, stream=64, memory={8: 100}, spare=4, clean=64, hostile=150, pause_batches=2
    )
    args.__dict__.update(quick if args.quick else full)
    return args


def main() -> None:
    args = parse()
    pairs, source = pair_inputs()
    backbone, tokenizer, _ = backbones.load_backbone(None)
    result: dict = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": "cpu",
        "quick": args.quick,
        "batch": args.batch,
        "inputs": source,
        "input_tokens": token_lengths(tokenizer, pairs),
        "date": time.strftime("%Y-%m-%d"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        result["memory"] = memory(root, backbone, args.memory, finetuned_copies=8)
        paths = make_tasks(root / "tasks", args.prompts, 20, backbone)
        pool = PromptPool(backbone, tokenizer, max_batch=args.batch)
        started = time.perf_counter()
        result["cost_model"] = {**pool.calibrate().to_dict(), "calibration_s": round(time.perf_counter() - started, 2)}
        names = [f"t{i}" for i in range(len(paths))]
        for name, path in zip(names, paths, strict=True):
            pool.load(path, name)
        pool.load(make_tasks(root / "plain", 1, 0, backbone, method="linear-probe")[0], "plain")
        result["throughput"] = throughput(pool, names, pairs, args.batch, args.rounds)
        print("throughput", json.dumps(result["throughput"]), flush=True)
        result["anchor"] = anchor(pool, names, pairs, args.stream, args.batch)
        result["anchor"]["memory_mb"] = {
            "ours_8_tasks_rss": round(rss_mb(), 1),
            "finetuned_8_models_rss": result["memory"]["finetuned"]["all_models_mb"],
        }
        print("anchor", json.dumps(result["anchor"]), flush=True)
        spare = make_tasks(root / "spare", args.spare, 20, backbone)
        rows = [pool.prepare(names[j % 8], pairs[j % len(pairs)]) for j in range(args.batch)]
        result["load_pause"] = load_pause(pool, rows, spare, args.pause_batches)
        print("load_pause", json.dumps(result["load_pause"]), flush=True)
        del pool
        result["http"] = serve_http.run(paths[:8], pairs, args.clean, args.hostile, clients=32)
        print("http", json.dumps(result["http"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
