"""Efficiency of each method on the bundled MiniLM: parameters, artifact size, step time, peak memory.

Every method is measured in a fresh process (so peak RSS is its own): build the
model, save its artifact, then time N training steps (forward + backward +
AdamW) on a fixed batch of real-token ids after warm-up. Ratios are to
`finetune`. With `--peft-python` (an interpreter whose environment has PEFT and
a transformers where PEFT's prefix tuning works: this one, or a second
environment, see benchmarks/README.md) the PEFT prefix row and a `ptv2` row are
measured there too, so that ratio compares like with like.

    python benchmarks/efficiency.py --out benchmarks/results/cpu/efficiency.json
    python benchmarks/efficiency.py --peft-python .venv-peft/bin/python --out ...

A method name may carry a variant: the rows of ``methods.py`` that set options (``ptv2-ptp-noise``,
``ptv2-ptp-adv``, ``prompt-tuning-residual``: each step is the method's own training loss, so PTP's extra passes
count), ``ptv2-reparam``, ``ptv2-checkpointing``, ``ptv2-bf16`` / ``ptv2-fp16`` (the
frozen backbone stored and run in that dtype, ``--backbone-dtype``), ``finetune-autocast`` (fp32 weights, forward
under bf16 autocast: ``--mixed-precision bf16``, what fine-tuning can do instead). On a GPU (``--device cuda``)
rows also carry the peak CUDA memory, and ``--pairs`` chooses the paired ratios:

    python benchmarks/efficiency.py --device cuda --methods finetune,finetune-autocast,ptv2,ptv2-bf16 \
        --pairs "ptv2,ptv2-bf16;finetune-autocast,ptv2-bf16" --batch-size 32 --length 128 --steps 50 \
        --out benchmarks/results/gpu-bf16/efficiency.json

`--depth` measures whole epochs instead (``efficiency_depth.py``): fine-tuning, PEFT's prefix and ptv2 in all, the
top half and the top third of the layers, with and without the activation cache, each trained on a real task in a
fresh process, in rotated rounds:

    python benchmarks/efficiency.py --depth --data ../shared/data/superglue/cb --task cb --epochs 3 --rounds 3 \
        --out benchmarks/results/cpu/partial-depth.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import efficiency_depth  # noqa: E402
import peft_prefix  # noqa: E402,F401  (registers the benchmark-only method peft-prefix)
from methods import VARIANTS as WITH_OPTIONS  # noqa: E402  (ptv2-ptp-noise, prompt-tuning-residual...: options set)

from ptuning.io import atomic_write_text  # noqa: E402

PHASES = ("forward", "backward", "optimizer")
METHODS = ("finetune", "ptv2", "ptv2-reparam", "ptv2-checkpointing", "prompt-tuning", "ptv1", "linear-probe")
VARIANTS = ("reparam", "checkpointing", "bf16", "fp16", "autocast")  # METHOD-VARIANT: see the module docstring


def split_variant(method: str) -> tuple[str, str]:
    """``("ptv2", "bf16")`` for ``ptv2-bf16``; ``(method, "")`` when it carries none (``prompt-tuning``)."""
    base, _, variant = method.rpartition("-")
    return (base, variant) if variant in VARIANTS else (method, "")


def build(method: str, prompt_length: int, dropout: float | None = None, device: str = "cpu"):
    from ptuning import backbones
    from ptuning.heads import SequenceClassificationHead
    from ptuning.method import method_config
    from ptuning.model import PTuningModel

    backbone, _, name = backbones.load_backbone(None, dropout=dropout)
    n_backbone = sum(p.numel() for p in backbone.parameters())
    head = SequenceClassificationHead(backbone.config.hidden_size, 2, "mean")
    method, variant = split_variant(method)
    method, options = WITH_OPTIONS.get(method, (method, {}))
    options = {"prompt_length": prompt_length, "reparam": variant == "reparam", **options}
    model = PTuningModel(backbone, method_config(method, strict=False, **options), head)
    if variant == "checkpointing":
        model.enable_gradient_checkpointing()
    if variant in ("bf16", "fp16"):
        from ptuning.precision import cast_frozen

        cast_frozen(model.backbone, variant)
    return model.to(device), n_backbone, name


def artifact_bytes(method: str, model, name: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        if method == "peft-prefix":  # measured in PEFT's own adapter format, what a PEFT user stores (no head)
            model.backbone.save_pretrained(tmp)
        else:
            from ptuning import artifact, backbones
            from ptuning.tasks import get_task

            artifact.save_artifact(
                Path(tmp),
                model,
                task=get_task("rte"),
                backbone_name=name,
                backbone_fingerprint=backbones.fingerprint(model.backbone),
                max_length=128,
                pooling="mean",
            )
        return sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())


def timed_step(model, optimizer, ids, mask, labels, autocast: bool = False) -> tuple[float, float, float]:
    """One training step; its (forward, backward, optimizer) seconds, in PHASES order.

    ``autocast``: the forward pass under bf16 autocast (``finetune-autocast``). On a GPU each phase ends with a
    synchronisation, so it is timed, not just queued.
    """
    sync = torch.cuda.synchronize if ids.is_cuda else (lambda: None)
    start = time.perf_counter()
    batch = {"input_ids": ids, "attention_mask": mask}
    with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=autocast):  # the method's own loss (PTP: 2+)
        loss = model.training_loss(batch, labels, torch.nn.functional.cross_entropy)
    sync()
    forward = time.perf_counter()
    loss.backward()
    sync()
    backward = time.perf_counter()
    optimizer.step()
    optimizer.zero_grad()
    sync()
    end = time.perf_counter()
    return forward - start, backward - forward, end - backward


def fixed_batch(batch: int, length: int, device: str):
    """The same random real-token batch for every method (ids up to 30,000: MiniLM's vocabulary)."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (batch, length), generator=generator)
    labels = torch.randint(0, 2, (batch,), generator=generator)
    return ids.to(device), torch.ones_like(ids).to(device), labels.to(device)


def worker(
    method: str,
    prompt_length: int,
    batch: int,
    length: int,
    steps: int,
    dropout: float | None = None,
    device: str = "cpu",
) -> dict:
    torch.manual_seed(0)
    model, n_backbone, name = build(method, prompt_length, dropout, device)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    ids, mask, labels = fixed_batch(batch, length, device)
    autocast = split_variant(method)[1] == "autocast"
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times, phases = [], []  # phases: (forward, backward, optimizer) seconds, to show where a step's time goes
    for i in range(steps + 3):
        phase = timed_step(model, optimizer, ids, mask, labels, autocast)
        if i >= 3:
            times.append(sum(phase))
            phases.append(phase)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # training's peak, before saving
    n_trainable = sum(p.numel() for p in trainable)
    import transformers

    row = {
        "method": method,
        "prompt_length": model.config.to_dict().get("prompt_length", 0),
        "trainable_params": n_trainable,
        "trainable_pct": 100 * n_trainable / n_backbone,
        "artifact_bytes": artifact_bytes(method, model, name),
        "step_s": statistics.median(times),
        **{f"{name}_s": statistics.median(p[k] for p in phases) for k, name in enumerate(PHASES)},
        "peak_rss_mb": peak_rss_mb,
        "backbone_dropout": dropout,
        "transformers": transformers.__version__,
        "python": sys.executable,
    }
    if device.startswith("cuda"):
        row["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def paired(
    methods: list[str],
    prompt_length: int,
    batch: int,
    length: int,
    steps: int,
    dropout: float | None = None,
    device: str = "cpu",
) -> dict:
    """Step times of two methods in ONE process, alternating step by step: a ratio that drift on a shared
    machine cannot bias (the per-process rows above run minutes apart)."""
    models = {m: build(m, prompt_length, dropout, device)[0].train() for m in methods}
    optimizers = {
        m: torch.optim.AdamW([p for p in x.parameters() if p.requires_grad], lr=1e-3) for m, x in models.items()
    }
    ids, mask, labels = fixed_batch(batch, length, device)
    times: dict[str, list[float]] = {m: [] for m in methods}
    phases: dict[str, list[tuple[float, float, float]]] = {m: [] for m in methods}
    for i in range(steps + 2):
        for m, model in models.items():
            phase = timed_step(model, optimizers[m], ids, mask, labels, split_variant(m)[1] == "autocast")
            if i >= 2:
                times[m].append(sum(phase))
                phases[m].append(phase)
    import transformers

    medians = {m: statistics.median(t) for m, t in times.items()}
    return {
        "methods": methods,
        "step_s": medians,
        **{
            f"{name}_s": {m: statistics.median(p[k] for p in phases[m]) for m in methods}
            for k, name in enumerate(PHASES)
        },
        "ratio": medians[methods[1]] / medians[methods[0]],
        "backbone_dropout": dropout,
        "device": device,
        "transformers": transformers.__version__,
    }


def measure(python: str, method: str, args) -> dict:
    command = [python, __file__, "--worker", method, "--prompt-length", str(args.prompt_length)]
    command += ["--batch-size", str(args.batch_size), "--length", str(args.length), "--steps", str(args.steps)]
    if args.backbone_dropout is not None:
        command += ["--backbone-dropout", str(args.backbone_dropout)]
    command += ["--device", args.device]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}  # the interpreter's own packages
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{method} failed in {python}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def paired_rows(args) -> list[dict]:
    pairs = [measure(sys.executable, pair, args) for pair in args.pairs.split(";")]
    if args.peft_python:
        pairs.append(measure(args.peft_python, "peft-prefix,ptv2", args))
    for pair in pairs:
        first, second = pair["methods"]
        print(f"paired, one process, alternating steps: {second} / {first} = {pair['ratio']:.3f}", flush=True)
    return pairs


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return (
            f"{torch.cuda.get_device_name(torch.device(device))} (torch {torch.__version__}, CUDA {torch.version.cuda})"
        )
    return f"cpu ({platform.machine()}, {os.cpu_count()} cores)"


def parse_args() -> argparse.Namespace:
    """The command line (the module docstring shows it in use)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--prompt-length", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--backbone-dropout", type=float, default=None, help="Every dropout rate in the backbone (default: its own)."
    )
    parser.add_argument(
        "--peft-python", default=None, help="Interpreter for the PEFT rows (this one will do on transformers 5.24)."
    )
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N: where the steps run.")
    parser.add_argument(
        "--pairs", default="finetune,ptv2", help="Paired ratios, ';'-separated BASE,OTHER (default finetune,ptv2)."
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--paired-only", action="store_true", help="Only add the paired ratios to --out.")
    depth = parser.add_argument_group("--depth: epoch and step time on a real task (efficiency_depth.py)")
    depth.add_argument("--depth", action="store_true", help="Measure epochs per setting instead of fixed-batch steps.")
    depth.add_argument("--settings", default=",".join(efficiency_depth.SETTINGS))
    depth.add_argument("--rounds", type=int, default=3, help="Each setting once per round, fresh process each.")
    depth.add_argument("--task", default="cb")
    depth.add_argument("--data", default=None, help="The task's data directory (e.g. ../shared/data/superglue/cb).")
    depth.add_argument("--model", default=None, help="Backbone (default: the bundled MiniLM).")
    depth.add_argument("--epochs", type=int, default=3)
    depth.add_argument("--seed", type=int, default=42)
    depth.add_argument("--max-length", type=int, default=None)
    depth.add_argument("--max-train-samples", type=int, default=None)
    depth.add_argument("--max-eval-samples", type=int, default=None)
    depth.add_argument("--depth-worker", default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.depth_worker:
        print(json.dumps(efficiency_depth.worker(args.depth_worker, args)))
        return
    if args.depth:
        if not args.data:
            raise SystemExit("efficiency.py --depth: give --data (the task's data directory)")
        data = efficiency_depth.run(args)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(args.out, json.dumps(data, indent=1))
        return
    shape = (args.prompt_length, args.batch_size, args.length, args.steps, args.backbone_dropout, args.device)
    if args.worker and "," in args.worker:
        print(json.dumps(paired(args.worker.split(","), *shape)))
        return
    if args.worker:
        print(json.dumps(worker(args.worker, *shape)))
        return
    if "finetune" not in args.methods.split(",") and not args.paired_only:
        raise SystemExit("efficiency.py: every ratio is relative to fine-tuning; include finetune in --methods")
    rows = []
    if args.paired_only:  # add the paired ratios to an earlier run's file
        data = json.loads(args.out.read_text())
        rows, data["paired"] = data["rows"], paired_rows(args)
        data["setup"]["paired_date"] = time.strftime("%Y-%m-%d %H:%M")  # later than the rows: the report says so
        atomic_write_text(args.out, json.dumps(data, indent=1))
        return
    for method in args.methods.split(","):
        rows.append(measure(sys.executable, method, args))
        print(json.dumps(rows[-1]), flush=True)
    peft_rows = []
    if args.peft_python:
        for method in ("ptv2", "peft-prefix"):
            peft_rows.append(measure(args.peft_python, method, args))
            print(json.dumps(peft_rows[-1]), flush=True)
    pairs = paired_rows(args)
    base = next(r for r in rows if r["method"] == "finetune")
    print(f"\nMiniLM, batch {args.batch_size}, length {args.length}, P={args.prompt_length}, {args.steps} timed steps")
    for r in rows + peft_rows:
        print(
            f"{r['method']:14} {r['trainable_params']:>11,} ({r['trainable_pct']:.3f}%)"
            f"  artifact {r['artifact_bytes']:>11,} B"
            f"  step {1000 * r['step_s']:7.1f} ms ({r['step_s'] / base['step_s']:.3f})"
            f"  peak RSS {r['peak_rss_mb']:7.1f} MB ({r['peak_rss_mb'] / base['peak_rss_mb']:.3f})"
            f"  transformers {r['transformers']}"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        setup = {"batch": args.batch_size, "length": args.length, "prompt_length": args.prompt_length}
        setup.update(steps=args.steps, torch=torch.__version__, threads=torch.get_num_threads())
        setup.update(backbone_dropout=args.backbone_dropout, device=args.device)
        setup.update(machine=machine(args.device), date=time.strftime("%Y-%m-%d"))
        setup.update(command="python benchmarks/efficiency.py " + shlex.join(sys.argv[1:]))
        atomic_write_text(
            args.out, json.dumps({"setup": setup, "rows": rows, "peft_rows": peft_rows, "paired": pairs}, indent=1)
        )


if __name__ == "__main__":
    main()
