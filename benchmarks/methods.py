"""Compare methods on real data with the bundled MiniLM, each trained until dev stops improving.

For every (task, method, seed) it runs the library's own training pipeline with
early stopping on the dev metric and records the best dev metric, the epoch it
was reached at, the epochs run and the wall time. For the SuperGLUE tasks the
dev set selects the checkpoint and is also the reported set (as in the paper's
SuperGLUE dev results). CoNLL-2003 and SQuAD also report a test set scored with
the best-dev artifact: the official CoNLL test file, and for SQuAD (only the
1.1 dev file is at hand) the held-out test articles of `--split-by-article`.

    python benchmarks/methods.py --data-root ../shared/data --tasks cb,rte \
        --methods ptv2,finetune,prompt-tuning --out benchmarks/results/methods.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from ptuning.model import MethodConfig
from ptuning.pipeline import TrainRequest, evaluate, train
from ptuning.train import TrainConfig

# Per-method settings: prompts need far larger rates and more epochs than fine-tuning.
SETTINGS = {
    "finetune": {"lr": 3e-5, "epochs": 20, "patience": 4},
    "ptv2": {"lr": 1e-2, "epochs": 60, "patience": 10, "prompt_length": 20},
    "prompt-tuning": {"lr": 3e-2, "epochs": 60, "patience": 10, "prompt_length": 20},
    "ptv1": {"lr": 5e-3, "epochs": 60, "patience": 10, "prompt_length": 20},
    "linear-probe": {"lr": 5e-3, "epochs": 60, "patience": 10},
}
DATA_DIRS = {
    "cb": "superglue/cb",
    "rte": "superglue/rte",
    "copa": "superglue/copa",
    "wsc": "superglue/wsc",
    "multirc": "superglue/multirc",
    "sst2": "glue/sst2",
    "conll03": "conll2003",
    "squad": "squad/v1.1",
}
# Per-task settings that override the per-method ones (the paper uses long prompts for labelling tasks).
TASK_SETTINGS = {
    "conll03": {"prompt_length": 100, "max_length": 128},
    "squad": {"max_length": 384, "task_options": {"split_by_article": 0.4}},
}
INPUT_PROMPT_METHODS = ("prompt-tuning", "ptv1")
TEST_SPLITS = {"conll03": "test", "squad": "test"}


def run_one(task: str, method: str, data: Path, args) -> dict:
    task_settings = TASK_SETTINGS.get(task, {})
    s = dict(SETTINGS[method])
    if "prompt_length" in s:
        s["prompt_length"] = args.prompt_length or task_settings.get("prompt_length", s["prompt_length"])
    s["lr"] = args.lr or s["lr"]
    max_length = args.max_length or task_settings.get("max_length", 256)
    if method in INPUT_PROMPT_METHODS:  # the prompt takes input positions: give the text the same token budget
        max_length += s["prompt_length"]
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        run_dir = (args.work_dir or Path(tmp)) / f"{task}-{method}{args.tag}-{args.seed}"
        summary = train(
            TrainRequest(
                task=task,
                data=str(data),
                output=run_dir,
                overwrite=True,
                model=args.model,
                method=MethodConfig(method, s.get("prompt_length", 0), reparam=args.reparam),
                train=TrainConfig(
                    epochs=args.max_epochs or s["epochs"],
                    lr=s["lr"],
                    batch_size=args.batch_size,
                    patience=args.patience or s["patience"],
                    seed=args.seed,
                    max_minutes=args.max_minutes,
                ),
                max_length=max_length,
                max_train_samples=args.max_train_samples,
                max_eval_samples=args.max_eval_samples,
                pooling=args.pooling,
                task_options=task_settings.get("task_options", {}),
            )
        )
        wall = time.perf_counter() - started
        test = None
        if task in TEST_SPLITS and summary.get("best") is not None:
            test = evaluate(run_dir, str(data), TEST_SPLITS[task], model_name=args.model)
    best = summary["best"]
    return {
        "task": task,
        "method": method,
        **{k: v for k, v in s.items()},
        "seed": args.seed,
        "pooling": summary["pooling"],
        "max_length": max_length,
        "best": best,
        "best_epoch": summary["best_epoch"],
        "epochs_run": summary["epochs_run"],
        "stopped_by": summary.get("stopped_by"),
        "test": test,
        "tag": args.tag,
        "wall_s": round(wall, 1),
        "trainable_params": summary["trainable_params"],
        "backbone_params": summary["backbone_params"],
        "artifact_bytes": summary["artifact_bytes"],
        "history": [{k: v for k, v in h.items()} for h in summary["history"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--tasks", default="cb,rte")
    parser.add_argument("--methods", default="ptv2,finetune,prompt-tuning")
    parser.add_argument("--model", default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=None, help="Default: the task's (256; CoNLL 128; SQuAD 384).")
    parser.add_argument("--max-epochs", type=int, default=None, help="Override every method's epoch cap.")
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--max-eval-samples", type=int, default=None)
    parser.add_argument("--max-minutes", type=float, default=None, help="Wall-clock cap per run (reported).")
    parser.add_argument("--lr", type=float, default=None, help="Override the method's learning rate.")
    parser.add_argument("--prompt-length", type=int, default=None, help="Override the prompt length.")
    parser.add_argument("--tag", default="", help="Suffix for run directories (e.g. -lr2e-2).")
    parser.add_argument("--reparam", action="store_true")
    parser.add_argument("--patience", type=int, default=None, help="Override every method's patience.")
    parser.add_argument("--work-dir", type=Path, default=None, help="Keep each run's directory (metrics.jsonl) here.")
    parser.add_argument("--seeds", default="42", help="Comma-separated seeds; each (task, method) runs once per seed.")
    parser.add_argument("--pooling", default="auto", help="auto (cls for encoders) | cls | mean | last")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/methods.json"))
    args = parser.parse_args()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({platform.machine()})"
    import transformers

    rows = []
    for task in args.tasks.split(","):
        for method in args.methods.split(","):
            for seed in [int(x) for x in args.seeds.split(",")]:
                args.seed = seed
                row = run_one(task, method, args.data_root / DATA_DIRS[task], args)
                rows.append(row)
                metrics = ", ".join(f"{k} {v:.4f}" for k, v in row["best"].items())
                if row["test"]:
                    metrics += " | test " + ", ".join(
                        f"{k} {v:.4f}" for k, v in row["test"].items() if isinstance(v, float)
                    )
                print(
                    f"RESULT {task:5} {method}{args.tag} seed {seed} {args.pooling} {metrics} | "
                    f"best epoch {row['best_epoch']} of {row['epochs_run']} run ({row['stopped_by']}) | "
                    f"{row['wall_s']} s",
                    flush=True,
                )
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(
                    json.dumps(
                        {
                            "device": device,
                            "torch": torch.__version__,
                            "transformers": transformers.__version__,
                            "batch_size": args.batch_size,
                            "max_length": args.max_length,
                            "reparam": args.reparam,
                            "rows": rows,
                        },
                        indent=1,
                    )
                )


if __name__ == "__main__":
    main()
