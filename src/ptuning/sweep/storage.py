"""Where a study lives and who runs it: the database, lock files, process ids, signals.

A SQLite database gets a lock file beside it (``study.db.lock``): SQLite has no row locks, and two
processes must never take the same queued trial. A trial records its host and process id, so that a
later start on that host can tell a dead process's RUNNING trial from a live one's.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import PTuningError

HOST = socket.gethostname()


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes on one machine (``flock``: released if the process dies)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_storage(url: str, given: str | None):
    """Optuna's RDB storage for a SQLAlchemy URL; SQLite waits for a lock instead of failing at once."""
    import optuna
    import sqlalchemy

    shown = f"--storage {hide_password(url)}" if given else hide_password(url)
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise PTuningError(f"{shown} is not a database URL (e.g. sqlite:///sweep.db, postgresql://host/db)") from None
    kwargs = {}
    if parsed.get_backend_name() == "sqlite":
        kwargs = {"connect_args": {"timeout": 300}}
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except ImportError as exc:
        raise PTuningError(f"{shown}: its database driver is not installed ({exc})") from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError) as exc:
        raise PTuningError(f"{shown}: cannot open it ({str(exc).splitlines()[0]})") from None


def sqlite_lock(url: str) -> Path | None:
    """The lock file beside a SQLite database file; None for other databases (they lock rows)."""
    import sqlalchemy

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return None  # refused with its own message when the storage opens
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database + ".lock")


def hide_password(url: str) -> str:
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:  # not empty (another process's trial runs there) or already gone
        pass


def alive(pid) -> bool:
    """Whether process ``pid`` runs on this host (ours never does: this process has not asked yet)."""
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler's kill, ``timeout``) stops the sweep the way Ctrl-C does: the running trial saves
    a checkpoint and is queued again."""

    def forward(signum, frame) -> None:
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signum, frame)
        else:
            raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, forward)
    except ValueError:  # not the main thread: no signal handlers there
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
