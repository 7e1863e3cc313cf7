"""Epoch and step time of prompts in some layers only, with and without the activation cache (``efficiency.py
--depth``).

Each setting trains for real (the library's own loop, ``pipeline.train``) on a task's training file, in a fresh
process, so that its peak RSS is its own: fine-tuning, PEFT's prefix tuning, ptv2 in every layer, and ptv2 in the
top half and top third of the layers (``top:half`` is ``top:N//2``, ``top:third`` ``top:N//3``), each of the last two
with and without the activation cache. Every row records each epoch's training time (``train_s``, evaluation
excluded) and evaluation time, the step time (an epoch's training time over its steps), peak RSS and the metrics.
Epoch 1 fills the cache; the later epochs are the ones it speeds up, so rows report both.

Paired: the settings run in rounds, one fresh process each, in an order rotated every round, and each ratio to
fine-tuning is taken within a round and then the median over rounds, so drift on a shared machine (minutes between
rounds) does not bias a ratio. A cached and an uncached run of the same depth must give the same metrics: the
summary says whether they did.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = (
    "finetune",
    "peft-prefix",
    "ptv2",
    "ptv2@top:half",
    "ptv2@top:half@nocache",
    "ptv2@top:third",
    "ptv2@top:third@nocache",
)
FRACTIONS = {"half": 2, "third": 3}


def parse(setting: str, num_layers: int) -> tuple[str, str | None, bool]:
    """``(method, --prefix-layers or None, cache)`` of a setting such as ``ptv2@top:half@nocache``."""
    method, *rest = setting.split("@")
    layers = next((r for r in rest if r != "nocache"), None)
    if layers and layers.startswith("top:") and layers[4:] in FRACTIONS:
        layers = f"top:{max(1, num_layers // FRACTIONS[layers[4:]])}"
    return method, layers, "nocache" not in rest


def worker(setting: str, args) -> dict:
    """Train one setting in this process; its per-epoch times, step time, peak RSS and metrics."""
    sys.path.insert(0, str(Path(__file__).parent))
    import peft_prefix  # noqa: F401  (registers the benchmark-only method peft-prefix)
    from transformers import AutoConfig

    from ptuning import backbones, pipeline
    from ptuning.loop import TrainConfig
    from ptuning.method import method_config

    depth = AutoConfig.from_pretrained(backbones.resolve_model_name(args.model)).num_hidden_layers
    method, layers, cache = parse(setting, depth)
    options = {"prompt_length": args.prompt_length} | ({"prefix_layers": layers} if layers else {})
    with tempfile.TemporaryDirectory() as out:
        summary = pipeline.train(
            pipeline.TrainRequest(
                task=args.task,
                data=args.data,
                output=Path(out) / "run",
                model=args.model,
                method=method_config(method, strict=False, **options),
                train=TrainConfig(
                    epochs=args.epochs,
                    batch_size=args.batch_size,
                    seed=args.seed,
                    backbone_dropout=args.backbone_dropout,
                    activation_cache=cache,
                ),
                max_length=args.max_length,
                max_train_samples=args.max_train_samples,
                max_eval_samples=args.max_eval_samples,
            )
        )
    history = summary["history"]
    steps = [b["step"] - a["step"] for a, b in zip([{"step": 0}, *history], history, strict=False)]
    epochs = [{"train_s": h["train_s"], "eval_s": h["eval_s"], "steps": n} for h, n in zip(history, steps, strict=True)]
    later = epochs[1:] or epochs
    import torch
    import transformers

    return {
        "setting": setting,
        "method": method,
        "prefix_layers": layers or ("all" if method.startswith("ptv2") else None),
        "activation_cache": summary["activation_cache"],
        "trainable_params": summary["trainable_params"],
        "epochs": epochs,
        "first_epoch_s": epochs[0]["train_s"],
        "later_epoch_s": statistics.median(e["train_s"] for e in later),
        "later_eval_s": statistics.median(e["eval_s"] for e in later),
        "step_s": statistics.median(e["train_s"] / e["steps"] for e in later),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "metrics": [{k: v for k, v in h.items() if k not in ("train_s", "eval_s", "elapsed_s")} for h in history],
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def measure(python: str, setting: str, args) -> dict:
    """One setting in a fresh process of ``python``."""
    command = [python, str(Path(__file__).with_name("efficiency.py")), "--depth-worker", setting]
    for flag in ("task", "data", "model", "epochs", "batch_size", "seed", "backbone_dropout", "prompt_length"):
        value = getattr(args, flag)
        if value is not None:
            command += ["--" + flag.replace("_", "-"), str(value)]
    for flag in ("max_length", "max_train_samples", "max_eval_samples"):
        if getattr(args, flag) is not None:
            command += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"), "TQDM_DISABLE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{setting} failed in {python}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(rounds: list[dict[str, dict]]) -> dict:
    """Per setting: medians over rounds, and ratios to fine-tuning taken within each round (then the median)."""
    summary = {}
    for setting in rounds[0]:
        rows = [r[setting] for r in rounds]
        entry = {k: statistics.median(r[k] for r in rows) for k in ("first_epoch_s", "later_epoch_s", "step_s")}
        entry["peak_rss_mb"] = statistics.median(r["peak_rss_mb"] for r in rows)
        if all("finetune" in r for r in rounds):
            for key in ("later_epoch_s", "first_epoch_s", "step_s", "peak_rss_mb"):
                entry[f"{key}_vs_finetune"] = statistics.median(r[setting][key] / r["finetune"][key] for r in rounds)
        if all("peft-prefix" in r for r in rounds):
            entry["step_s_vs_peft_prefix"] = statistics.median(
                r[setting]["step_s"] / r["peft-prefix"]["step_s"] for r in rounds
            )
        summary[setting] = entry
    for setting in rounds[0]:
        if setting.endswith("@nocache") and setting.removesuffix("@nocache") in rounds[0]:
            cached = setting.removesuffix("@nocache")
            summary[cached]["same_metrics_as_nocache"] = all(
                same_metrics(r[cached]["metrics"], r[setting]["metrics"]) for r in rounds
            )
            summary[cached]["later_epoch_s_vs_nocache"] = statistics.median(
                r[cached]["later_epoch_s"] / r[setting]["later_epoch_s"] for r in rounds
            )
    return summary


def same_metrics(a: list[dict], b: list[dict], tolerance: float = 1e-5) -> bool:
    """Every metric (and training loss) of every epoch equal within ``tolerance``."""
    if len(a) != len(b):
        return False
    return all(
        abs(x[k] - y[k]) <= tolerance if isinstance(x[k], float) and isinstance(y[k], float) else x[k] == y[k]
        for x, y in zip(a, b, strict=True)
        for k in x
    )


def run(args) -> dict:
    settings = args.settings.split(",")
    rounds = []
    for i in range(args.rounds):
        order = settings[i % len(settings) :] + settings[: i % len(settings)]  # rotated: drift spreads evenly
        rows = {}
        for setting in order:
            python = args.peft_python if setting.startswith("peft") and args.peft_python else sys.executable
            rows[setting] = measure(python, setting, args)
            r = rows[setting]
            print(
                f"round {i + 1} {setting:24} epoch 1 {r['first_epoch_s']:7.1f} s, later {r['later_epoch_s']:7.1f} s, "
                f"step {1000 * r['step_s']:6.0f} ms, peak RSS {r['peak_rss_mb']:6.0f} MB",
                flush=True,
            )
        rounds.append({s: rows[s] for s in settings})
    summary = summarise(rounds)
    first = rounds[0][settings[0]]
    setup = {
        "task": args.task,
        "data": Path(args.data).name,
        "epochs": args.epochs,
        "batch": args.batch_size,
        "max_length": args.max_length,
        "max_train_samples": args.max_train_samples,
        "max_eval_samples": args.max_eval_samples,
        "prompt_length": args.prompt_length,
        "backbone_dropout": args.backbone_dropout,
        "rounds": args.rounds,
        "torch": first["torch"],
        "threads": first["threads"],
        "machine": f"cpu ({os.uname().machine}, {os.cpu_count()} cores)",
        "date": time.strftime("%Y-%m-%d"),
        "command": "python benchmarks/efficiency.py " + " ".join(sys.argv[1:]),
    }
    for setting, entry in summary.items():
        ratio = entry.get("later_epoch_s_vs_finetune")
        print(
            f"{setting:24} later epoch {entry['later_epoch_s']:7.1f} s"
            + (f" ({ratio:.3f} of finetune)" if ratio is not None else "")
            + f", step {1000 * entry['step_s']:6.0f} ms, peak RSS {entry['peak_rss_mb']:6.0f} MB"
            + (
                f", same metrics as without the cache: {entry['same_metrics_as_nocache']}"
                if "same_metrics_as_nocache" in entry
                else ""
            )
        )
    return {"setup": setup, "summary": summary, "rounds": rounds}
