"""`efficiency.py --depth`: epoch and step time of partial-depth prompts, with and without the activation cache."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_efficiency_depth_settings_resolve_and_a_worker_reports_epochs(tmp_path, tiny_bert_dir):
    """`efficiency.py --depth`: one setting trains for real and reports per-epoch times, step time and RSS."""
    import argparse

    import efficiency_depth
    from conftest import write_cb

    assert efficiency_depth.parse("ptv2@top:half@nocache", 6) == ("ptv2", "top:3", False)
    assert efficiency_depth.parse("ptv2@top:third", 6) == ("ptv2", "top:2", True)
    assert efficiency_depth.parse("finetune", 6) == ("finetune", None, True)
    args = argparse.Namespace(
        task="cb", data=str(write_cb(tmp_path / "cb")), model=str(tiny_bert_dir), epochs=2, batch_size=8, seed=1,
        backbone_dropout=None, prompt_length=3, max_length=32, max_train_samples=None, max_eval_samples=None,
    )  # fmt: skip
    row = efficiency_depth.worker("ptv2@top:half", args)
    assert row["prefix_layers"] == "top:1" and row["activation_cache"]["used"]
    assert [e["steps"] for e in row["epochs"]] == [3, 3] and row["step_s"] > 0 and row["peak_rss_mb"] > 0


def test_efficiency_depth_ratios_are_taken_within_each_round():
    import efficiency_depth

    def row(epoch: float, step: float, metrics=None):
        return {"first_epoch_s": 2 * epoch, "later_epoch_s": epoch, "step_s": step, "peak_rss_mb": 100.0,
                "metrics": metrics or [{"accuracy": 0.5}]}  # fmt: skip

    other = [{"accuracy": 0.6}]
    rounds = [
        {"finetune": row(10, 1.0), "ptv2@top:half": row(3, 0.3), "ptv2@top:half@nocache": row(5, 0.5)},
        {"finetune": row(20, 2.0), "ptv2@top:half": row(6, 0.6), "ptv2@top:half@nocache": row(10, 1.0, other)},
    ]
    summary = efficiency_depth.summarise(rounds)
    assert summary["ptv2@top:half"]["later_epoch_s_vs_finetune"] == pytest.approx(0.3)  # drift between rounds cancels
    assert summary["ptv2@top:half"]["later_epoch_s_vs_nocache"] == pytest.approx(0.6)
    assert summary["ptv2@top:half"]["same_metrics_as_nocache"] is False  # round 2's metrics differ
