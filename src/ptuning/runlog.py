"""A training run's log: ``metrics.jsonl`` (one JSON line per evaluation) and, when tensorboard is
installed, a TensorBoard run beside it. Only the main process writes (``enabled``)."""

from __future__ import annotations

import math
from pathlib import Path

from .finite import dumps


class JsonlLog:
    """``metrics.jsonl`` and, when tensorboard is installed, a TensorBoard run."""

    def __init__(self, directory: Path, enabled: bool) -> None:
        self.path = directory / "metrics.jsonl"
        self.enabled = enabled
        self.board = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.board = SummaryWriter(str(directory / "tensorboard"))
            except ImportError:
                self.board = None

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(dumps(row) + "\n")
        if self.board is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and math.isfinite(value) and key not in ("step", "epoch"):
                    self.board.add_scalar(key, value, row["step"])
            self.board.flush()

    def close(self) -> None:
        if self.board is not None:
            self.board.close()
