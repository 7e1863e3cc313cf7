"""Is PEFT's prefix tuning the same computation as our ptv2? Same prefix values in, compare what comes out.

The ``peft-prefix`` rows are only a fair baseline if PEFT's mechanism is what we think it is: a per-layer
key/value prefix, with the one known difference that its cache numbers the real tokens from ``P`` (ours from 0).
This script gives PEFT's prompt encoder the exact values of our prefix encoder and compares, on the bundled
MiniLM in eval mode (no dropout):

* the last hidden states, ours against PEFT's, with our positions as they are and shifted by ``P``;
* the gradient of a loss on those hidden states with respect to the prefix values;
* whether PEFT's own task models (sequence classification) still accept this transformers.

    python benchmarks/peft_parity.py --peft-python .venv-peft/bin/python --out benchmarks/results/cpu/peft_parity.json

Each interpreter (this one and ``--peft-python``) adds one entry, so the file also shows whether the
transformers version changes anything.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from ptuning.io import atomic_write_text

HERE = Path(__file__).parent
INIT_STD = 1.0  # PEFT's scale, so the prefix visibly changes the output (not a comparison of near-zero prefixes)
# Our own text, not benchmark data: a sentence pair per row, different lengths so padding is exercised.
PAIRS = [
    ("The committee postponed the vote until the budget was final.", "The vote happened later."),
    ("A gripping, funny film.", "It is a comedy."),
    ("She left the keys on the kitchen table before the train to Lyon.", "The keys were in her pocket."),
]


def compare(backbone_loader, tokenizer, prompt_length: int = 20, seed: int = 0) -> dict:
    """Max absolute differences between our ptv2 and PEFT's prefix fed the same prefix values.

    ``backbone_loader()`` must return a fresh copy of the same backbone each call (PEFT wraps the one it gets).
    """
    from ptuning.method import method_config
    from ptuning.model import PTuningModel
    from ptuning.tasks import get_task

    sys.path.insert(0, str(HERE))
    from peft_prefix import peft_wrap

    torch.manual_seed(seed)
    backbone = backbone_loader()
    head = get_task("rte").build_head(backbone.config.hidden_size, "mean")
    ours = PTuningModel(
        backbone, method_config("ptv2", prompt_length=prompt_length, prefix_init_std=INIT_STD), head
    ).eval()
    values = ours.method.prefix_encoder.embedding.weight  # (P, layers * 2 * kv_heads * head_dim)
    batch = tokenizer([a for a, _ in PAIRS], [b for _, b in PAIRS], padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]

    def ours_forward(offset: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Our hidden states and prefix gradient, real tokens numbered from ``offset`` (ptv2 --shift-positions: P)."""
        values.grad = None
        prompt = replace(ours.method.prompt_inputs(), position_offset=offset)
        hidden = ours.encode(ids, mask, prompt=prompt)  # (B, L, H); no token_type_ids: PEFT drops them
        (hidden * mask[..., None]).pow(2).mean().backward()
        return hidden.detach(), values.grad.detach().clone()

    plain, plain_grad = ours_forward(0)
    shifted, shifted_grad = ours_forward(prompt_length)

    wrapped = peft_wrap(backbone_loader(), prompt_length).eval()
    peft_values = wrapped.prompt_encoder["default"].embedding.weight  # (P, layers * 2 * heads * head_dim)
    with torch.no_grad():
        peft_values.copy_(values)
    peft_hidden = wrapped(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, H)
    (peft_hidden * mask[..., None]).pow(2).mean().backward()

    def gap(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b)[mask.bool()].abs().max()) if a.dim() == 3 else float((a - b).abs().max())

    return {
        "prompt_length": prompt_length,
        "prefix_init_std": INIT_STD,
        "hidden_max_abs_diff_unshifted": gap(plain, peft_hidden.detach()),
        "hidden_max_abs_diff_shifted": gap(shifted, peft_hidden.detach()),
        "hidden_max_abs": float(peft_hidden.detach()[mask.bool()].abs().max()),
        "grad_max_abs_diff_unshifted": gap(plain_grad, peft_values.grad),
        "grad_max_abs_diff_shifted": gap(shifted_grad, peft_values.grad),
        "grad_max_abs": float(peft_values.grad.abs().max()),
    }


def task_model_status(model_path: str) -> str:
    """'ok', or the error PEFT's sequence-classification prefix model raises on this transformers."""
    from peft import PrefixTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2)
    wrapped = get_peft_model(model, PrefixTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=4)).eval()
    try:
        with torch.no_grad():
            wrapped(**AutoTokenizer.from_pretrained(model_path)(["a short test"], return_tensors="pt"))
    except (TypeError, ValueError) as error:
        return f"{type(error).__name__}: {error}"
    return "ok"


def measure_here() -> dict:
    import peft
    import transformers

    from ptuning import backbones

    _, tokenizer, path = backbones.load_backbone(None)
    row = compare(lambda: backbones.load_backbone(None)[0], tokenizer)
    row.update(
        transformers=transformers.__version__,
        peft=peft.__version__,
        torch=torch.__version__,
        seq_cls_prefix_model=task_model_status(path),
    )
    return row


def measure_with(python: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        subprocess.run([python, __file__, "--row-only", str(out)], check=True)
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peft-python", default=None, help="A second interpreter to measure in (its own versions).")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--row-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    row = measure_here()
    if args.row_only:
        atomic_write_text(args.row_only, json.dumps(row))
        return
    rows = [row] + ([measure_with(args.peft_python)] if args.peft_python else [])
    for r in rows:
        print(json.dumps(r), flush=True)
    command = "python benchmarks/peft_parity.py" + (f" --peft-python {args.peft_python}" if args.peft_python else "")
    command += f" --out {args.out}" if args.out else ""
    setup = {
        "machine": f"cpu ({platform.machine()})",
        "date": time.strftime("%Y-%m-%d"),
        "command": command,
        "backbone": "all-MiniLM-L6-v2",
    }
    if args.out:
        atomic_write_text(args.out, json.dumps({"setup": setup, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
