"""Writing files so that a reader never sees half of one.

Every file goes to a temporary name beside its target and is renamed into place (atomic on POSIX),
so a run killed mid-write leaves the previous file, or none, never a truncated one. Files get the
permissions any ordinary file gets under the user's umask (``mkstemp`` alone would make them 0600).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .finite import dumps


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, then give the file ordinary permissions and rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    _atomic(Path(path), write)


def atomic_write_text(path: Path, text: str) -> None:
    """Results and reports too: a run killed mid-write must not leave half a file behind."""
    atomic_write_bytes(Path(path), text.encode("utf-8"))


def json_text(obj, **kwargs) -> str:
    """Strict JSON (``allow_nan=False``) of ``obj`` with non-finite numbers as null (``finite.py``)."""
    return dumps(obj, **kwargs)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(Path(path), json_text(obj, indent=2, sort_keys=True) + "\n")


def atomic_save_tensors(path: Path, tensors: dict, metadata: dict | None = None) -> str:
    """Save safetensors atomically; return the file's SHA-256."""
    from safetensors.torch import save_file

    digest: list[str] = []

    def write(tmp: str) -> None:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        digest.append(sha256_file(Path(tmp)))

    _atomic(Path(path), write)
    return digest[0]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
