"""``benchmarks/generation_steps.py``: paired training step times of the generation methods, and their report table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from gen_fixtures import save_tiny_decoder, write_e2e

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(monkeypatch, *argv: str) -> None:
    import generation_steps

    monkeypatch.setattr(sys, "argv", ["generation_steps.py", *argv])
    generation_steps.main()


def test_every_method_is_timed_in_rounds_against_the_first(tmp_path, monkeypatch):
    import generation_steps

    model = save_tiny_decoder(tmp_path / "tiny", "llama")
    data = write_e2e(tmp_path / "e2e")
    steps = []
    real = generation_steps.one_step
    monkeypatch.setattr(generation_steps, "one_step", lambda *a: steps.append(a[0]) or real(*a))
    out = tmp_path / "steps.json"
    _run(monkeypatch, "--task", "e2e", "--data", str(data), "--model", str(model), "--batch-size", "2",
         "--steps", "2", "--rounds", "2", "--out", str(out))  # fmt: skip
    result = json.loads(out.read_text())
    rows = {row["method"]: row for row in result["rows"]}
    assert list(rows) == ["finetune", "ptv2", "prompt-tuning"] and result["kind"] == "generation-steps"
    assert rows["finetune"]["ratio"] == 1.0 and all(r["ratio_to"] == "finetune" for r in rows.values())
    assert all(len(r["per_round"]) == 2 and r["seconds_per_step"] > 0 for r in rows.values())
    tuned = rows["finetune"]
    assert rows["ptv2"]["trainable_params"] < tuned["trainable_params"] == tuned["backbone_params"]
    assert len(steps) == 3 + 3 * 2 * 2  # one warm-up each, then 2 rounds x 2 steps x 3 methods
    order = [id(net) for net in steps[3:]]
    first, second = order[:6], order[6:]
    assert first[::2] == second[::-2]  # the second round runs the methods in reverse order


def test_the_report_shows_the_paired_ratios(tmp_path, monkeypatch):
    import report_generation
    import report_runs

    monkeypatch.setattr(report_runs, "RESULTS", tmp_path)
    (tmp_path / "generation").mkdir()
    trained = {"kind": "generation", "task": "e2e", "args": {"epochs": "1"}, "results": []}
    (tmp_path / "generation" / "e2e.json").write_text(json.dumps(trained))
    assert "Training step time" not in report_generation.generation()
    row = {"trainable_params": 10, "backbone_params": 1000, "per_round": [2.0, 2.2], "ratio_to": "finetune"}
    rows = [{**row, "method": "ptv2", "seconds_per_step": 2.1, "ratio": 0.7}]
    steps = {"kind": "generation-steps", "task": "e2e", "args": {"batch_size": "8"}, "rows": rows}
    (tmp_path / "generation" / "e2e-steps.json").write_text(json.dumps(steps))
    text = report_generation.generation()
    assert "/generation/e2e-steps.json | ptv2 | 1.000 | 8 | 2.10 | 0.70 × finetune (2 rounds) |" in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--steps", "0"], "--steps must be at least 1"), (["--methods", "finetune,lora"], "lora not one of")],
)
def test_bad_values_are_refused_in_one_line(tmp_path, monkeypatch, capsys, extra, message):
    out = tmp_path / "out.json"
    with pytest.raises(SystemExit) as stop:
        _run(monkeypatch, "--task", "e2e", "--data", str(tmp_path), "--out", str(out), *extra)
    assert stop.value.code == 2 and message in capsys.readouterr().err and not out.exists()
