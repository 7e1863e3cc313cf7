"""Training step time of each method on the bundled MiniLM (CPU or GPU).

One step = forward + backward + AdamW update on a random batch of real-token
ids, batch 16, length 128 by default. Reports the median of N timed steps after
warm-up, and the ratio of every method to `finetune`.

    python benchmarks/step_time.py --batch-size 16 --length 128 --steps 20
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from ptuning import backbones
from ptuning.heads import SequenceClassificationHead
from ptuning.model import MethodConfig, PTuningModel


def step_time(method: str, prompt_length: int, batch: int, length: int, steps: int, device: str) -> float:
    backbone, _, _ = backbones.load_backbone(None)
    head = SequenceClassificationHead(backbone.config.hidden_size, 2, "cls")
    model = PTuningModel(backbone, MethodConfig(method, prompt_length), head).to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (batch, length), generator=generator).to(device)
    mask = torch.ones_like(ids)
    labels = torch.randint(0, 2, (batch,), generator=generator).to(device)
    times = []
    for i in range(steps + 3):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(ids, mask), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--prompt-length", type=int, default=20)
    parser.add_argument("--methods", default="finetune,ptv2,prompt-tuning,ptv1,linear-probe")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    results = {}
    for method in args.methods.split(","):
        results[method] = step_time(method, args.prompt_length, args.batch_size, args.length, args.steps, args.device)
    base = results.get("finetune")
    print(
        f"# step time, MiniLM, batch {args.batch_size}, length {args.length}, P={args.prompt_length}, "
        f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, {platform.machine()}"
    )
    for method, seconds in results.items():
        ratio = f"{seconds / base:.3f}" if base else "n/a"
        print(f"{method:14} {seconds * 1000:8.1f} ms/step   ratio to finetune {ratio}")
    print(json.dumps({"step_time_s": results, "batch": args.batch_size, "length": args.length}))


if __name__ == "__main__":
    main()
