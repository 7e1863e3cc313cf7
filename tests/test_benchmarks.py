"""The benchmark harness: BENCHMARKS.md is generated from the results, the BoolQ split, --quick, equal time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import methods  # noqa: E402
import report  # noqa: E402
import report_quality  # noqa: E402
import report_runs  # noqa: E402


def test_benchmarks_md_is_exactly_what_the_result_files_give():
    done = subprocess.run([sys.executable, "benchmarks/report.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_boolq_split_keeps_each_passage_on_one_side(tmp_path):
    rows = [{"question": f"q{i}", "passage": f"passage {i % 40}", "label": i % 2 == 0, "idx": i} for i in range(200)]
    (tmp_path / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    target = methods.boolq_split(tmp_path, tmp_path / "work")
    train = [json.loads(line) for line in (target / "train.jsonl").read_text().splitlines()]
    val = [json.loads(line) for line in (target / "val.jsonl").read_text().splitlines()]
    assert len(train) + len(val) == 200 and train and val
    assert not {r["passage"] for r in train} & {r["passage"] for r in val}


def test_quick_mode_fills_in_a_small_plan_but_keeps_explicit_choices():
    quick = methods.parse_args(["--quick"])
    assert quick.tasks == "cb,rte,conll03" and quick.max_train_samples == 96 and quick.prompt_lengths
    assert set(quick.methods.split(",")) == {"finetune", "prompt-tuning", "ptv1", "ptv2", "ptv2-reparam"}
    assert methods.parse_args(["--quick", "--tasks", "cb"]).tasks == "cb"


def test_prompt_length_sweep_overrides_the_task_default():
    args = methods.parse_args(["--tasks", "conll03"])
    assert methods.prompt_length_for("conll03", "ptv2", args) == 100
    assert methods.prompt_length_for("cb", "ptv2", args) == 20
    args.sweep_prompt_length = 5
    assert methods.prompt_length_for("conll03", "ptv2", args) == 5


def test_equal_time_compares_methods_at_the_shortest_runs_clock():
    def run(label, points):
        history = [{"epoch": i + 1, "accuracy": acc, "elapsed_s": t} for i, (t, acc) in enumerate(points)]
        return report.Run("r", "cb", label, 1, history)

    table = report.equal_time([run("fast", [(10, 0.6), (20, 0.7)]), run("slow", [(15, 0.5), (30, 0.9)])])
    assert "| r | cb | fast | 1 | 20 | 70.0 | 70.0 |" in table
    assert "| r | cb | slow | 1 | 20 | 50.0 | 90.0 |" in table


@pytest.mark.parametrize(
    "name",
    [
        "ptv2",
        "ptv2-reparam",
        "ptv2-ptp-noise",
        "ptv2-ptp-adv",
        "prompt-tuning",
        "prompt-tuning-residual",
        "ptv1",
        "finetune",
        "peft-prefix",
        "apt",
        "lpt",
    ],
)
def test_every_method_has_settings(name):
    assert {"lr", "epochs", "patience"} <= set(methods.SETTINGS[name])


def test_variants_are_registered_methods_with_options():
    from ptuning.method import method_config

    assert set(methods.VARIANTS) <= set(methods.SETTINGS)
    for base, options in methods.VARIANTS.values():
        config = method_config(base, **options).to_dict()
        assert {k: config[k] for k in options} == options


def test_gap_table_prefers_test_figures_and_falls_back_to_dev(monkeypatch):
    def run(task, label, dev, test=None, round_name="r"):
        history = [{"epoch": 1, "f1": dev, "elapsed_s": 1.0}]
        row = {"test": {"f1": test} if test is not None else None, "epochs_run": 1, "epochs": 1}
        return report.Run(round_name, task, label, 1, history, row)

    monkeypatch.setattr(
        report_quality,
        "HEADLINE",
        [
            ("conll03", "r", ["finetune", "ptv2"]),
            ("squad", "r", ["finetune-e10", "ptv2"]),
            ("squad", "old", ["finetune", "ptv2"]),
        ],
    )
    runs = [run("conll03", "finetune", 0.9, 0.85), run("conll03", "ptv2", 0.88, 0.82)]
    runs += [run("squad", "finetune-e10", 0.7, 0.68), run("squad", "ptv2", 0.6)]
    # An older round with a better ptv2 figure: not compared against the first-listed fine-tuning row.
    runs += [run("squad", "finetune", 0.5, 0.5, "old"), run("squad", "ptv2", 0.69, 0.69, "old")]
    table = report.gaps(runs)
    assert "| conll03 | r | finetune | 85.0 | ptv2 | 82.0 | -3.0 | test f1 |" in table
    assert "| squad | r | finetune-e10 | 70.0 | ptv2 | 60.0 | -10.0 | dev f1 |" in table
    assert "69.0" not in table


def test_gap_table_compares_across_rounds_of_the_same_setup_only(monkeypatch):
    def run(label, dev, round_name):
        history = [{"epoch": 1, "f1a": dev, "elapsed_s": 1.0}]
        return report.Run(round_name, "multirc", label, 1, history, {"test": None, "epochs_run": 1, "epochs": 1})

    monkeypatch.setattr(report_quality, "SAME_SETUP", {"b": "a"})
    headline = [("multirc", "a", ["finetune", "ptv2"]), ("multirc", "b", ["ptv2-lr"]), ("multirc", "c", ["ptv2"])]
    monkeypatch.setattr(report_quality, "HEADLINE", headline)
    runs = [run("finetune", 0.6, "a"), run("ptv2", 0.5, "a"), run("ptv2-lr", 0.55, "b"), run("ptv2", 0.7, "c")]
    table = report.gaps(runs)
    assert "| multirc | a | finetune | 60.0 | ptv2-lr (b) | 55.0 | -5.0 | dev f1a |" in table
    assert "70.0" not in table  # round c is another setup


def test_gpu_round_histories_join_their_finished_rows(tmp_path, monkeypatch):
    """Run directories are named task-method+tag-P<len>-seed; the finished row is keyed without the P."""
    row = {"task": "conll03", "method": "ptv2", "tag": "-e30", "seed": 1, "epochs_run": 2, "epochs": 30}
    row["stopped_by"] = "time"
    history = [{"epoch": 1, "f1": 0.7, "elapsed_s": 5.0}, {"epoch": 2, "f1": 0.8, "elapsed_s": 9.0}]
    data = {"complete": [{"rows": [row]}], "partial": {"conll03-ptv2-e30-P100-1": history}, "logs": {}}
    (tmp_path / "gpu-round").mkdir()
    (tmp_path / "gpu-round" / "round.json").write_text(json.dumps(data))
    monkeypatch.setattr(report_runs, "RESULTS", tmp_path)
    [run] = report.load_runs()
    assert (run.label, run.seed, run.row, run.stopped_by) == ("ptv2-e30", 1, row, "time")


def test_prompt_length_table_lists_real_sweeps_and_leaves_out_quick_mode():
    def run(round_name, p, acc):
        row = {"prompt_length": p, "epochs_run": 3, "epochs": 30, "stopped_by": "patience"}
        history = [{"epoch": 1, "accuracy": acc / 2}, {"epoch": 2, "accuracy": acc}, {"epoch": 3, "accuracy": acc / 3}]
        return report.Run(round_name, "rte", f"ptv2-P{p}", 1, history, row)

    table = report.prompt_lengths([run("gpu", 50, 0.592), run("gpu", 1, 0.542), run("cpu", 5, 0.9)])
    first = table.index("| gpu | rte | 1 | 1 | accuracy 54.2 | — | 2 / 3 | patience |")
    assert first < table.index("| gpu | rte | 50 |")
    assert "90.0" not in table


def test_fp32_fallback_reruns_keep_their_run_label(tmp_path, monkeypatch):
    """A GPU round reruns a run whose bf16 attempt failed at start in fp32 (tag -fp32): it is the same seed's row."""
    rows = [
        {"task": "boolq", "method": "ptv2", "tag": "-e30", "seed": 2, "epochs_run": 1, "epochs": 30},
        {"task": "boolq", "method": "ptv2", "tag": "-e30-fp32", "seed": 1, "epochs_run": 1, "epochs": 30},
    ]
    partial = {
        "boolq-ptv2-e30-P20-2": [{"epoch": 1, "accuracy": 0.6, "elapsed_s": 1.0}],
        "boolq-ptv2-e30-fp32-P20-1": [{"epoch": 1, "accuracy": 0.7, "elapsed_s": 1.0}],
    }
    (tmp_path / "gpu").mkdir()
    data = {"complete": [{"rows": rows}], "partial": partial, "logs": {}}
    (tmp_path / "gpu" / "round.json").write_text(json.dumps(data))
    monkeypatch.setattr(report_runs, "RESULTS", tmp_path)
    runs = report.load_runs()
    assert [(r.label, r.seed, r.row is not None) for r in runs] == [("ptv2-e30", 1, True), ("ptv2-e30", 2, True)]


def test_sweep_plot_joins_the_earlier_run_of_the_same_schedule(monkeypatch):
    def run(round_name, label, p, f1):
        row = {"prompt_length": p, "epochs_run": 1, "epochs": 25}
        return report.Run(round_name, "conll03", label, 1, [{"epoch": 1, "f1": f1}], row)

    monkeypatch.setattr(report_quality, "SWEEP_JOIN", {("new", "conll03"): [("old", "ptv2-e25")]})
    runs = [run("new", "ptv2-P5", 5, 0.8), run("old", "ptv2-e25", 100, 0.9), run("old", "ptv2-e8", 100, 0.1)]
    sweep = report.sweep_runs(runs)
    assert report.sweep_points(sweep, "conll03", "new") == [(5, 80.0), (100, 90.0)]


def test_boolq_split_files_appear_whole_and_train_before_val(tmp_path, monkeypatch):
    """Runs sharing a work dir read the split while another creates it (a race seen on the GPU): each file must
    appear by an atomic rename, and val.jsonl (what readers check for) only once train.jsonl is whole."""
    import os

    lines = [json.dumps({"passage": f"passage {i}", "question": "q?", "label": i % 2 == 0}) for i in range(40)]
    (tmp_path / "val.jsonl").write_text("\n".join(lines) + "\n")
    placed = []
    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith("val.jsonl"):
            train = Path(dst).with_name("train.jsonl").read_text().splitlines()
            placed.append(("val", len(train)))
        else:
            placed.append((Path(dst).name, None))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    target = methods.boolq_split(tmp_path, tmp_path / "work")
    train_rows = len((target / "train.jsonl").read_text().splitlines())
    assert placed == [("train.jsonl", None), ("val", train_rows)]
    assert sorted(p.name for p in target.iterdir()) == ["train.jsonl", "val.jsonl"]


def test_efficiency_rows_split_each_step_into_forward_backward_and_optimizer(monkeypatch):
    """The efficiency table explains the step-time ratio by phase: each row carries the three medians."""
    import efficiency
    from conftest import tiny_backbone

    from ptuning import backbones

    backbone = tiny_backbone("bert", vocab_size=30522)  # the worker draws token ids up to 30,000
    monkeypatch.setattr(backbones, "load_backbone", lambda model, **_: (backbone, None, "tiny"))
    monkeypatch.setattr(efficiency, "artifact_bytes", lambda method, model, name: 0)
    finetune = efficiency.worker("finetune", 4, batch=2, length=8, steps=2)
    ptv2 = efficiency.worker("ptv2", 4, batch=2, length=8, steps=2)
    for row in (finetune, ptv2):
        assert all(row[f"{phase}_s"] > 0 for phase in efficiency.PHASES)
    assert ptv2["trainable_params"] < finetune["trainable_params"]
    adversarial = efficiency.worker("ptv2-ptp-adv", 4, batch=2, length=8, steps=2)  # methods.py's option rows
    assert adversarial["method"] == "ptv2-ptp-adv" and adversarial["trainable_params"] == ptv2["trainable_params"]
    calls = []
    built, _, _ = efficiency.build("ptv2-ptp-adv", 4)
    forward = built.forward
    monkeypatch.setattr(built, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    optimizer = torch.optim.AdamW([p for p in built.parameters() if p.requires_grad])
    efficiency.timed_step(built.train(), optimizer, *efficiency.fixed_batch(2, 8, "cpu"))
    assert len(calls) >= 2  # the adversarial pass is timed: the step is the method's own training loss


def test_efficiency_backbone_dropout_reaches_the_loaded_backbone(monkeypatch):
    """`--backbone-dropout` must change the measured model, not only the label on the row."""
    import efficiency
    from conftest import tiny_backbone

    from ptuning import backbones

    asked = []

    def load(model, **kw):
        asked.append(kw.get("dropout"))
        return tiny_backbone("bert", vocab_size=30522), None, "tiny"

    monkeypatch.setattr(backbones, "load_backbone", load)
    monkeypatch.setattr(efficiency, "artifact_bytes", lambda method, model, name: 0)
    row = efficiency.worker("ptv2", 4, batch=2, length=8, steps=1, dropout=0.0)
    pair = efficiency.paired(["finetune", "ptv2"], 4, batch=2, length=8, steps=1, dropout=0.0)
    assert asked == [0.0, 0.0, 0.0] and row["backbone_dropout"] == 0.0 and pair["backbone_dropout"] == 0.0


def test_shift_positions_numbers_real_tokens_from_the_prompt_length():
    """The PEFT-comparison diagnostic (method ptv2-shifted, now ptv2 --shift-positions): real tokens at P..P+L-1."""
    import torch
    from conftest import tiny_backbone

    from ptuning.heads import SequenceClassificationHead
    from ptuning.method import method_config
    from ptuning.model import PTuningModel

    def run(method: str) -> tuple[torch.Tensor, torch.Tensor]:
        head = SequenceClassificationHead(32, 2, "cls")
        model = PTuningModel(tiny_backbone("bert"), method_config(method, prompt_length=5), head).eval()
        seen = []
        model.backbone.embeddings.register_forward_pre_hook(
            lambda module, args, kwargs: seen.append(kwargs.get("position_ids")), with_kwargs=True
        )
        with torch.no_grad():
            hidden = model.encode(ids, torch.ones_like(ids))
        return hidden, seen[-1]

    ids = torch.randint(0, 128, (2, 7))
    shifted, positions = run("ptv2-shifted")
    assert torch.equal(positions, torch.arange(5, 12).expand(2, 7))
    plain, positions = run("ptv2")
    assert positions is None  # the model numbers them itself, from 0
    assert not torch.allclose(shifted, plain, atol=1e-4)


def test_efficiency_at_other_shapes_reports_each_files_ratios(tmp_path, monkeypatch):
    """efficiency-<shape>.json files add one ratio row each, computed from their own measurements."""
    (tmp_path / "cpu").mkdir()
    setup = {"batch": 32, "length": 52, "prompt_length": 100, "steps": 10, "command": "python efficiency.py --x"}
    rows = [
        {"method": "finetune", "step_s": 2.0, "peak_rss_mb": 1000.0},
        {"method": "ptv2", "step_s": 1.5, "peak_rss_mb": 700.0},
    ]
    paired = [{"methods": ["finetune", "ptv2"], "ratio": 0.71}, {"methods": ["peft-prefix", "ptv2"], "ratio": 0.9}]
    data = {"setup": setup, "rows": rows, "paired": paired}
    (tmp_path / "cpu" / "efficiency-conll.json").write_text(json.dumps(data))
    monkeypatch.setattr(report_runs, "RESULTS", tmp_path)
    text = report.efficiency_shapes()
    assert "| efficiency-conll.json | 32 | 52 | 100 | the checkpoint's | 10 | 0.750 | 0.710 | 0.700 | 0.900 |" in text
    assert "python efficiency.py --x" in text
    data["setup"]["backbone_dropout"] = 0.0
    (tmp_path / "cpu" / "efficiency-conll.json").write_text(json.dumps(data))
    assert "| efficiency-conll.json | 32 | 52 | 100 | 0 | 10 |" in report.efficiency_shapes()


def test_peft_prefix_is_a_registered_method_with_an_artifact(tmp_path, sst2_dir, tiny_bert_dir):
    """PEFT's prefix trains through the library's own pipeline; its best-dev artifact scores test splits."""
    pytest.importorskip("peft")
    from conftest import train_tiny

    from ptuning import artifact, pipeline

    out = tmp_path / "peft"
    summary = train_tiny("sst2", sst2_dir, out, tiny_bert_dir, method="peft-prefix", prompt_length=3, max_length=32)
    assert summary["trainable_params"] == 3 * 2 * 2 * 32 + (32 * 2 + 2)  # PEFT's prefix table + our head
    assert summary["backbone_params"] == artifact.load_artifact(out)[0].backbone_parameters()
    scored = pipeline.evaluate(out, str(sst2_dir))
    assert abs(scored["accuracy"] - summary["best"]["accuracy"]) < 1e-6


def test_peft_prefix_is_our_prefix_with_real_tokens_numbered_from_p(tiny_bert_dir):
    """The peft-prefix rows are a fair baseline only if PEFT computes what ours does, bar the position shift."""
    pytest.importorskip("peft")
    import peft_parity

    from ptuning import backbones

    _, tokenizer, _ = backbones.load_backbone(str(tiny_bert_dir))
    row = peft_parity.compare(lambda: backbones.load_backbone(str(tiny_bert_dir))[0], tokenizer, prompt_length=6)
    assert row["hidden_max_abs_diff_shifted"] < 1e-5 * row["hidden_max_abs"]
    assert row["grad_max_abs_diff_shifted"] < 1e-5 * row["grad_max_abs"]
    assert row["hidden_max_abs_diff_unshifted"] > 1e-3 * row["hidden_max_abs"]  # the shift is the one difference


def test_a_transformers_that_breaks_peft_prefix_stops_the_run_in_one_line():
    from peft_prefix import require_working_peft

    class Broken(torch.nn.Module):
        def forward(self, **_):
            raise ValueError("Model does not support past key values which are required for prefix tuning.")

    broken = Broken().train()
    with pytest.raises(SystemExit, match="--peft-python"):
        require_working_peft(broken)
    assert broken.training  # the check leaves the model's mode as it found it


def test_dropout_cost_compares_the_default_file_with_its_no_dropout_twin(tmp_path, monkeypatch):
    """The backbone-dropout table reads each file's own paired ratio and per-process RSS; it is left out until both
    files exist."""
    (tmp_path / "cpu").mkdir()
    monkeypatch.setattr(report_runs, "RESULTS", tmp_path)

    def write(name: str, ft_ms: float, ptv2_ms: float, ratio: float, dropout: float | None = None) -> None:
        pair = {"methods": ["finetune", "ptv2"], "ratio": ratio}
        pair.update(step_s={"finetune": ft_ms / 1000, "ptv2": ptv2_ms / 1000})
        pair.update(forward_s={"finetune": ft_ms / 2000, "ptv2": ptv2_ms / 2000})
        rows = [{"method": "finetune", "peak_rss_mb": 1000.0}, {"method": "ptv2", "peak_rss_mb": 600.0}]
        setup = {"backbone_dropout": dropout}
        (tmp_path / "cpu" / name).write_text(json.dumps({"setup": setup, "rows": rows, "paired": [pair]}))

    write("efficiency.json", 2000, 1500, 0.75)
    assert report.dropout_cost() == ""
    write("efficiency-nodropout.json", 1000, 600, 0.6, dropout=0.0)
    text = report.dropout_cost()
    assert "| the checkpoint's (0.1) | efficiency.json | 2000 (1000) | 1500 (750) | 0.750 | 0.600 |" in text
    assert "| 0 | efficiency-nodropout.json | 1000 (500) | 600 (300) | 0.600 | 0.600 |" in text


def test_dropout_accuracy_pairs_each_row_with_its_no_dropout_twin():
    """Same task, the earlier row against its `--backbone-dropout 0` repeat: means, seconds per epoch, difference."""

    def run(round_name: str, label: str, seed: int, accuracy: float, wall: float) -> report.Run:
        row = {"wall_s": wall, "epochs_run": 10}
        return report.Run(round_name, "cb", label, seed, [{"accuracy": accuracy}], row=row)

    kept = [run("cpu-init", "ptv2", 1, 0.70, 700.0), run("cpu-init", "ptv2", 2, 0.80, 900.0)]
    assert report.dropout_accuracy(kept) == ""
    dropped = [run("cpu-nodrop", "ptv2-nodrop", 1, 0.80, 400.0), run("cpu-nodrop", "ptv2-nodrop", 2, 0.82, 400.0)]
    text = report.dropout_accuracy(kept + dropped)
    row = "| cb | cpu-init, ptv2, seeds 1,2 | 75.0 ± 7.1 | 80 | cpu-nodrop, ptv2-nodrop, seeds 1,2 | 81.0 ± 1.4 | 40 "
    row += "| +6.0 |"
    assert row in text


def test_the_low_resource_table_reports_the_reported_split_and_only_low_resource_runs():
    import report_fewshot

    def run(seed, reported, fewglue=True):
        row = {"best": {"accuracy": 0.7}, "reported": {"accuracy": reported} if reported else None, "epochs_run": 5}
        row.update(epochs=60, stopped_by="patience", fewglue=fewglue, majority=0.5, backbone_dropout=0.0)
        return report.Run("cpu-fewglue", "cb", "ptv2", seed, [{"epoch": 1, "accuracy": 0.7}], row)

    table = report_fewshot.fewshot_table([run(1, 0.6), run(2, 0.7), run(3, None, fewglue=False)])
    assert "| cb | FewGLUE 32 | ptv2 | cpu-fewglue | 2 | 65.0 ± 7.1 | 70.0 ± 0.0 | 50.0 | patience | 0.0 |" in table
    assert report_fewshot.fewshot_table([run(3, None, fewglue=False)]) == "No low-resource runs yet.\n"


def test_learning_curves_average_each_k_over_draws(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import report_fewshot

    def run(k, seed, value):
        row = {"best": {"accuracy": 0.6}, "reported": {"accuracy": value}, "few_shot": k, "epochs_run": 3}
        row.update(epochs=60, stopped_by="patience", majority=0.5)
        return report.Run("cpu-fewshot", "rte", "ptv2", seed, [{"epoch": 1, "accuracy": 0.6}], row)

    runs = [run("full", 1, 0.8), run(16, 1, 0.5), run(16, 2, 0.6), run(32, 1, 0.7)]
    points = report_fewshot.curve_points(runs)["rte"]["ptv2"]
    assert [(k, round(m, 1), n) for k, m, _, n in points] == [(16, 55.0, 2), (32, 70.0, 1), ("full", 80.0, 1)]
    assert report_fewshot.plot_learning_curves(runs, plt, tmp_path / "curves.png")
    again = report.Run("cpu-fewshot-2", "rte", "ptv2", 2, [{"epoch": 1, "accuracy": 0.6}], run(16, 2, 0.9).row)
    with pytest.raises(SystemExit, match="rte ptv2 K=16 seed 2 is in rounds cpu-fewshot and cpu-fewshot-2"):
        report_fewshot.curve_points([*runs, again])
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_the_goal_verdict_averages_k_up_to_64_and_names_where_the_lines_cross():
    """ptv2 − fine-tuning at K ≤ 64 over points with ≥ 5 draws of both; a sign change along K is a crossing."""
    import report_fewshot

    def point(k, mean, std, n=5):
        return (k, mean, std, n)

    curves = {
        "rte": {
            "ptv2": [point(16, 55.0, 1.0), point(32, 56.0, 1.0), point(64, 57.0, 1.0), point(128, 58.0, 1.0)],
            "finetune": [point(16, 53.0, 3.0), point(32, 55.0, 3.0), point(64, 58.0, 3.0), point(128, 62.0, 2.0)],
        },
        "sst2": {"ptv2": [point(16, 70.0, 2.0, n=3)], "finetune": [point(16, 50.0, 9.0, n=3)]},  # too few draws
    }
    text = report_fewshot.goal_verdict(curves)
    assert "met.**" in text and "not met" not in text
    assert "the 3 points with ≥ 5 draws of both (rte K=16, rte K=32, rte K=64)" in text
    assert "is +0.7 points on average" in text and "averages 1.0 for ptv2 against 3.0 for fine-tuning" in text
    assert (
        "- rte, ptv2 − fine-tuning by K: 16 +2.0, 32 +1.0, 64 -1.0, 128 -4.0; the lines cross between K=32 and K=64."
        in text
    )
    assert "- sst2, ptv2 − fine-tuning by K: 16 +20.0; ptv2 leads at every K." in text
    assert "majority class" not in text
    below = report_fewshot.goal_verdict(curves, {"rte": 55.5})  # both under the floor at K=16 only
    assert "At 1 of them (rte K=16) neither method reaches the majority class" in below
    curves["rte"]["ptv2"][0] = point(16, 45.0, 1.0)  # the average turns negative
    assert "not met" in report_fewshot.goal_verdict(curves)
    assert report_fewshot.goal_verdict({"rte": {"ptv2": [point(16, 50.0, 1.0)]}}) == ""


def test_the_learning_curve_ends_at_the_summary_tables_full_data_dev_metric(monkeypatch):
    """``full`` comes from the summary cell of the same method (dev metric), only for methods with K-shot rows."""
    import report_fewshot

    monkeypatch.setattr(report_fewshot, "SUMMARY", [("rte", "full", {"ptv2": ("r2", "ptv2"), "ptv1": ("r2", "ptv1")})])

    def shot(seed, value):
        row = {"best": {"accuracy": 0.6}, "reported": {"accuracy": value}, "few_shot": 16, "epochs_run": 3}
        return report.Run("cpu-fewshot", "rte", "ptv2", seed, [{"epoch": 1, "accuracy": 0.6}], row)

    def standard(label, seed, dev):
        return report.Run("r2", "rte", label, seed, [{"epoch": 1, "accuracy": dev}], {"epochs_run": 1})

    runs = [shot(1, 0.5), standard("ptv2", 1, 0.60), standard("ptv2", 2, 0.64), standard("ptv1", 1, 0.7)]
    curves = report_fewshot.curve_points(runs)
    assert [(k, round(m, 1), n) for k, m, _, n in curves["rte"]["ptv2"]] == [(16, 50.0, 1), ("full", 62.0, 2)]
    assert "ptv1" not in curves["rte"]
    assert "| rte | ptv2 | 50.0 ± 0.0 (1) | 62.0 ± 2.8 (2) | 52.7 |" in report_fewshot.curve_table(
        curves, {"rte": 52.7}
    )


def test_the_fewglue_verdict_uses_the_few_shot_fine_tuning_round_and_leaves_wsc_out():
    import report_fewshot

    def run(task, label, round_name, seed, value):
        row = {"best": {"accuracy": 0.5}, "reported": {"accuracy": value}, "fewglue": True, "epochs_run": 3}
        return report.Run(round_name, task, label, seed, [{"epoch": 1, "accuracy": 0.5}], row)

    runs = [run("cb", "ptv2", "cpu-fewglue", s, 0.60 + s / 100) for s in range(1, 6)]
    runs += [run("cb", "finetune", "cpu-fewglue-ft", s, 0.55 + s / 100) for s in range(1, 6)]
    runs += [run("cb", "finetune", "cpu-fewglue", s, 0.10) for s in range(1, 6)]  # the full-data schedule: not used
    pairs = [("ptv2", "cpu-fewglue"), ("finetune", "cpu-fewglue-ft")]
    runs += [run("wsc", m, r, s, 0.9 if m == "ptv2" else 0.1) for m, r in pairs for s in range(1, 6)]
    text = report_fewshot.fewglue_verdict(runs)
    assert "Over FewGLUE's cb (WSC left out" in text and "is +5.0 points" in text
    assert report_fewshot.fewglue_verdict(runs[:4]) == ""  # fewer than 5 seeds: no verdict


def test_summary_table_reports_test_metric_seeds_trainable_share_and_gap(monkeypatch):
    """The opening table: test F1 where the task has one, one-seed and time-cap marks, trainable %, the gap."""
    import report_summary

    def run(label, seed, dev, test, stopped="patience", trainable=100):
        row = {"test": {"f1": test}, "stopped_by": stopped, "trainable_params": trainable, "backbone_params": 1000}
        row.update(epochs_run=3, epochs=30)
        return report.Run("r", "conll03", label, seed, [{"epoch": 1, "f1": dev}], row)

    config = [("conll03", "1k subset", {"finetune": ("r", "ft"), "ptv2": ("r", "p2"), "ptv1": ("r", "missing")})]
    monkeypatch.setattr(report_summary, "SUMMARY", config)
    runs = [run("ft", 1, 0.9, 0.80, trainable=1000), run("ft", 2, 0.9, 0.82, trainable=1000)]
    runs.append(run("p2", 1, 0.99, 0.75, stopped="time"))
    table = report.summary_table(runs)
    row = next(line for line in table.splitlines() if line.startswith("| conll03"))
    assert row == (
        "| conll03 | 1k subset | f1 (test) | 81.0 ± 1.4 (100.00 %) | 75.0 (1 seed) † (10.00 %) | — | — | — | — "
        "| -6.0 | — |"
    )
    assert "finetune r/ft, ptv2 r/p2" in table and "r/missing" not in table


def test_reproduce_plans_every_cell_and_estimates_from_earlier_runs_of_that_machine(tmp_path, monkeypatch):
    import reproduce

    cells = reproduce.plan("cpu", tmp_path, tmp_path / "out")
    assert len(cells) == len(reproduce.PLANS["cpu"]) * len(reproduce.METHODS)
    task, method, command, out = next(c for c in cells if c[:2] == ("sst2", "ptv2"))
    assert command[command.index("--max-train-samples") + 1] == "4000" and out == tmp_path / "out" / "sst2-ptv2.json"
    with pytest.raises(SystemExit, match="no harness row nope"):
        reproduce.main(["--budget", "cpu", "--methods", "ptv2,nope", "--dry-run", "--data-root", str(tmp_path)])
    head_to_head = reproduce.plan("gpu", tmp_path, tmp_path / "h2h", reproduce.METHOD_SETS["since-ptv2"], ["cb", "rte"])
    assert [(task, method) for task, method, _, _ in head_to_head][:3] == [
        ("cb", "ptv2"),
        ("cb", "apt"),
        ("cb", "ptv2-ptp-noise"),
    ]
    assert len(head_to_head) == 14 and all(c[2][c[2].index("--methods") + 1] == c[1] for c in head_to_head)

    def run(round_name, wall, **row):
        return report.Run(round_name, "cb", "x", 1, [], {"method": "ptv2", "wall_s": wall, **row})

    runs = [run("cpu-a", 100), run("cpu-b", 200), run("h100-x", 5), run("cpu-c", 9, reported={"accuracy": 1})]
    assert reproduce.estimate("cb", "ptv2", "cpu", runs) == 3 * 150
    assert reproduce.estimate("cb", "ptv2", "gpu", runs) == 15
    assert reproduce.estimate("cb", "finetune", "cpu", runs) is None
    ratios = tmp_path / "ratios.json"
    ratios.write_text(json.dumps({"paired": [{"methods": ["ptv2", "apt"], "ratio": 2.0}]}))
    monkeypatch.setattr(reproduce, "STEP_RATIOS", ratios)
    monkeypatch.setattr(reproduce, "load_runs", lambda: runs)
    cells = [("cb", m, [], tmp_path / f"cb-{m}.json") for m in ("ptv2", "apt", "lpt")]
    text = reproduce.describe(cells, "cpu")
    assert "cb       apt            ~   15 min (ptv2's runs x step ratio 2.00)" in text  # 2 x 450 s
    assert "lpt            no earlier cpu run to estimate from" in text
    assert "estimated: 0.4 h for the cells with earlier runs; 1 cell(s) without" in text


def test_the_imported_peft_prefix_section_reads_its_file(tmp_path, monkeypatch):
    """peft_import_shift.py's rows: PEFT's own score, then each import variant with its flips and logit change."""
    import report_studies

    monkeypatch.setattr(report_runs, "RESULTS", tmp_path)
    assert report_studies.peft_import() == ""  # nothing measured: no section
    setup = {"task": "cb", "backbone": "MiniLM", "prompt_length": 20, "head": "linear head", "epochs": 4, "lr": 0.01}
    setup.update(backbone_dropout=0.0, text_tokens=128, split="validation", transformers="5", peft="0.2", date="d")
    setup["command"] = "python benchmarks/peft_import_shift.py --seeds S"
    score = {"accuracy": 0.75, "macro_f1": 0.5}
    row = {"seed": 3, "examples": 56, "peft": score}
    for key, changed in (("peft_conventions", 0), ("no_shift", 4), ("token_types_kept", 1), ("neither", 5)):
        row[key] = {**score, "predictions_changed": changed, "max_abs_logit_diff_vs_peft": 0.5 * changed}
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "peft_import_shift.json").write_text(json.dumps({"setup": setup, "rows": [row]}))
    text = report_studies.peft_import()
    assert "python benchmarks/peft_import_shift.py --seeds S" in text and "(56 examples)" in text
    assert "| 3 | PEFT itself | P..P+L-1 | dropped | 75.0 | 50.0 | | |" in text
    assert "| 3 | no shift | 0..L-1 | dropped (PEFT's) | 75.0 | 50.0 | 4 | 2 |" in text
    assert "| 3 | neither | 0..L-1 | kept | 75.0 | 50.0 | 5 | 2.5 |" in text
    second = {**row, "seed": 4, "peft": {"accuracy": 0.85, "macro_f1": 0.5}}
    (tmp_path / "cpu" / "peft_import_shift.json").write_text(json.dumps({"setup": setup, "rows": [row, second]}))
    text = report_studies.peft_import()
    assert "| PEFT itself | 80.0 ± 7.1 | |" in text and "| no shift | 75.0 ± 0.0 | 8 of 112 |" in text


def test_the_since_ptv2_section_reads_its_round_and_the_paired_step_costs(tmp_path, monkeypatch):
    """Issue 20's table: per method and task mean ± std, the mean over complete tasks, the gap to ptv2, the costs."""
    import report_since_ptv2 as since

    monkeypatch.setattr(report_runs, "RESULTS", tmp_path)
    assert "No quality rows yet" in since.since_ptv2([])

    def run(label, task, seed, value):
        row = {"stopped_by": "patience", "trainable_params": 10, "backbone_params": 1000, "epochs_run": 3, "epochs": 9}
        return report.Run("reproduce-gpu-since-ptv2", task, label, seed, [{"epoch": 1, "accuracy": value}], row)

    runs = [run(m, "cb", s, 0.70 + 0.01 * i + 0.01 * s) for i, m in enumerate(since.METHODS) for s in (1, 2)]
    runs.append(run("apt", "copa", 1, 0.5))  # copa: not every method ran it, so the mean leaves it out
    text = since.since_ptv2(runs)
    assert "| ptv2 | 71.5 ± 0.7 (1.00 %) | — | 71.5 | +0.0 |" in text
    assert "| apt | 72.5 ± 0.7 (1.00 %) | 50.0 (1 seed) (1.00 %) | 72.5 | +1.0 |" in text
    assert "every method ran (cb)" in text

    setup = {"machine": "cpu", "threads": 2, "batch": 16, "length": 128, "prompt_length": 20, "steps": 20}
    setup.update(date="d", command="python benchmarks/efficiency.py --methods finetune,ptv2,apt")
    rows = [
        {"method": m, "trainable_params": n, "trainable_pct": n / 10, "step_s": s, "peak_rss_mb": r}
        for m, n, s, r in (("finetune", 1000, 2.0, 200.0), ("ptv2", 10, 1.0, 100.0), ("apt", 12, 1.5, 110.0))
    ]
    paired = [{"methods": ["ptv2", "apt"], "ratio": 1.25}]
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "since-ptv2-efficiency.json").write_text(
        json.dumps({"setup": setup, "rows": rows, "paired": paired})
    )
    costs = since.since_ptv2([])
    assert (
        "| ptv2 | 10 | 1.000 | 1 | 1.000 | 1.000 |" in costs and "| apt | 12 | 1.200 | 1.250 | 1.500 | 1.100 |" in costs
    )
    assert "--methods finetune,ptv2,apt" in costs


def test_methods_prefix_layers_reaches_the_run_and_its_row(tmp_path, tiny_bert_dir):
    """`methods.py --prefix-layers top:1` prompts the top layer only; methods without the option ignore it."""
    from conftest import write_cb

    data = write_cb(tmp_path / "cb")
    argv = ["--model", str(tiny_bert_dir), "--max-epochs", "1", "--max-length", "32", "--prefix-layers", "top:1"]
    args = methods.parse_args([*argv, "--work-dir", str(tmp_path / "w")])
    args.seed = 1
    row = methods.run_one("cb", "ptv2", data, args)
    assert row["prefix_layers"] == "top:1" and row["best"] is not None
    saved = json.loads(next((tmp_path / "w").glob("cb-ptv2-*")).joinpath("ptuning.json").read_text())
    assert saved["method"]["prefix_layers"] != "all"
    assert methods.run_one("cb", "prompt-tuning", data, args)["prefix_layers"] is None


def test_depth_quality_compares_top_layer_rows_with_the_full_depth_row():
    import report_studies

    def run(round_name, label, seed, value):
        return report.Run(round_name, "cb", label, seed, [{"epoch": 1, "accuracy": value}], {"stopped_by": "patience"})

    assert report_studies.depth_quality([run("cpu-nodrop", "ptv2-nodrop", 1, 0.8)]) == ""  # no top-layers row yet
    runs = [run("cpu-nodrop", "ptv2-nodrop", s, v) for s, v in ((1, 0.78), (2, 0.80))]
    runs += [run("cpu-depth", "ptv2-nodrop-top3", s, v) for s, v in ((1, 0.76), (2, 0.76))]
    text = report_studies.depth_quality(runs)
    assert "| cb | all 6 | cpu-nodrop, ptv2-nodrop | 1,2 | 79.0 ± 1.4 | +0.0 | patience |" in text
    assert "| cb | top 3 (`--prefix-layers top:3`) | cpu-depth, ptv2-nodrop-top3 | 1,2 | 76.0 ± 0.0 | -3.0 |" in text


def test_the_low_data_head_to_head_averages_complete_settings_and_weighs_parameters():
    """ptv2's rows join the others' by setting and seed; the goal counts only methods at ≤ ptv2's parameters."""
    import report_since_ptv2 as since

    def run(method, task, seed, value, params, round_name="cpu-since", **protocol):
        row = {"best": {"accuracy": 0.6, "f1": 0.6}, "reported": {"accuracy": value, "f1": value}, "epochs_run": 3}
        row.update(epochs=60, stopped_by="patience", trainable_params=params, **protocol)
        return report.Run(round_name, task, method, seed, [{"epoch": 1, "accuracy": 0.6, "f1": 0.6}], row)

    offsets = {"ptv2": 0.0, "apt": 0.03, "ptv2-ptp-noise": 0.005, "ptv2-ptp-adv": 0.0, "lpt": -0.1}
    offsets |= {"prompt-tuning": 0.05, "prompt-tuning-residual": 0.0}  # a baseline: never the goal's winner
    params = {"apt": 150, "lpt": 1000, "prompt-tuning": 10, "prompt-tuning-residual": 600}
    runs = [
        run(m, task, seed, base + off + 0.01 * seed, params.get(m, 100), **{key: value})
        for m, off in offsets.items()
        for task, key, value, base in (("cb", "fewglue", True, 0.6), ("sst2", "few_shot", 64, 0.7))
        for seed in range(1, 6)
    ]
    runs.append(run("ptv2", "sst2", 1, 0.9, 100, few_shot=32))  # another K: not a setting of the table
    text = since.low_data_table(runs)
    assert "| ptv2 | 1.00 | 63.0 ± 1.6 (5) | 73.0 ± 1.6 (5) | 68.0 | +0.0 | 1.6 |" in text
    assert "| apt | 1.50 | 66.0 ± 1.6 (5) | 76.0 ± 1.6 (5) | 71.0 | +3.0 | 1.6 |" in text
    assert "(cb (FewGLUE 32), sst2 (K=64))" in text
    assert "on this low-data protocol: not met.** Best at ≤ ptv2's parameters: ptv2-ptp-noise +0.5." in text
    assert "Best of all: apt +3.0 (trainable / ptv2 1.50)" in text
    twice = run("ptv2", "cb", 1, 0.5, 100, round_name="cpu-fewglue", fewglue=True)
    with pytest.raises(SystemExit, match="cb \\(FewGLUE 32\\) ptv2 seed 1 is in rounds cpu-since and cpu-fewglue"):
        since.low_data_table([*runs, twice])
