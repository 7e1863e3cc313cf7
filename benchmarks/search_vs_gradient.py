"""Forward-only prompt search (``--optimizer cma``, Black-Box Tuning) against gradient ptv2, at equal wall time.

For each task and seed, ptv2 (P=20) on the bundled MiniLM trains twice for the same ``--minutes`` of training
(``--max-minutes``: checked at each evaluation, so a run ends at the first evaluation past the cap): once with
AdamW, once with CMA-ES (BBT's d = 500 and population 20; one generation per batch of ``--cma-batch-size``).
Each run is its own ``ptuning train`` process; ``--concurrent`` starts the two side by side, each on one thread,
so that a busy shared machine slows both alike (on a quiet machine, run them one after the other). Gradient
ptv2 runs at a constant rate (no warmup, no decay: a time cap does not know when the run will end). Both select
their artifact on the selection split at every epoch and report it (FewGLUE: dev32 selects, val is reported).
Each row records the metric, the optimizer steps, the process's CPU seconds and its wall seconds (under the key
``comparison``: the report's loader reads ``rows`` as training runs with histories).

``--costs`` measures instead what one update costs, in this process on ``--threads`` (1) threads: a gradient
step (batch 16, forward and backward) against a CMA-ES generation (``--cma-popsize`` forward passes of
``--cma-batch-size``), on a real training batch of each task, in CPU seconds: what the comparison's wall time
goes to.

    python benchmarks/search_vs_gradient.py --tasks cb --minutes 2 --seeds 1 --concurrent \\
        --out benchmarks/results/cpu-search/cb.json
    python benchmarks/search_vs_gradient.py --costs --tasks cb,rte,sst2 \\
        --out benchmarks/results/cpu-search/costs.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ptuning.io import atomic_write_text  # noqa: E402

# task -> (data directory under --data-root, extra `ptuning train` options, and each method's own). The time cap is
# checked at evaluations: on the SST-2 subset (4,000 examples) an epoch is 125 CMA generations (~30 min on one
# thread), so both methods evaluate every ~2 minutes there instead of every epoch.
TASKS = {
    "cb": ("fewglue/CB", ["--max-length", "256"], {}),
    "rte": ("fewglue/RTE", ["--max-length", "256"], {}),
    "sst2": (
        "glue/sst2",
        ["--max-length", "128", "--max-train-samples", "4000"],
        {"ptv2": ["--eval-steps", "200"], "ptv2-cma": ["--eval-steps", "10"]},
    ),
}
METHODS = ("ptv2", "ptv2-cma")


def command(task: str, method: str, seed: int, args, output: Path) -> list[str]:
    """The `ptuning train` command line of one run."""
    directory, extra, own_extra = TASKS[task]
    common = ["--task", task, "--data", str(args.data_root / directory), "--output", str(output), "--overwrite"]
    common += ["--method", "ptv2", "--prompt-length", "20", "--epochs", "100000", "--seed", str(seed)]
    common += ["--max-minutes", str(args.minutes), "--backbone-dropout", "0", *extra]
    if method == "ptv2":
        own = ["--lr", str(args.lr), "--batch-size", "16", "--scheduler", "constant", "--warmup-ratio", "0"]
    else:
        own = ["--optimizer", "cma", "--cma-dim", str(args.cma_dim), "--cma-popsize", str(args.cma_popsize)]
        own += ["--batch-size", str(args.cma_batch_size)]
    return [sys.executable, "-m", "ptuning.cli", "train", *common, *own, *own_extra.get(method, [])]


def start(task: str, method: str, seed: int, args) -> tuple[subprocess.Popen, Path, float]:
    output = args.work_dir / f"{task}-{method}-{seed}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "PYTHONPATH": str(ROOT / "src")}
    if args.concurrent:
        env["OMP_NUM_THREADS"] = "1"
    log = (args.work_dir / f"{task}-{method}-{seed}.log").open("w")
    process = subprocess.Popen(command(task, method, seed, args, output), env=env, stdout=log, stderr=log)
    return process, output, time.perf_counter()


def finish(task: str, method: str, seed: int, run: tuple[subprocess.Popen, Path, float], args) -> dict:
    """Wait for one run; its row (the CPU seconds are the process's own, from wait4)."""
    process, output, started = run
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{task} {method} seed {seed} failed: see {args.work_dir}/{task}-{method}-{seed}.log")
    summary = json.loads((output / "metrics.json").read_text())
    metric = summary["main_metric"]
    return {
        "task": task,
        "method": method,
        "seed": seed,
        "minutes": args.minutes,
        "metric": metric,
        "selection": summary["best"][metric],
        "reported": (summary.get("reported") or summary["best"])[metric],
        "steps": summary["steps"],
        "epochs_run": summary["epochs_run"],
        "train_time_s": summary["train_time_s"],
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "wall_s": round(time.perf_counter() - started, 1),
        "stopped_by": summary["stopped_by"],
        "config": {k: summary["config"][k] for k in ("optimizer", "lr", "batch_size", "cma_dim", "cma_popsize")},
    }


def update_costs(task_name: str, args) -> dict:
    """CPU seconds of one gradient step and of one CMA-ES generation on a real training batch of ``task_name``."""
    import torch
    from accelerate import Accelerator

    from ptuning import backbones, pipeline
    from ptuning.batches import _loader
    from ptuning.loop import UPDATES, TrainConfig
    from ptuning.method import method_config
    from ptuning.model import PTuningModel
    from ptuning.tasks import get_task

    directory, extra, _ = TASKS[task_name]
    options = dict(zip(extra[::2], extra[1::2], strict=True))
    request = pipeline.TrainRequest(task=task_name, data=str(args.data_root / directory), output=args.work_dir / "x")
    task, examples, _, _ = pipeline.training_examples(get_task(task_name), request)
    torch.set_num_threads(args.threads)
    backbone, tokenizer, _ = backbones.load_backbone(None, dropout=0.0)
    accelerator, row = Accelerator(cpu=True), {"task": task_name, "threads": torch.get_num_threads()}
    for optimizer, batch_size, repeats in (("adamw", 16, 3), ("cma", args.cma_batch_size, 1)):
        torch.manual_seed(0)
        head = task.build_head(backbone.config.hidden_size, "mean")
        model = PTuningModel(backbone, method_config("ptv2", prompt_length=20), head)
        features = task.featurize(examples[:256], tokenizer, model.token_budget(int(options["--max-length"])))
        settings = {"lr": args.lr} if optimizer == "adamw" else {"cma_popsize": args.cma_popsize}
        config = TrainConfig(optimizer=optimizer, batch_size=batch_size, **settings)
        update = UPDATES[optimizer](model, config, len(features.features))
        prepared = update.prepare(accelerator, model).train()
        batch = next(iter(_loader(features.features, task.collator(tokenizer), batch_size, 0)))
        started = time.process_time()
        for _ in range(repeats):
            inputs = dict(batch)
            update.step(accelerator, prepared, model, inputs, inputs.pop("labels"), task.loss)
        row[f"{optimizer}_cpu_s"] = round((time.process_time() - started) / repeats, 2)
        row[f"{optimizer}_batch"] = list(batch["input_ids"].shape)  # (batch, padded length)
    row["generation_per_step"] = round(row["cma_cpu_s"] / row["adamw_cpu_s"], 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--tasks", default="cb", help=f"Comma-separated, from: {', '.join(TASKS)}.")
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--minutes", type=float, default=2.0, help="Training minutes per run (--max-minutes).")
    parser.add_argument("--lr", type=float, default=1e-2, help="Gradient ptv2's (constant) learning rate.")
    parser.add_argument("--cma-dim", type=int, default=500)
    parser.add_argument("--cma-popsize", type=int, default=20)
    parser.add_argument("--cma-batch-size", type=int, default=32, help="Examples per generation (FewGLUE: all 32).")
    parser.add_argument("--concurrent", action="store_true", help="Run the two methods side by side, 1 thread each.")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/ptuning-search"))
    parser.add_argument("--costs", action="store_true", help="Measure one update's CPU cost per method instead.")
    parser.add_argument("--threads", type=int, default=1, help="--costs: torch threads (1: comparable CPU seconds).")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    if args.costs:
        rows = [update_costs(task, args) for task in args.tasks.split(",")]
        print("\n".join(json.dumps(row) for row in rows), flush=True)
    for task in [] if args.costs else args.tasks.split(","):
        for seed in map(int, args.seeds.split(",")):
            if args.concurrent:
                runs = {m: start(task, m, seed, args) for m in METHODS}
                rows += [finish(task, m, seed, runs[m], args) for m in METHODS]
            else:
                rows += [finish(task, m, seed, start(task, m, seed, args), args) for m in METHODS]
            for row in rows[-2:]:
                print(json.dumps(row), flush=True)
    setup = {"command": "python benchmarks/search_vs_gradient.py " + shlex.join(sys.argv[1:])}
    setup.update(date=time.strftime("%Y-%m-%d %H:%M"), load_average=os.getloadavg()[0], cores=os.cpu_count())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps({"setup": setup, ("costs" if args.costs else "comparison"): rows}, indent=1))


if __name__ == "__main__":
    main()
