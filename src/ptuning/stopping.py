"""How a training run stops other than by running out of epochs.

Ctrl-C must leave something to resume from: :class:`InterruptGuard` turns the
first SIGINT into a request that the loop honours after the step in progress,
so the checkpoint it then saves is consistent (parameters, optimizer, counters
and RNG all at the same step). A diverged loss must not leave a NaN prompt
behind: the loop stops and raises :class:`TrainingDiverged` after keeping the
best artifact it had.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import PTuningError


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped training after saving a checkpoint; the message says how to resume."""


class TrainingDiverged(PTuningError):
    """The loss or the model's outputs became NaN or infinite; the message says what was kept."""

    exit_code = 1  # the run failed; it was not a usage error


class InterruptGuard:
    """Defers Ctrl-C to the next point where the loop can stop cleanly.

    The first SIGINT sets :attr:`requested`; the loop reads it after each batch.
    Inside :meth:`immediate` (an evaluation's forward passes, where nothing is
    lost by stopping at once) and at a second Ctrl-C, ``KeyboardInterrupt`` is
    raised as usual. Outside the main thread Python allows no signal handler: the
    guard then does nothing and Ctrl-C raises at once, as it always did.
    """

    def __init__(self, notice: str | None = None) -> None:
        self.notice = notice  # written to stderr at the first Ctrl-C: the step may take a while to finish
        self.requested = False
        self._immediate = False
        self._previous = None
        self._installed = False

    def __enter__(self) -> InterruptGuard:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        except ValueError:  # not the main thread
            self._installed = False
        return self

    def __exit__(self, *exc_info) -> None:
        if self._installed:
            previous = self._previous if self._previous is not None else signal.default_int_handler
            signal.signal(signal.SIGINT, previous)

    def _handle(self, signum, frame) -> None:
        if self.requested or self._immediate:
            raise KeyboardInterrupt
        self.requested = True
        if self.notice:
            sys.stderr.write(self.notice)
            sys.stderr.flush()

    @contextmanager
    def immediate(self) -> Iterator[None]:
        """A stretch where Ctrl-C (or one already requested) raises ``KeyboardInterrupt`` at once."""
        if self.requested:
            raise KeyboardInterrupt
        self._immediate = True
        try:
            yield
        finally:
            self._immediate = False
