"""Compare methods on real data with the bundled MiniLM, each trained until dev stops improving.

For every (task, method, seed) it runs the library's own training pipeline with
early stopping on the dev metric and records the best dev metric, the epoch it
was reached at, the epochs run and the wall time. For the SuperGLUE tasks the
dev set selects the checkpoint and is also the reported set (as in the paper's
SuperGLUE dev results). CoNLL-2003 and SQuAD also report a test set scored with
the best-dev artifact: the official CoNLL test file, and for SQuAD (only the
1.1 dev file is at hand) the held-out test articles of `--split-by-article`
(every method, peft-prefix included, is a registered method: its best-dev artifact is scored).

    python benchmarks/methods.py --data-root ../shared/data --tasks cb,rte \
        --methods ptv2,finetune,prompt-tuning --out benchmarks/results/methods.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import peft_prefix  # noqa: E402,F401  (registers the benchmark-only methods peft-prefix and ptv2-shifted)
from methods_settings import (  # noqa: E402  (the tables; re-exported: report.py and the tests read them here)
    DATA_DIRS,
    FEW_SHOT_SETTINGS,
    FEWGLUE_DIRS,
    QUICK,
    SETTINGS,
    TASK_SETTINGS,
    TEST_SPLITS,
    VARIANTS,
)

from ptuning.distill import DistillConfig  # noqa: E402
from ptuning.io import atomic_write_text  # noqa: E402
from ptuning.loop import TrainConfig  # noqa: E402
from ptuning.method import method_class, method_config  # noqa: E402
from ptuning.pipeline import TrainRequest, evaluate, train  # noqa: E402


def boolq_split(data: Path, work: Path) -> Path:
    """Only BoolQ's val file is at hand: split it into train/val by a hash of the passage (no passage on both sides).

    Several runs may share one work dir at once: each file is written atomically, val last, so a run that sees
    val.jsonl never reads a train.jsonl another run is still writing.
    """
    target = work / "boolq-hash-split"
    if (target / "val.jsonl").exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    train, val = [], []
    for line in (data / "val.jsonl").read_text().splitlines():
        passage = json.loads(line)["passage"]
        (val if int(hashlib.sha256(passage.encode()).hexdigest()[:8], 16) % 5 == 0 else train).append(line)
    atomic_write_text(target / "train.jsonl", "\n".join(train) + "\n")
    atomic_write_text(target / "val.jsonl", "\n".join(val) + "\n")
    return target


def prompt_length_for(task: str, method: str, args) -> int:
    """The sweep's P, else --prompt-length, else the task's (100 for CoNLL), else the method's (20)."""
    sweep = args.sweep_prompt_length if method != "peft-prefix" else None
    default = SETTINGS[method]["prompt_length"]
    return sweep or args.prompt_length or TASK_SETTINGS.get(task, {}).get("prompt_length", default)


def majority_class(task_name: str, data: Path) -> float | None:
    """Accuracy of always answering the most frequent label of the validation file: the floor of a few-shot table.

    None where the task is not scored by accuracy (tagging and QA F1, MultiRC's F1a): no label to answer always.
    """
    from collections import Counter

    from ptuning.tasks import get_task

    task = get_task(task_name)
    if task.main_metric != "accuracy":
        return None
    labels = [str(e.label) for e in task.records_to_examples(task.load_split(str(data), "validation"), labelled=True)]
    return max(Counter(labels).values()) / len(labels)


def precision(args) -> dict:
    """How a row's forward passes ran: autocast (``--mixed-precision``) and the backbone's own dtype."""
    return {"mixed_precision": args.mixed_precision, "backbone_dtype": args.backbone_dtype}


def train_config_for(s: dict, batch_size: int, args) -> TrainConfig:
    """The loop's settings for one row: the method's (``s``) and the harness flags."""
    return TrainConfig(
        epochs=s["epochs"],
        lr=s["lr"],
        batch_size=batch_size,
        patience=s["patience"],
        seed=args.seed,
        max_minutes=args.max_minutes,
        mixed_precision=args.mixed_precision,
        backbone_dtype=args.backbone_dtype,
        group_by_length=args.group_by_length,
        eval_steps=args.eval_steps,
        backbone_dropout=args.backbone_dropout,
    )


def staged(args) -> dict:
    """The run's starting prompt (``--init-from``) and teacher (``--teacher``), for the library's request."""
    teacher = DistillConfig(args.teacher, args.distill_alpha, args.distill_temperature) if args.teacher else None
    return {"init_from": args.init_from, "distill": teacher}


def staged_row(args) -> dict:
    """What a row records of ``--init-from`` and ``--teacher`` (None: not used)."""
    teacher = {"path": args.teacher, "alpha": args.distill_alpha, "temperature": args.distill_temperature}
    return {"init_from": args.init_from, "teacher": teacher if args.teacher else None}


def settings_for(task: str, method: str, args) -> dict:
    """The method's settings, the low-resource schedule, the task's overrides and the flags, in that order."""
    task_settings = TASK_SETTINGS.get(task, {})
    s = dict(SETTINGS[method])
    if args.fewglue or args.few_shot:
        s.update(FEW_SHOT_SETTINGS.get(method, {}))
    if "prompt_length" in s:
        s["prompt_length"] = prompt_length_for(task, method, args)
    s["lr"] = args.lr or task_settings.get("lr", {}).get(method, s["lr"])
    s["epochs"] = args.max_epochs or s["epochs"]  # the row records what the run used, not the default
    s["patience"] = args.patience or s["patience"]
    return s


def run_one(task: str, method: str, data: Path, args) -> dict:
    task_settings = TASK_SETTINGS.get(task, {})
    s = settings_for(task, method, args)
    max_length = args.max_length or task_settings.get("max_length", 256)
    batch_size = args.batch_size or task_settings.get("batch_size", 16)
    base, variant = VARIANTS.get(method, (method, {}))
    shift = {"shift_positions": True} if args.shift_positions and method == "ptv2" else {}
    if args.prefix_layers and "prefix_layers" in method_class(base).config_class.option_names():
        shift["prefix_layers"] = args.prefix_layers  # a method option like the shift: the config and the row take it
    config = method_config(base, strict=False, prompt_length=s.get("prompt_length", 0), **shift)
    max_length += method_class(base).prompt_positions(config)  # an input prompt's positions: same text budget
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        shots = f"-k{args.few_shot}" if args.few_shot else ""  # runs at several K may share --work-dir
        run_dir = (
            args.work_dir or Path(tmp)
        ) / f"{task}-{method}{args.tag}-P{s.get('prompt_length', 0)}{shots}-{args.seed}"
        train_config = train_config_for(s, batch_size, args)
        options = {"max_length": max_length, "max_train_samples": args.max_train_samples}
        options.update(max_eval_samples=args.max_eval_samples, task_options=task_settings.get("task_options", {}))
        options.update(few_shot=args.few_shot, few_shot_seed=args.seed, **staged(args))  # each seed: its own K
        prompt = {"prompt_length": s.get("prompt_length", 0), **variant, **shift}
        prompt["reparam"] = args.reparam or variant.get("reparam", False)
        summary = train(
            TrainRequest(
                task=task,
                data=str(data),
                output=run_dir,
                overwrite=True,
                model=args.model,
                method=method_config(base, strict=False, **prompt, prefix_init_std=args.prefix_init_std),
                train=train_config,
                pooling=args.pooling,
                **options,
            )
        )
        wall = time.perf_counter() - started
        test = None
        # --quick: no full test pass; a low-resource row reports its validation set (the test pass would double
        # its evaluation time for a figure no table reads)
        scored = task in TEST_SPLITS and not args.quick and not (args.few_shot or args.fewglue)
        if scored and summary.get("best") is not None:
            test = evaluate(run_dir, str(data), TEST_SPLITS[task], model_name=args.model)
    best = summary["best"]
    return {
        "task": task,
        "method": method,
        **{k: v for k, v in s.items()},
        "seed": args.seed,
        "pooling": summary["pooling"],
        "max_length": max_length,
        "batch_size": batch_size,
        **precision(args),
        "group_by_length": args.group_by_length,
        "max_train_samples": args.max_train_samples,
        "eval_steps": args.eval_steps,
        "prefix_init_std": args.prefix_init_std if base == "ptv2" else None,
        "method_options": variant or None,
        "shift_positions": bool(args.shift_positions) if method == "ptv2" else None,
        "prefix_layers": shift.get("prefix_layers"),
        "backbone_dropout": args.backbone_dropout,
        **staged_row(args),
        "quick": bool(args.quick),
        "transformers": __import__("transformers").__version__,
        "data_note": "BoolQ: the val file split 80/20 by a hash of the passage" if task == "boolq" else None,
        "best": best,
        "best_epoch": summary["best_epoch"],
        "epochs_run": summary["epochs_run"],
        "stopped_by": summary.get("stopped_by"),
        "test": test,
        "tag": args.tag,
        "fewglue": bool(args.fewglue),
        "few_shot": args.few_shot,
        "splits": summary.get("splits"),
        "reported": summary.get("reported"),
        "majority": majority_class(task, data) if summary.get("reported") else None,
        "wall_s": round(wall, 1),
        "trainable_params": summary["trainable_params"],
        "backbone_params": summary["backbone_params"],
        "artifact_bytes": summary["artifact_bytes"],
        "history": [{k: v for k, v in h.items()} for h in summary["history"]],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--tasks", default="cb,rte", help=f"Comma-separated, from: {', '.join(DATA_DIRS)}.")
    parser.add_argument("--methods", default="ptv2,finetune,prompt-tuning", help=f"From: {', '.join(SETTINGS)}.")
    parser.add_argument("--model", default=None)
    parser.add_argument("--batch-size", type=int, default=None, help="Default: the task's (16; 32 for big tasks).")
    parser.add_argument("--max-length", type=int, default=None, help="Default: the task's (256; CoNLL 128; SQuAD 384).")
    parser.add_argument("--max-epochs", type=int, default=None, help="Override every method's epoch cap.")
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--max-eval-samples", type=int, default=None)
    parser.add_argument("--max-minutes", type=float, default=None, help="Wall-clock cap per run (reported).")
    parser.add_argument(
        "--mixed-precision", default="no", help="no | bf16 | fp16 (autocast forwards; fp32 weights and prompts)."
    )
    parser.add_argument(
        "--backbone-dtype", default="fp32", help="fp32 | bf16 | fp16 | int8: the frozen backbone's precision (GPU)."
    )
    parser.add_argument("--group-by-length", action="store_true", help="Batch similar lengths (less padding).")
    parser.add_argument("--lr", type=float, default=None, help="Override the method's learning rate.")
    parser.add_argument("--prompt-length", type=int, default=None, help="Override the prompt length.")
    parser.add_argument("--prompt-lengths", default=None, help="Also sweep ptv2 over these P (e.g. 1,5,20,50,100).")
    parser.add_argument("--sweep-tasks", default="rte,conll03", help="Tasks the --prompt-lengths sweep runs on.")
    parser.add_argument("--tag", default="", help="Suffix for run directories (e.g. -lr2e-2).")
    parser.add_argument("--reparam", action="store_true")
    parser.add_argument(
        "--prefix-init-std", type=float, default=0.02, help="ptv2: std of the prefix's initial values (PEFT: 1.0)."
    )
    parser.add_argument(
        "--shift-positions",
        action="store_true",
        help="ptv2, diagnostic: number real tokens from P, as PEFT's cache-based prefix does (ptv2 --shift-positions).",
    )
    parser.add_argument(
        "--prefix-layers", default=None, help="ptv2, apt: the layers the prompt enters (top:K, A-B; default all)."
    )
    parser.add_argument("--patience", type=int, default=None, help="Override every method's patience.")
    parser.add_argument(
        "--backbone-dropout", type=float, default=None, help="Every dropout rate in the backbone (default: its own)."
    )
    parser.add_argument(
        "--eval-steps", type=int, default=None, help="Evaluate every N steps (patience counts these); big data sets."
    )
    parser.add_argument("--work-dir", type=Path, default=None, help="Keep each run's directory (metrics.jsonl) here.")
    parser.add_argument("--seeds", default="42", help="Comma-separated seeds; each (task, method) runs once per seed.")
    parser.add_argument("--pooling", default="auto", help="auto (cls for encoders) | cls | mean | last")
    parser.add_argument("--peft-python", default=None, help="Interpreter that runs the peft-prefix rows (see README).")
    parser.add_argument("--quick", action="store_true", help="A small subset of every task: about 20 min on 2 CPUs.")
    parser.add_argument(
        "--fewglue",
        action="store_true",
        help="FewGLUE 32-shot: DATA_ROOT/fewglue/<Task> (dev32 selects, val reported).",
    )
    parser.add_argument(
        "--few-shot",
        default=None,
        help="K-shot: K train + K selection drawn per seed, validation reported; a list runs a learning curve "
        "(16,32,64,128,256,full; full = the standard protocol, its dev metric as the curve's last point).",
    )
    parser.add_argument(
        "--init-from", default=None, help="Start every run from this artifact's prompt (e.g. a multi-task one)."
    )
    parser.add_argument("--teacher", default=None, help="Distil every run from this artifact (e.g. a finetune one).")
    parser.add_argument("--distill-alpha", type=float, default=0.5, help="--teacher: weight of the task loss.")
    parser.add_argument("--distill-temperature", type=float, default=2.0, help="--teacher: softening temperature.")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/methods.json"))
    args = parser.parse_args(argv)
    args.few_shots = args.few_shot.split(",") if args.few_shot else [None]
    args.few_shot = None
    if args.quick:
        for key, value in QUICK.items():
            if parser.get_default(key) == getattr(args, key):  # what the user gave explicitly stays
                setattr(args, key, value)
    args.sweep_prompt_length = None
    return args


def peft_row_elsewhere(task: str, seed: int, args) -> dict:
    """Run one peft-prefix row under ``--peft-python`` (another transformers) and read its row back."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = [a for a in sys.argv[1:]]
        command = [args.peft_python, __file__, *argv, "--tasks", task, "--methods", "peft-prefix"]
        command += ["--seeds", str(seed), "--out", f"{tmp}/row.json", "--prompt-lengths", "", "--peft-python", ""]
        if args.shot is not None:  # this K only: the child would otherwise run the whole list and return its first
            command += ["--few-shot", str(args.shot)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "benchmarks")])}
        done = subprocess.run(command, env=env, text=True)
        if done.returncode:
            raise SystemExit(f"the peft-prefix run for {task} seed {seed} failed under {args.peft_python}")
        return json.loads(Path(f"{tmp}/row.json").read_text())["rows"][0]


def main() -> None:
    args = parse_args()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({platform.machine()})"
    import transformers

    plan = [(t, m, None) for t in args.tasks.split(",") for m in args.methods.split(",")]
    if args.prompt_lengths:
        sweep = [int(p) for p in args.prompt_lengths.split(",")]
        plan += [(t, "ptv2", p) for t in args.sweep_tasks.split(",") if t in args.tasks.split(",") for p in sweep]
    rows = []
    plan = [(t, m, p, k) for t, m, p in plan for k in args.few_shots]
    for task, method, prompt_length, k in plan:
        data = args.data_root / (f"fewglue/{FEWGLUE_DIRS[task]}" if args.fewglue else DATA_DIRS[task])
        if task == "boolq" and not args.fewglue:
            data = boolq_split(data, args.work_dir or Path(tempfile.gettempdir()))
        for seed in [int(x) for x in args.seeds.split(",")]:
            args.seed, args.sweep_prompt_length = seed, prompt_length
            args.shot, args.few_shot = k, None if k in (None, "full") else int(k)
            peft_elsewhere = method == "peft-prefix" and args.peft_python
            row = peft_row_elsewhere(task, seed, args) if peft_elsewhere else run_one(task, method, data, args)
            row["sweep"] = prompt_length is not None
            if k == "full":  # the curve's last point: the standard protocol, whose dev set selects and is reported
                row.update(few_shot="full", reported=row["best"], majority=majority_class(task, data))
            rows.append(row)
            metrics = ", ".join(f"{k} {v:.4f}" for k, v in row["best"].items())
            if row["test"]:
                metrics += " | test " + ", ".join(
                    f"{k} {v:.4f}" for k, v in row["test"].items() if isinstance(v, float)
                )
            print(
                f"RESULT {task:5} {method}{args.tag} P={row.get('prompt_length', 0)} seed {seed} {metrics} | "
                f"best epoch {row['best_epoch']} of {row['epochs_run']} run ({row['stopped_by']}) | {row['wall_s']} s",
                flush=True,
            )
            args.out.parent.mkdir(parents=True, exist_ok=True)
            setup = {"device": device, "torch": torch.__version__, "transformers": transformers.__version__}
            setup.update(
                date=time.strftime("%Y-%m-%d"), command="python benchmarks/methods.py " + " ".join(sys.argv[1:])
            )
            atomic_write_text(args.out, json.dumps({**setup, "quick": args.quick, "rows": rows}, indent=1))


if __name__ == "__main__":
    from ptuning.errors import PTuningError

    try:
        main()
    except PTuningError as exc:  # a bad option (--prefix-layers top:99...): one line, as the command line says it
        raise SystemExit(f"error: {exc}") from None
