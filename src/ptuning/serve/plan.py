"""Which rows share a backbone forward: a measured cost model and a padding-aware sub-batch planner.

A forward pads every row to the longest input and the longest prefix of its batch. One long prompt
(or one long input) beside many short ones makes every row pay for it: a P=5000 prompt loaded beside
P=20 ones took another task's median latency from 51 ms to 741 ms when all rows shared one forward.
Splitting the batch costs a forward's fixed overhead instead. Which is cheaper depends on the machine
and the backbone, so the pool *measures* it: :meth:`CostModel.calibrate` times a few forwards over
(rows, input length, prefix length) and fits

    t(B, L, P) = fixed + per_token * B*L + attention * B*L*(L+P) + prefix * B*P

by non-negative least squares on relative error. :func:`plan` then cuts the rows into the sub-batches
with the least predicted total time (a dynamic programme over the rows sorted by prefix then input
length, and by input then prefix length; the cheaper of the two plans wins).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

FEATURES = ("fixed", "per_token", "attention", "prefix")
# (rows, input length, prefix length): few enough to take about a second on a CPU MiniLM (1,500 tokens a pass),
# spread enough to separate the four terms (fixed cost at tiny batches, attention at long inputs and prefixes).
CALIBRATION_GRID = (
    (1, 8, 0),
    (16, 16, 0),
    (4, 128, 0),
    (16, 32, 32),
    (8, 16, 256),
    (2, 32, 512),
    (1, 8, 256),
)


@dataclass(frozen=True)
class CostModel:
    """Predicted seconds of one forward of ``rows`` rows padded to ``length`` tokens and ``prefix`` slots."""

    fixed: float
    per_token: float
    attention: float
    prefix: float
    fit_error: float = 0.0  # median relative error of the fit on its calibration points
    source: str = "calibrated"

    def seconds(self, rows: int, length: int, prefix: int) -> float:
        tokens = rows * length
        attention = self.attention * tokens * (length + prefix)
        return self.fixed + self.per_token * tokens + attention + self.prefix * rows * prefix

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def fit(cls, points: Sequence[tuple[int, int, int, float]], source: str = "calibrated") -> CostModel:
        """Non-negative least squares on relative error over ``(rows, length, prefix, seconds)`` points."""
        design = torch.tensor(
            [[1.0, b * n, b * n * (n + p), b * p] for b, n, p, _ in points], dtype=torch.float64
        )  # (points, 4)
        seconds = torch.tensor([t for *_, t in points], dtype=torch.float64)  # (points,)
        weighted, target = design / seconds[:, None], torch.ones_like(seconds)  # relative error: divide rows by t
        active = list(range(len(FEATURES)))
        coef = torch.zeros(len(FEATURES), dtype=torch.float64)
        while active:  # drop the most negative term and refit until every term is >= 0
            scale = weighted[:, active].abs().max(dim=0).values.clamp_min(1e-30)  # (k,) column scaling
            solution = torch.linalg.lstsq(weighted[:, active] / scale, target[:, None]).solution[:, 0] / scale
            if bool((solution >= 0).all()):
                coef[active] = solution
                break
            active.pop(int(solution.argmin()))
        predicted = design @ coef
        error = statistics.median(((predicted - seconds).abs() / seconds).tolist())
        return cls(*coef.tolist(), fit_error=round(error, 4), source=source)

    @classmethod
    def calibrate(
        cls, forward: Callable[[int, int, int], None], *, max_length: int | None = None, repeats: int = 3
    ) -> CostModel:
        """Time ``forward(rows, length, prefix)`` over :data:`CALIBRATION_GRID` (median of ``repeats``).

        ``max_length`` caps the grid's input lengths at what the backbone has positions for.
        """
        grid = [(b, min(n, max_length or n), p) for b, n, p in CALIBRATION_GRID]
        forward(*grid[0])  # warm-up: first-call allocations are not the cost of a forward
        points = []
        for rows, length, prefix in grid:
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                forward(rows, length, prefix)
                times.append(time.perf_counter() - start)
            points.append((rows, length, prefix, statistics.median(times)))
        return cls.fit(points)


@dataclass(frozen=True)
class Unit:
    """One sequence to run: its input length and the length of its task's prefix (0 for none)."""

    length: int
    prefix: int


def plan(units: Sequence[Unit], cost: CostModel, max_batch: int) -> list[list[int]]:
    """Indices of ``units`` cut into sub-batches of at most ``max_batch`` with the least predicted time."""
    if not units:
        return []
    best: tuple[float, list[list[int]]] | None = None
    for key in (lambda u: (units[u].prefix, units[u].length), lambda u: (units[u].length, units[u].prefix)):
        order = sorted(range(len(units)), key=key)
        total, batches = _cut(order, units, cost, max_batch)
        if best is None or total < best[0]:
            best = (total, batches)
    return best[1]


def _cut(order: list[int], units: Sequence[Unit], cost: CostModel, max_batch: int) -> tuple[float, list[list[int]]]:
    """Optimal cut of ``order`` into contiguous segments: ``total[j]`` is the least time for its first ``j`` units."""
    n = len(order)
    total = [0.0] + [float("inf")] * n
    start_of = [0] * (n + 1)
    for end in range(1, n + 1):
        longest = widest = 0
        for start in range(end - 1, max(-1, end - 1 - max_batch), -1):  # segment order[start:end]
            unit = units[order[start]]
            longest, widest = max(longest, unit.length), max(widest, unit.prefix)
            candidate = total[start] + cost.seconds(end - start, longest, widest)
            if candidate <= total[end] + 1e-12:  # a tie goes to the longer segment: fewer forwards
                total[end], start_of[end] = candidate, start
    batches, end = [], n
    while end > 0:
        batches.append(order[start_of[end] : end])
        end = start_of[end]
    return total[n], batches[::-1]
