"""``--shard-backbone``: the frozen backbone split across two CPU processes (gloo, FSDP2) while the prompt trains."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_backbone, train_argv

from ptuning import pipeline
from ptuning.errors import PTuningError
from ptuning.method import method_config
from ptuning.model import PTuningModel
from ptuning.shard import shard_frozen_backbone

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "accelerate" / "two-processes.yaml"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
WORKER = str(ROOT / "tests" / "shard_worker.py")


def _launch(*args: str) -> subprocess.CompletedProcess:
    launcher = shutil.which("accelerate")
    if launcher is None:
        pytest.skip("accelerate CLI not on PATH")
    env = {**ENV, "ACCELERATE_USE_CPU": "1"}
    command = [launcher, "launch", "--config_file", str(CONFIG), *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_two_sharded_processes_follow_the_one_process_loss_curve_holding_half_the_weights(tmp_path, tiny_bert_dir):
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    methods = "ptv2,prompt-tuning"  # a deep prefix; an input prompt (the word embeddings run before the backbone)
    alone = subprocess.run(
        [sys.executable, WORKER, str(tiny_bert_dir), str(one), "--methods", methods], env=ENV, capture_output=True
    )
    assert alone.returncode == 0, alone.stderr[-2000:]
    _launch(WORKER, str(tiny_bert_dir), str(two), "--shard", "--methods", methods)
    for method in methods.split(","):
        single, sharded = json.loads(one.read_text())[method], json.loads(two.read_text())[method]
        # Same data per step, dropout off: only the order of floating-point sums differs (measured: < 2e-7).
        assert sharded["losses"] == pytest.approx(single["losses"], abs=1e-5), method
        assert len(set(round(x, 3) for x in single["losses"])) > 1  # the prompt trained: the curve moves
        whole = single["parameter_bytes"][0]
        held = sharded["parameter_bytes"]
        assert len(held) == 2 and all(0.45 * whole < h < 0.6 * whole for h in held), (whole, held)  # measured: 0.51
        assert "this process holds" in sharded["note"]


@pytest.mark.slow
def test_cli_trains_with_a_sharded_backbone_in_two_processes(tmp_path, sst2_dir, tiny_bert_dir):
    out = tmp_path / "sharded"
    args = train_argv(sst2_dir, tiny_bert_dir, out, "--prompt-length", "4", "--epochs", "6", "--lr", "0.05")
    done = _launch("-m", "ptuning.cli", *args, "--batch-size", "8", "--max-length", "32", "--shard-backbone")
    assert "--shard-backbone: this process holds" in done.stdout
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["steps"] == 6 * 4  # 64 examples, 2 processes x batch 8
    assert summary["history"][-1]["train_loss"] < summary["history"][0]["train_loss"]
    evaluated = pipeline.evaluate(out, str(sst2_dir))  # the artifact loads whole, in one process
    assert evaluated["accuracy"] == pytest.approx(summary["best"]["accuracy"])


def test_sharding_refuses_a_trained_backbone_and_says_when_there_is_nothing_to_shard():
    from accelerate import Accelerator

    from ptuning.heads import SequenceClassificationHead

    accelerator = Accelerator(cpu=True)
    head = SequenceClassificationHead(32, 2, "mean")
    prompt = PTuningModel(tiny_backbone("bert"), method_config("ptv2", prompt_length=2), head)
    assert "nothing to shard across" in shard_frozen_backbone(prompt, accelerator)
    finetune = PTuningModel(tiny_backbone("bert"), method_config("finetune"), head)
    with pytest.raises(PTuningError, match="--method finetune trains"):
        shard_frozen_backbone(finetune, accelerator)
