"""Prometheus text exposition for the server: requests, batch sizes, latency.

A handful of counters and two histograms do not justify a dependency; the
format is the plain-text one Prometheus scrapes.
"""

from __future__ import annotations

import threading
from collections import Counter

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Histogram:
    def __init__(self, buckets: tuple) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.total += 1
        self.sum += value

    def render(self, name: str, help_text: str) -> list[str]:
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for bound, count in zip(self.buckets, self.counts, strict=True):
            lines.append(f'{name}_bucket{{le="{bound}"}} {count}')
        lines += [
            f'{name}_bucket{{le="+Inf"}} {self.total}',
            f"{name}_sum {self.sum:.6f}",
            f"{name}_count {self.total}",
        ]
        return lines


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter = Counter()
        self.inputs = 0
        self.latency = Histogram(LATENCY_BUCKETS)
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.batch_seconds = Histogram(LATENCY_BUCKETS)
        self._lock = threading.Lock()

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[
                (path if path.startswith("/v1/") or path in ("/healthz", "/metrics") else "other", status)
            ] += 1
            if path == "/v1/predict":
                self.latency.observe(seconds)

    def observe_batch(self, rows: int, seconds: float | None = None) -> None:
        with self._lock:
            self.batch_size.observe(rows)
            if seconds is not None:
                self.batch_seconds.observe(seconds)

    def render(self, loaded_tasks: int) -> str:
        with self._lock:
            lines = [
                "# HELP ptuning_requests_total HTTP requests by path and status.",
                "# TYPE ptuning_requests_total counter",
            ]
            for (path, status), n in sorted(self.requests.items()):
                lines.append(f'ptuning_requests_total{{path="{path}",status="{status}"}} {n}')
            lines += [
                "# HELP ptuning_inputs_total Inputs accepted for prediction.",
                "# TYPE ptuning_inputs_total counter",
                f"ptuning_inputs_total {self.inputs}",
                "# HELP ptuning_loaded_tasks Prompts currently loaded.",
                "# TYPE ptuning_loaded_tasks gauge",
                f"ptuning_loaded_tasks {loaded_tasks}",
            ]
            lines += self.batch_size.render("ptuning_batch_size", "Rows per gathered batch.")
            lines += self.batch_seconds.render("ptuning_batch_seconds", "Model time of a gathered batch.")
            lines += self.latency.render("ptuning_request_latency_seconds", "Latency of /v1/predict.")
            return "\n".join(lines) + "\n"
