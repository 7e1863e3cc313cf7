"""How far one AdamW step moves the prefix, with and without the MLP reparameterisation.

Adam moves every weight by about ``lr`` per step whatever the gradient's scale.
Without reparameterisation the weights *are* the prefix, so a prefix value moves
by about ``lr``. With it, the prefix is the output of a 512-wide linear layer,
and a step that moves each of its 512 inputs' weights by ``lr`` in a correlated
direction moves every output by up to ``512 * |input| * lr``: the same learning
rate is a far larger step. This measures it on the bundled MiniLM: the RMS change
of the (folded) prefix per step over a few steps on a fixed batch, next to the
RMS of the backbone's own keys and values, which is the scale the prefix competes with.

    python benchmarks/prefix_step_size.py --out benchmarks/results/cpu/prefix_step_size.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ptuning import backbones
from ptuning.heads import SequenceClassificationHead
from ptuning.io import atomic_write_text
from ptuning.method import method_config
from ptuning.model import PTuningModel

SETTINGS = [(False, 1e-2), (True, 1e-2), (True, 5e-3), (True, 5e-4), (True, 1e-4)]


def rms(t: torch.Tensor) -> float:
    return t.pow(2).mean().sqrt().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--prompt-length", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    backbone, _, name = backbones.load_backbone(None)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (8, 64), generator=g)
    mask, labels = torch.ones_like(ids), torch.randint(0, 3, (8,), generator=g)
    rows = []
    for reparam, lr in SETTINGS:
        torch.manual_seed(0)
        head = SequenceClassificationHead(backbone.config.hidden_size, 3, "mean")
        model = PTuningModel(
            backbone, method_config("ptv2", prompt_length=args.prompt_length, reparam=reparam), head
        ).train()
        optimizer = torch.optim.AdamW(model.method.prefix_encoder.parameters(), lr=lr, weight_decay=0.0)
        initial = model.method.prefix_encoder.fold()
        steps = []
        for _ in range(args.steps):
            before = model.method.prefix_encoder.fold()
            torch.nn.functional.cross_entropy(model(ids, mask), labels).backward()
            optimizer.step()
            optimizer.zero_grad()
            steps.append(rms(model.method.prefix_encoder.fold() - before))
        rows.append({"reparam": reparam, "lr": lr, "initial_rms": rms(initial), "step_rms": steps})
        per_step = [round(s, 4) for s in steps]
        print(f"reparam={reparam!s:5} lr={lr:<6g} initial prefix RMS {rms(initial):.3f}; RMS change per step", per_step)
    with torch.no_grad():
        hidden = backbone(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        layers = backbone.encoder.layer
        keys = [rms(layer.attention.self.key(h)) for layer, h in zip(layers, hidden, strict=False)]
        values = [rms(layer.attention.self.value(h)) for layer, h in zip(layers, hidden, strict=False)]
    print("backbone key RMS per layer", [round(k, 3) for k in keys], "value RMS", [round(v, 3) for v in values])
    if args.out:
        result = {"backbone": name, "steps": args.steps, "prompt_length": args.prompt_length, "rows": rows}
        result.update(key_rms=keys, value_rms=values, date=time.strftime("%Y-%m-%d"), torch=torch.__version__)
        atomic_write_text(args.out, json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
