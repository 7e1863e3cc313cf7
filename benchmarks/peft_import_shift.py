"""How much does an imported PEFT prefix's dev metric change without PEFT's conventions?

Trains a prefix with PEFT itself on CB (its feature-extraction model on the bundled MiniLM with a linear head on
mean-pooled states: on transformers 5.24 PEFT's task models refuse encoders), saves it as PEFT does
(``save_pretrained``, the head beside it), imports it with ``ptuning import-peft`` four ways (real tokens numbered
from P as PEFT does, or from 0; token types dropped as PEFT does, or kept) and scores each on CB's validation
file with ``ptuning eval``'s code, beside PEFT's own score of the same prefix:

    python benchmarks/peft_import_shift.py --data-root ../shared/data --seeds 1 \
        --out benchmarks/results/cpu/peft_import_shift.json

A short run (a few epochs on CPU, the last epoch kept, no selection): the import's fidelity is the point, not
CB's best score. Every variant reads the same ``--budget`` text tokens per input (a shifted prefix's artifact gets
``--max-length`` budget + P, since its prefix takes P positions), so the variants differ in positions and segment
ids only. Each seed adds one row to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file

from ptuning import artifact, backbones, peft_interop, pipeline
from ptuning.io import atomic_write_text
from ptuning.loop import predict_logits
from ptuning.tasks import get_task

VARIANTS = {  # name: (shift_positions, drop_token_types)
    "peft_conventions": (True, True),
    "no_shift": (False, True),
    "token_types_kept": (True, False),
    "neither": (False, False),
}


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask[..., None].to(hidden.dtype)  # (B, L, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # (B, H)


def train_peft(args, seed: int, train_features: list, collate):
    """PEFT's prefix and a linear head, trained by a plain AdamW loop (PEFT drops the token types itself)."""
    from peft import PrefixTuningConfig, TaskType, get_peft_model

    torch.manual_seed(seed)
    backbone, _, _ = backbones.load_backbone(None, dropout=0.0)
    config = PrefixTuningConfig(task_type=TaskType.FEATURE_EXTRACTION, num_virtual_tokens=args.prompt_length)
    wrapped = get_peft_model(backbone, config)
    head = torch.nn.Linear(backbone.config.hidden_size, 3)
    trainable = [p for p in wrapped.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    wrapped.train()
    for epoch in range(args.epochs):
        order = torch.randperm(len(train_features), generator=generator).tolist()
        total = 0.0
        for start in range(0, len(order), args.batch_size):
            batch = collate([train_features[i] for i in order[start : start + args.batch_size]])
            labels = batch.pop("labels")
            hidden = wrapped(**batch).last_hidden_state  # (B, L, H)
            loss = torch.nn.functional.cross_entropy(head(mean_pool(hidden, batch["attention_mask"])), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(labels)
        print(f"seed {seed} epoch {epoch + 1}: train loss {total / len(order):.4f}", flush=True)
    return wrapped.eval(), head.eval()


@torch.no_grad()
def peft_logits(wrapped, head, features: list, collate) -> torch.Tensor:
    out = []
    for start in range(0, len(features), 32):
        batch = collate(features[start : start + 32])
        batch.pop("labels", None)
        out.append(head(mean_pool(wrapped(**batch).last_hidden_state, batch["attention_mask"])))
    return torch.cat(out)  # (N, 3)


def measure(args, seed: int) -> dict:
    task = get_task("cb")
    data = str(args.data_root / "superglue" / "cb")
    _, tokenizer, _ = backbones.load_backbone(None)
    budget = args.budget  # what PEFT trained on, and what every imported variant reads
    featurized = {}
    for split in ("train", "validation"):
        examples = task.records_to_examples(task.load_split(data, split), labelled=True)
        featurized[split] = (examples, task.featurize(examples, tokenizer, budget).features)
    collate = task.collator(tokenizer)
    started = time.perf_counter()
    wrapped, head = train_peft(args, seed, featurized["train"][1], collate)
    train_seconds = time.perf_counter() - started
    examples, features = featurized["validation"]
    theirs = peft_logits(wrapped, head, features, collate)
    row = {"seed": seed, "train_seconds": round(train_seconds, 1), "peft": task.evaluate(theirs, examples)}
    with tempfile.TemporaryDirectory() as tmp:
        adapter, head_file = Path(tmp) / "adapter", Path(tmp) / "head.safetensors"
        wrapped.save_pretrained(adapter)
        save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(head_file))
        for name, (shift, drop) in VARIANTS.items():
            out = Path(tmp) / name
            request = peft_interop.ImportRequest(
                adapter=adapter,
                output=out,
                task="cb",
                head=head_file,
                pooling="mean",
                max_length=args.budget + (args.prompt_length if shift else 0),
                shift_positions=shift,
                drop_token_types=drop,
            )
            peft_interop.import_adapter(request)
            scores = pipeline.evaluate(out, data, "validation", device="cpu")  # what `ptuning eval` prints
            ours = predict_logits(artifact.load_artifact(out)[0], features, collate, 32)
            row[name] = {k: scores[k] for k in task.metric_names}
            row[name]["max_abs_logit_diff_vs_peft"] = float((ours - theirs).abs().max())
            row[name]["predictions_changed"] = int((ours.argmax(-1) != theirs.argmax(-1)).sum())
    row["examples"] = len(examples)
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--prompt-length", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--budget", type=int, default=128, help="Text tokens per input (longer CB inputs are cut).")
    parser.add_argument("--out", type=Path, default=None, help="JSON file; each seed is added as a row.")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Token type ids are not supported")
    import peft
    import transformers

    setup = {
        "machine": f"cpu ({platform.machine()})",
        "date": time.strftime("%Y-%m-%d"),
        "command": "python benchmarks/peft_import_shift.py --data-root ../shared/data "
        + " ".join(f"--{k.replace('_', '-')} {getattr(args, k)}" for k in ("epochs", "prompt_length", "lr", "budget"))
        + " --seeds S"
        + (f" --out {args.out}" if args.out else ""),
        "backbone": "all-MiniLM-L6-v2",
        "task": "cb",
        "split": "validation",
        "prompt_length": args.prompt_length,
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "text_tokens": args.budget,
        "backbone_dropout": 0.0,
        "head": "linear head on mean-pooled states",
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    rows = []
    if args.out and args.out.exists():
        earlier = json.loads(args.out.read_text())
        same = ("prompt_length", "epochs", "lr", "batch_size", "text_tokens")
        if any(earlier["setup"].get(k) != setup[k] for k in same):
            raise SystemExit(f"{args.out} holds rows made with other settings ({', '.join(same)}); give another --out")
        rows = earlier["rows"]
    for seed in (int(s) for s in args.seeds.split(",")):
        rows = [r for r in rows if r["seed"] != seed] + [measure(args, seed)]
        if args.out:
            rows.sort(key=lambda r: r["seed"])
            atomic_write_text(args.out, json.dumps({"setup": setup, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
