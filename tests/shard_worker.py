"""A few training steps on a tiny BERT, with or without ``--shard-backbone``'s sharding, in 1 or N processes.

Run by ``tests/test_shard.py`` as ``python tests/shard_worker.py MODEL_DIR OUT.json [--shard] [--methods M,N]``,
alone or under ``accelerate launch`` (one launch runs every method: a launch costs seconds of start-up). Every
process reads the same global batches and trains on its own slice of each, so one process and N processes see
the same data per step. Dropout is off (backbone and head), so the loss curves must agree up to floating-point
reduction order. Writes the global mean loss of each step and each process's parameter bytes, per method (rank 0).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed

from ptuning import backbones
from ptuning.heads import SequenceClassificationHead
from ptuning.loop import TrainConfig
from ptuning.method import method_config
from ptuning.model import PTuningModel
from ptuning.optim import GradientUpdate
from ptuning.shard import parameter_bytes, shard_frozen_backbone

STEPS, GLOBAL_BATCH, LENGTH = 6, 8, 12


def run(method: str, args, accelerator) -> dict:
    set_seed(0)
    backbone, _, _ = backbones.load_backbone(args.model_dir, dropout=0.0)
    head = SequenceClassificationHead(backbone.config.hidden_size, 2, "mean", dropout=0.0)
    model = PTuningModel(backbone, method_config(method, prompt_length=4), head)
    config = TrainConfig(lr=0.05, batch_size=GLOBAL_BATCH, warmup_ratio=0.0, scheduler="constant", max_grad_norm=1e9)
    note = shard_frozen_backbone(model, accelerator) if args.shard else "not sharded"
    update = GradientUpdate(model, config, n_features=STEPS * GLOBAL_BATCH)
    prepared = update.prepare(accelerator, model)
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, backbone.config.vocab_size, (STEPS, GLOBAL_BATCH, LENGTH), generator=generator)
    labels = (ids[..., 0] % 2).long()  # (steps, batch)
    share = GLOBAL_BATCH // accelerator.num_processes
    rows = slice(accelerator.process_index * share, (accelerator.process_index + 1) * share)
    loss_fn = torch.nn.functional.cross_entropy
    losses = []
    for step in range(STEPS):
        batch = {"input_ids": ids[step, rows], "attention_mask": torch.ones_like(ids[step, rows])}
        loss = update.step(accelerator, prepared, model, batch, labels[step, rows], loss_fn)
        losses.append(float(accelerator.reduce(torch.tensor(loss), reduction="mean")))
    return {"losses": losses, "parameter_bytes": gather_object([parameter_bytes(model)]), "note": note}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("out", type=Path)
    parser.add_argument("--shard", action="store_true")
    parser.add_argument("--methods", default="ptv2")
    args = parser.parse_args()
    accelerator = Accelerator(cpu=True)
    results = {method: run(method, args, accelerator) for method in args.methods.split(",")}
    if accelerator.is_main_process:
        args.out.write_text(json.dumps(results))
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main()
