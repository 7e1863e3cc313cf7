"""Serving benchmarks on the bundled MiniLM: mixed-task batching, prefix overhead, memory, HTTP load.

Prompts are random (untrained) artifacts: speed and memory do not depend on the
values, only on the shapes. Inputs are the package's own sample sentences.

    python benchmarks/serve_bench.py --out benchmarks/results/cpu/serve.json

1. Throughput and p50/p99 batch latency of the pool: batches of one task vs the
   same load spread over 8 tasks in mixed batches (goal: ratio >= 0.95).
2. Inference time of a P=20 deep prefix vs the plain backbone (goal: <= 1.10x).
3. Resident memory with 1, 20 and 100 prompts loaded vs the backbone alone (goal: <= 1.2x at 20).
4. HTTP load test on loopback against `ptuning serve`: N requests from 32 concurrent
   clients over 8 tasks (0 errors expected), then the same with malformed requests
   mixed in (no 5xx expected).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.resources import files
from pathlib import Path

import torch

from ptuning import artifact, backbones
from ptuning.io import atomic_write_text
from ptuning.method import method_config
from ptuning.model import PTuningModel
from ptuning.serve.pool import PromptPool
from ptuning.tasks import get_task


def sample_sentences() -> list[str]:
    text = (files("ptuning") / "samples" / "sentiment" / "train.tsv").read_text()
    return [line.split("\t")[0].strip() for line in text.splitlines()[1:] if line.strip()]


def make_artifacts(root: Path, count: int, method: str = "ptv2", P: int = 20) -> list[Path]:
    backbone, _, name = backbones.load_backbone(None)
    fingerprint = backbones.fingerprint(backbone)
    task = get_task("sst2")
    paths = []
    for i in range(count):
        torch.manual_seed(i)
        model = PTuningModel(
            backbone,
            method_config(method, strict=False, prompt_length=P),
            task.build_head(backbone.config.hidden_size, "mean"),
        )
        path = root / f"{method}-{P}-{i}"
        artifact.save_artifact(
            path, model, task=task, backbone_name=name, backbone_fingerprint=fingerprint, max_length=128, pooling="mean"
        )
        paths.append(path)
    return paths


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def time_batches(pool: PromptPool, names: list[str], sentences: list[str], batch: int, rounds: int) -> dict:
    rng = random.Random(0)
    latencies = []
    for r in range(rounds + 2):
        rows = [
            (names[i % len(names)], pool.to_example(names[i % len(names)], rng.choice(sentences))) for i in range(batch)
        ]
        start = time.perf_counter()
        pool.predict(rows)
        if r >= 2:  # warm-up
            latencies.append(time.perf_counter() - start)
    total = sum(latencies)
    return {
        "examples_per_s": round(batch * len(latencies) / total, 2),
        "p50_ms": round(1000 * statistics.median(latencies), 2),
        "p99_ms": round(1000 * sorted(latencies)[max(0, int(0.99 * len(latencies)) - 1)], 2),
        "batches": len(latencies),
        "batch": batch,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load_test(
    port: int, names: list[str], sentences: list[str], requests: int, clients: int, malformed_every: int = 0
) -> dict:
    import httpx

    rng = random.Random(1)
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    counter = iter(range(requests))
    bad_bodies = [
        b'{"task": "sst2-0", "inputs": [',
        b'{"task": "nope", "inputs": ["x"]}',
        b'{"inputs": "x"}',
        b'{"task": "p0", "inputs": [[1, 2]]}',
        json.dumps({"task": "p0", "inputs": ["x" * 30000]}).encode(),
    ]

    async def client(http: httpx.AsyncClient) -> None:
        for i in counter:
            if malformed_every and i % malformed_every == 0:
                body = rng.choice(bad_bodies)
            else:
                body = json.dumps({"task": rng.choice(names), "inputs": [rng.choice(sentences)]}).encode()
            start = time.perf_counter()
            response = await http.post("/v1/predict", content=body, headers={"content-type": "application/json"})
            latencies.append(time.perf_counter() - start)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=60) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": requests,
        "clients": clients,
        "wall_s": round(wall, 2),
        "requests_per_s": round(requests / wall, 1),
        "statuses": statuses,
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
        "p99_ms": round(1000 * latencies[int(0.99 * len(latencies)) - 1], 1),
    }


def serve_and_load(paths: list[Path], names: list[str], sentences: list[str], args) -> dict:
    port = free_port()
    specs = [f"{n}={p}" for n, p in zip(names, paths, strict=True)]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ptuning.cli",
            "serve",
            *specs,
            "--port",
            str(port),
            "--max-batch",
            "64",
            "--max-wait-ms",
            "5",
        ],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        import httpx

        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        clean = asyncio.run(load_test(port, names, sentences, args.requests, 32))
        dirty = asyncio.run(load_test(port, names, sentences, args.requests // 5, 32, malformed_every=3))
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        batch_line = [line for line in metrics.splitlines() if line.startswith("ptuning_batch_size_")]
        return {"clean": clean, "with_malformed": dirty, "server_batch_metrics": batch_line[-2:]}
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)


def memory_probe(root: Path) -> dict:
    """RSS of a fresh process: backbone alone, then with 1, 20 and 100 prompts (after a forward each)."""
    paths = sorted(root.glob("ptv2-20-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    backbone, tokenizer, _ = backbones.load_backbone(None)
    pool = PromptPool(backbone, tokenizer)
    pool.load(next(root.glob("linear-probe-*")), "plain")
    pool.predict([("plain", pool.to_example("plain", "warm up"))])
    gc.collect()
    memory = {"backbone_only_mb": round(rss_mb(), 1)}
    loaded = 0
    for count in (1, 20, 100):
        while loaded < count:
            pool.load(paths[loaded], f"p{loaded}")
            loaded += 1
        pool.predict([(f"p{count - 1}", pool.to_example(f"p{count - 1}", "warm up"))])
        gc.collect()
        memory[f"tasks_{count}_mb"] = round(rss_mb(), 1)
        memory[f"ratio_{count}"] = round(memory[f"tasks_{count}_mb"] / memory["backbone_only_mb"], 3)
    return memory


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-probe":
        print(json.dumps(memory_probe(Path(sys.argv[2]))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu/serve.json"))
    args = parser.parse_args()
    sentences = sample_sentences()
    result: dict = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": "cpu"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        deep = make_artifacts(root, 100)
        plain = make_artifacts(root, 1, method="linear-probe", P=0)
        gc.collect()

        # 3. memory, in a fresh process: the pool grows by the prompts only
        probe = subprocess.run(
            [sys.executable, __file__, "--memory-probe", str(root)],
            capture_output=True,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            check=True,
        )
        result["memory"] = json.loads(probe.stdout.strip().splitlines()[-1])
        print("memory", json.dumps(result["memory"]), flush=True)

        pool = PromptPool.from_artifact(deep[0], max_batch=args.batch)
        for i in range(8):
            pool.load(deep[i], f"p{i}")
        plain_pool = PromptPool(pool.encoder.backbone, pool.tokenizer, max_batch=args.batch)
        plain_pool.load(plain[0], "plain")

        # 1. single-task vs 8-task mixed batches; 2. prefix overhead vs plain backbone
        single = time_batches(pool, ["p0"], sentences, args.batch, args.rounds)
        mixed = time_batches(pool, [f"p{i}" for i in range(8)], sentences, args.batch, args.rounds)
        no_prefix = time_batches(plain_pool, ["plain"], sentences, args.batch, args.rounds)
        result["throughput"] = {
            "single_task": single,
            "mixed_8_tasks": mixed,
            "plain_backbone": no_prefix,
            "mixed_over_single": round(mixed["examples_per_s"] / single["examples_per_s"], 3),
            "prefix20_time_over_plain": round(no_prefix["examples_per_s"] / single["examples_per_s"], 3),
            "inputs": "the package's sample sentences (about 8-15 tokens)",
        }
        print("throughput", json.dumps(result["throughput"]), flush=True)
        del pool, plain_pool
        gc.collect()

        # 4. HTTP load test
        names = [f"p{i}" for i in range(8)]
        result["http"] = serve_and_load(deep[:8], names, sentences, args)
        print("http", json.dumps(result["http"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
