"""docs/extending.md stays true: its examples run, and what they add works end to end."""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import pytest
import torch
from conftest import tiny_backbone, train_tiny

from ptuning import pipeline
from ptuning.encoders import INJECTORS, Encoder
from ptuning.errors import PTuningError
from ptuning.tasks import TASKS

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def examples() -> list[str]:
    return re.findall(r"```python\n(.+?)\n```", DOC.read_text(), flags=re.S)


def run_example(index: int, monkeypatch) -> dict:
    """Run one example as a module of its own (dataclasses look their module up in sys.modules)."""
    module = types.ModuleType(f"extending_example_{index}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(examples()[index], f"{DOC}:example{index}", "exec"), module.__dict__)
    return module.__dict__


def test_the_doc_has_one_example_per_extension_point():
    assert len(examples()) == 3


def test_the_method_example_trains_saves_and_scores(tmp_path, monkeypatch, sst2_dir, tiny_bert_dir):
    run_example(0, monkeypatch)
    out = tmp_path / "tied"
    summary = train_tiny("sst2", sst2_dir, out, tiny_bert_dir, method="tied-prefix", prompt_length=3, max_length=32)
    assert summary["method"] == {"method": "tied-prefix", "prompt_length": 3}
    assert summary["trainable_params"] == 2 * 4 * 3 * 8 + (32 * 2 + 2)  # one layer's slots + the head
    scored = pipeline.evaluate(out, str(sst2_dir))
    assert abs(scored["accuracy"] - summary["best"]["accuracy"]) < 1e-6


def test_the_backbone_example_is_picked_and_declares_what_it_supports(monkeypatch):
    saved = list(INJECTORS)
    try:
        run_example(1, monkeypatch)  # inserts its injector into the library's list, as the doc says
        encoder = Encoder(tiny_backbone("bert"))
        assert encoder.injector.name == "cautious-bert"
        assert Encoder(tiny_backbone("llama")).injector.name == "attention-interface"
        encoder.enable_prefix()
        with pytest.raises(PTuningError, match="gradient checkpointing"):
            encoder.enable_gradient_checkpointing()
    finally:
        INJECTORS[:] = saved


def test_the_task_example_trains_and_predicts(tmp_path, monkeypatch, tiny_bert_dir):
    monkeypatch.setattr("ptuning.tasks.TASKS", dict(TASKS))
    run_example(2, monkeypatch)
    data = tmp_path / "scores"
    data.mkdir()
    rows = [{"text": f"{'good ' * (i % 4)}film", "score": float(i % 4)} for i in range(24)]
    for name in ("train", "val"):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    torch.manual_seed(0)
    out = tmp_path / "out"
    summary = train_tiny("text-score", data, out, tiny_bert_dir, prompt_length=2, epochs=2, max_length=16)
    assert summary["main_metric"] == "pearson" and -1.0 <= summary["best"]["pearson"] <= 1.0
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": "good good film"}) + "\n")
    assert pipeline.predict(out, tmp_path / "in.jsonl", tmp_path / "pred.jsonl") == 1
    assert "score" in json.loads((tmp_path / "pred.jsonl").read_text())
