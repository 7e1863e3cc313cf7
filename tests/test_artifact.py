"""Artifacts: one loader, portable backbone names, ordinary file permissions, strict JSON."""

from __future__ import annotations

import json
import os
import stat

import pytest
from conftest import train_tiny

from ptuning import artifact, backbones, io
from ptuning.errors import PTuningError


@pytest.fixture
def trained(tmp_path, sst2_dir, tiny_bert_dir):
    out = tmp_path / "artifact"
    train_tiny("sst2", sst2_dir, out, tiny_bert_dir, max_length=32)
    return out


def test_artifact_files_get_the_permissions_of_any_file(trained):
    """mkstemp makes 0600 files; an artifact meant to be shared must be as readable as metrics.jsonl."""
    expected = 0o666 & ~io._umask()
    for name in (artifact.META, artifact.WEIGHTS, "metrics.json", "metrics.jsonl"):
        assert stat.S_IMODE(os.stat(trained / name).st_mode) == expected, name


def test_the_bundled_backbone_is_recorded_by_its_package_name(monkeypatch, tmp_path):
    monkeypatch.setattr(backbones, "default_model_path", lambda: str(tmp_path))
    assert backbones.portable_name(str(tmp_path)) == backbones.DEFAULT_MODEL
    assert backbones.portable_name("bert-base-uncased") == "bert-base-uncased"
    assert backbones.resolve_model_name(backbones.DEFAULT_MODEL) == str(tmp_path)


def test_a_moved_backbone_asks_for_model_instead_of_hub_jargon(trained, tmp_path):
    moved = tmp_path / "moved"
    moved.mkdir()
    for f in trained.iterdir():
        if f.is_file():
            (moved / f.name).write_bytes(f.read_bytes())
    meta = json.loads((moved / artifact.META).read_text())
    meta["backbone"]["name"] = "/no/such/machine/tiny-bert"
    (moved / artifact.META).write_text(json.dumps(meta))
    with pytest.raises(PTuningError, match="pass --model PATH"):
        artifact.load_artifact(moved)


def test_json_outputs_never_hold_nan(tmp_path):
    io.atomic_write_json(tmp_path / "m.json", {"loss": float("nan"), "rows": [float("inf"), 1.0]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"loss": None, "rows": [None, 1.0]}
