"""Measurements that need a fresh process (resident memory) or their own threads (run-time loads).

    python benchmarks/serve_probe.py memory ARTIFACT_DIR...     # JSON on the last line of stdout
    python benchmarks/serve_probe.py finetuned COPIES

``memory``: RSS of the backbone alone (after a forward), then after loading every artifact given (each
load timed) and a forward; bytes per prompt from the pool's own accounting. ``finetuned``: RSS of COPIES
independent MiniLMs, the "one fine-tuned model per task" alternative (a fine-tuned model is the backbone's
size whatever its values). :func:`load_pause` (run in-process by serve_bench.py) drives batches on one
thread while another loads and unloads prompts, and reports how long batches were held up.
"""

from __future__ import annotations

import copy
import gc
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_setup import percentile, rss_mb  # noqa: E402

from ptuning import backbones  # noqa: E402
from ptuning.serve.pool import PromptPool  # noqa: E402


def memory(paths: list[Path]) -> dict:
    backbone, tokenizer, _ = backbones.load_backbone(None)
    pool = PromptPool(backbone, tokenizer)
    pool.predict_prepared([pool.prepare(*_first_input(pool, paths[0]))])  # warm: allocator and kernels
    pool.prompts.clear()
    gc.collect()
    alone = rss_mb()
    load_s = []
    for i, path in enumerate(paths):
        started = time.perf_counter()
        pool.load(path, f"t{i}")
        load_s.append(time.perf_counter() - started)
    pool.predict_prepared([pool.prepare(f"t{len(paths) - 1}", ["a premise.", "a hypothesis."])])
    gc.collect()
    loaded = rss_mb()
    prompt_bytes = [p.nbytes for p in pool.prompts.values()]
    return {
        "prompts": len(paths),
        "prompt_length": pool.prompts["t0"].prompt_length,
        "backbone_only_mb": round(alone, 1),
        "loaded_mb": round(loaded, 1),
        "ratio": round(loaded / alone, 3),
        "rss_per_prompt_kb": round(1024 * (loaded - alone) / len(paths), 1),
        "bytes_per_prompt": round(statistics.mean(prompt_bytes)),
        "backbone_param_mb": round(sum(p.numel() * p.element_size() for p in backbone.parameters()) / 2**20, 1),
        "load_ms_median": round(1000 * statistics.median(load_s), 2),
        "load_ms_p99": round(1000 * percentile(load_s, 0.99), 2),
        "load_all_s": round(sum(load_s), 2),
    }


def _first_input(pool: PromptPool, path: Path) -> tuple[str, list[str]]:
    pool.load(path, "warm")
    return "warm", ["a premise.", "a hypothesis."]


def finetuned(copies: int) -> dict:
    backbone, _, _ = backbones.load_backbone(None)
    gc.collect()
    one = rss_mb()
    models = [backbone] + [copy.deepcopy(backbone) for _ in range(copies - 1)]
    with torch.inference_mode():
        ids = torch.ones(1, 8, dtype=torch.long)
        for model in models:
            model(input_ids=ids, attention_mask=ids)
    gc.collect()
    return {"models": copies, "one_model_mb": round(one, 1), "all_models_mb": round(rss_mb(), 1)}


def load_pause(pool: PromptPool, rows: list, spare: list[Path], batches: int) -> dict:
    """Batch completion gaps while nothing else happens, then while ``spare`` artifacts are loaded and unloaded.

    ``rows`` (prepared) make one batch. The pause a load causes is the longest gap between two batch
    completions beyond the median batch time; the goal is at most one batch.
    """

    def run(stop_after: int, churn: threading.Event | None = None) -> list[float]:
        ends = [time.perf_counter()]
        while len(ends) <= stop_after or (churn is not None and not churn.is_set()):
            pool.predict_prepared(rows)
            ends.append(time.perf_counter())
        return [b - a for a, b in zip(ends, ends[1:], strict=False)]

    quiet = run(batches)
    done, events = threading.Event(), []

    def churn() -> None:
        for i, path in enumerate(spare):
            started = time.perf_counter()
            pool.load(path, f"spare{i}")
            events.append(("load", time.perf_counter() - started))
        for i in range(len(spare)):
            started = time.perf_counter()
            pool.unload(f"spare{i}")
            events.append(("unload", time.perf_counter() - started))
        done.set()

    worker = threading.Thread(target=churn)
    worker.start()
    busy = run(batches, done)
    worker.join()
    median = statistics.median(quiet)
    return {
        "batch_rows": len(rows),
        "batch_ms_median": round(1000 * median, 1),
        "quiet_max_gap_ms": round(1000 * max(quiet), 1),
        "churn_max_gap_ms": round(1000 * max(busy), 1),
        "churn_batches": len(busy),
        "loads": sum(1 for kind, _ in events if kind == "load"),
        "unloads": sum(1 for kind, _ in events if kind == "unload"),
        "load_ms_median": round(1000 * statistics.median(t for kind, t in events if kind == "load"), 1),
        "worst_pause_in_batches": round((max(busy) - median) / median, 2),
    }


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    result = memory([Path(a) for a in args]) if command == "memory" else finetuned(int(args[0]))
    print(json.dumps(result))
