"""HTTP load against ``ptuning serve`` on loopback: latency at N concurrent clients, and a hostile mix.

The server is the real command (a subprocess, admin token from the environment, ``--port 0``; the
address is read from what it prints). Clients are httpx coroutines in this process, each sending its
next request when the last one is answered (closed loop).

The hostile mix replaces every third request with one of :data:`HOSTILE`: malformed or deeply nested
JSON, NaN, huge integers, bodies over the limit, wrong shapes, unknown tasks and routes, and management
calls without a token or with a wrong one. Goal: no 5xx at all.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from serve_setup import percentile

ADMIN = "bench-admin-token-0123456789abcdef"

HOSTILE: list[tuple[str, str, bytes, dict]] = [  # (method, path, body, extra headers)
    ("POST", "/v1/predict", b"[" * 50_000, {}),
    ("POST", "/v1/predict", b'{"task": "t0", "inputs": [' + b"[" * 900 + b"]" * 900 + b"]}", {}),
    ("POST", "/v1/predict", b'{"task": "t0", "inputs": [', {}),
    ("POST", "/v1/predict", b'{"task": "t0", "inputs": [NaN]}', {}),
    ("POST", "/v1/predict", b'{"task": "t0", "inputs": [' + b"9" * 6000 + b"]}", {}),
    ("POST", "/v1/predict", b'{"task": "t0", "inputs": ["\xff\xfe\xfd"]}', {}),
    ("POST", "/v1/predict", json.dumps({"task": "t0", "inputs": [["x" * 30_000, "y"]]}).encode(), {}),
    ("POST", "/v1/predict", b"x" * 1_100_000, {}),
    ("POST", "/v1/predict", b'{"task": "nope", "inputs": [["a", "b"]]}', {}),
    ("POST", "/v1/predict", b'{"task": "t0", "inputs": [{"premise": 1, "hypothesis": [2]}]}', {}),
    ("POST", "/v1/predict", b'{"task": "t0", "inputs": [null, 3, "only one text"]}', {}),
    ("POST", "/v1/predict", b'{"task": {"$ne": 1}, "inputs": "x"}', {}),
    ("POST", "/v1/tasks", b'{"path": "/etc"}', {}),
    ("POST", "/v1/tasks", b'{"path": "/etc"}', {"authorization": "Bearer wrong-token-of-some-length"}),
    ("POST", "/v1/tasks", b'{"path": "/etc/passwd"}', {"authorization": f"Bearer {ADMIN}"}),
    ("DELETE", "/v1/tasks/t0", b"", {}),
    ("GET", "/../../etc/passwd", b"", {}),
    ("PUT", "/v1/predict", b"{}", {}),
]


class Server:
    """``ptuning serve`` on a free port, started and stopped around a ``with`` block."""

    def __init__(self, specs: list[str], extra: list[str] = ()) -> None:
        command = [sys.executable, "-m", "ptuning.cli", "serve", *specs, "--port", "0", *extra]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PTUNING_ADMIN_TOKEN": ADMIN}
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue = queue.Queue()
        self.log: list[str] = []  # stderr, drained: a full pipe would stall the server on its next log line
        threading.Thread(target=lambda: [self.lines.put(x) for x in self.process.stdout], daemon=True).start()
        threading.Thread(target=lambda: [self.log.append(x) for x in self.process.stderr], daemon=True).start()
        self.url, self.calibration = None, None
        deadline = time.time() + 600
        while self.url is None and time.time() < deadline:
            try:
                line = self.lines.get(timeout=5)
            except queue.Empty:
                if self.process.poll() is not None:
                    raise RuntimeError(f"ptuning serve exited: {''.join(self.log)[-2000:]}") from None
                continue
            if line.startswith("measured the batching cost model"):
                self.calibration = line.strip()
            match = re.search(r"on (http://\S+) \(API docs", line)
            self.url = match and match.group(1)
        if self.url is None:
            raise RuntimeError("ptuning serve printed no address in 10 minutes")

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


async def load(url: str, requests: list[tuple[str, str, bytes, dict]], clients: int) -> dict:
    """Send ``requests`` from ``clients`` closed-loop clients; statuses and latency percentiles."""
    import httpx

    statuses: dict[str, int] = {}
    latencies: list[float] = []
    work = iter(requests)

    async def client(http: httpx.AsyncClient) -> None:
        for method, path, body, headers in work:
            started = time.perf_counter()
            try:
                response = await http.request(method, path, content=body, headers=headers)
                status = str(response.status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - started
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    return {
        "requests": len(requests),
        "clients": clients,
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(requests) / wall, 1),
        "statuses": dict(sorted(statuses.items())),
        "p50_ms": round(1000 * p50, 1),
        "p99_ms": round(1000 * p99, 1),
        "p99_over_p50": round(p99 / p50, 2),
    }


def predict_requests(names: list[str], pairs: list[list[str]], count: int, seed: int) -> list:
    rng = random.Random(seed)
    headers = {"content-type": "application/json"}
    return [
        (
            "POST",
            "/v1/predict",
            json.dumps({"task": rng.choice(names), "inputs": [rng.choice(pairs)]}).encode(),
            headers,
        )
        for _ in range(count)
    ]


def server_side(url: str) -> dict:
    """What /metrics says so far: requests counted, gathered batches, their rows and model seconds."""
    import httpx

    metrics = httpx.get(f"{url}/metrics").text
    found = {k: float(v) for k, v in re.findall(r"^ptuning_(batch_\w+_(?:sum|count)) (\S+)$", metrics, re.M)}
    requests = sum(int(x) for x in re.findall(r"^ptuning_requests_total\{.*\} (\d+)$", metrics, re.M))
    return {
        "requests": requests,
        "batches": found.get("batch_size_count", 0.0),
        "rows": found.get("batch_size_sum", 0.0),
        "seconds": found.get("batch_seconds_sum", 0.0),
    }


def batches_between(before: dict, after: dict) -> dict:
    n = after["batches"] - before["batches"]
    return {
        "server_batches": int(n),
        "mean_batch_rows": round((after["rows"] - before["rows"]) / n, 1) if n else None,
        "mean_batch_ms": round(1000 * (after["seconds"] - before["seconds"]) / n, 1) if n else None,
    }


def run(paths: list[Path], pairs: list[list[str]], clean: int, hostile: int, clients: int) -> dict:
    """The clean run (latency at ``clients`` clients), then ``hostile`` requests, every third from :data:`HOSTILE`.

    Beside each run: the server's gathered batches over it (rows, model time), to say where latency goes.
    """
    names = [f"t{i}" for i in range(len(paths))]
    with Server([f"{n}={p}" for n, p in zip(names, paths, strict=True)]) as server:
        asyncio.run(load(server.url, predict_requests(names, pairs, min(64, clean), seed=0), clients))  # warm-up
        result = {"calibration": server.calibration, "tasks": len(names)}
        before = server_side(server.url)
        result["clean"] = asyncio.run(load(server.url, predict_requests(names, pairs, clean, seed=1), clients))
        middle = server_side(server.url)
        result["clean"].update(batches_between(before, middle))
        mixed = predict_requests(names, pairs, hostile, seed=2)
        rng = random.Random(3)
        for i in range(0, hostile, 3):
            method, path, body, headers = rng.choice(HOSTILE)
            mixed[i] = (method, path, body, {"content-type": "application/json", **headers})
        result["hostile"] = asyncio.run(load(server.url, mixed, clients))
        after = server_side(server.url)
        result["hostile"].update(batches_between(middle, after))
        result["hostile"]["malformed_or_hostile"] = len(range(0, hostile, 3))
        result["hostile"]["five_xx"] = sum(n for s, n in result["hostile"]["statuses"].items() if s.startswith("5"))
        result["server_counted_requests"] = after["requests"]
    return result
