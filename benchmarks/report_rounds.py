"""The appendix of BENCHMARKS.md: one table per round listing every run, under the round's description.

The descriptions are the only place a round's hardware, sharing and commands are written down (the result files
hold the numbers, not how the machine was shared), so they live here beside the table they head.
"""

from __future__ import annotations

from report_runs import Run, epoch

ROUNDS = {
    "h200-round1": "[CLS] pooling, seed 42, batch 16, max length 256, one process per run",
    "h200-round2": "mean pooling, seeds 1-3, batch 16, max length 256, 18 runs sharing the GPU",
    "h200-round3": "mean pooling, seed 1, 6 runs sharing the GPU, each capped at 185 s",
    "h200-round4": "mean pooling, seed 1, 12 runs sharing the GPU, each capped at 6.3 min of training "
    "(`--max-minutes 6.3`) and killed at 555 s",
    "h200-round5": "seed 1, 2 runs sharing the GPU, an 8-epoch schedule each, killed at 195 s",
    "h200-round9": "mean pooling, seed 1, fp32, 6 runs sharing the GPU under CUDA MPS (so their kernels run "
    "concurrently), each capped at 7 min of training (`--max-minutes 7`) and killed at 535 s; CoNLL-2003 on a "
    "30-epoch schedule for the prompts (patience 5) and 10 for fine-tuning (patience 3), SQuAD patience 4 / 2",
    "h200-round10": "mean pooling, seed 1, fp32, the ptv2 prompt-length sweep on RTE (`--prompt-length P --tag=-PP`, "
    "P in 1, 5, 20, 50, 100), 5 runs sharing the GPU under CUDA MPS, each capped at 1.8 min of training and 30 "
    "epochs (patience 10)",
    "h100-round11": "one H100, mean pooling, seed 1, bf16 autocast (`--mixed-precision bf16`), 6 processes sharing "
    "the GPU under CUDA MPS, each capped at 7.6 min of training and killed at 560 s: CoNLL-2003 prompts on a 25-epoch "
    "schedule (patience 5); MultiRC with `--group-by-length`, fine-tuning 8 epochs (patience 2), ptv2 at lr 2e-2, 20 "
    "epochs (patience 3); CB and RTE ptv2 with `--prefix-init-std 1.0`, seeds 1-3 one after another, fp32",
    "h100-round12": "the same setup as h100-round11 (one H100, bf16, seed 1, CUDA MPS), 5 processes, each capped at "
    "5.9 min of training and killed at 380 s: CoNLL-2003 prompt tuning on a 40-epoch schedule (patience 5); MultiRC "
    "ptv2 at lr 5e-3 and 1e-2, 20 epochs (patience 5), grouped by length; RTE ptv1 and ptv2-reparam at the harness "
    "defaults, seeds 1-3 one after another, 1.7 min cap per run",
    "h100-round13": "the same setup as h100-round11 (one H100, bf16), RTE ptv2-reparam at lr 1e-3 (`--lr 1e-3 "
    "--tag=-lr1e-3`), seeds 1-3 side by side, 2.4 min cap per run",
    "h100-round14": "the same setup as h100-round11 (one H100, bf16, CUDA MPS), 18 processes, each capped at 7.5 min "
    "of training and killed at 555 s. GLUE SST-2 on the full 67k training set, evaluated every 400 steps "
    "(`--eval-steps 400`, patience counts evaluations), grouped by length: fine-tuning 3 epochs (patience 4) and ptv2 "
    "10 epochs (patience 6), seeds 1-3. BoolQ (the val file split 80/20 by a hash of the passage: 2,642 train, 628 "
    "dev questions): fine-tuning 10 epochs (patience 3) and ptv2 30 epochs (patience 8), seeds 1-3; fine-tuning "
    "seed 3 and ptv2 seed 1 ran in fp32, because their bf16 attempts crashed at start, reading the split file "
    "while another run was still writing it (a harness race, fixed since: the split is now written atomically). "
    "The CoNLL-2003 prompt-length sweep on full data (P in 1, 5, 20, 50, `--prompt-length P --tag=-PP`; P=100 is "
    "h100-round11's ptv2-e25) on round 11's 25-epoch schedule (patience 5, lr 2e-2). `ptv2-reparam` at lr 5e-4 "
    "(`--tag=-lr5e-4`), 40 epochs, patience 8, CB and RTE, seeds 1-3 one after another",
    "h100-round15": "the same setup as h100-round11 (one H100, bf16, CUDA MPS), 18 processes, each capped at 4.5 min "
    "of training and killed at 295 s (none reached the cap): prompt-tuning, ptv1 and ptv2-reparam (its default lr "
    "5e-4) at the harness defaults on BoolQ (30 epochs, patience 8, seeds 1-3 side by side), COPA and WSC (seeds "
    "1-3 one after another); BoolQ ptv2 with P=50 (`--prompt-length 50 --tag=-P50`), seeds 1-3",
    "cpu-reparam": "this 2-core CPU, mean pooling, seeds 1-3 one after another, batch 16, max length 256, "
    "patience 5, `--max-minutes 12`",
    "cpu-small": "this 2-core CPU, mean pooling, seeds 1-3 one after another, harness defaults (batch 16, max "
    "length 256); other benchmark jobs shared the CPU at times (WSC ptv2 seeds 2-3 ran in a second process "
    "beside seed 1), so wall times are inflated",
    "cpu-peft": "this 2-core CPU, PEFT 0.21.2 prefix tuning under transformers 5.23 (`--peft-python`), one thread "
    "per run (seed 1 in session 3; seeds 2 and 3 side by side later; COPA not run). PEFT drops BERT's "
    "`token_type_ids` (its warning: 'Token type ids are not supported for parameter efficient tuning'), so its "
    "sentence pairs lose the segment embedding",
    "cpu-init": "this 2-core CPU, one thread per run, two runs side by side: ptv2 with the prefix started at std 1.0 "
    "(`--prefix-init-std 1.0`, nn.Embedding's default, which PEFT and the official code keep) against our default "
    "0.02, harness defaults otherwise (lr 1e-2, P=20, patience 10)",
    "cpu-sst2": "this 2-core CPU, GLUE SST-2 on its first 4,000 training sentences (`--max-train-samples 4000`; a "
    "fine-tuning epoch over all 67k would take about 30 min here, extrapolated from the subset's 110 s) scored on "
    "the full 872-sentence dev set, `--group-by-length`, batch 32, max length 128, one thread per run. Fine-tuning "
    "seeds 1-3 (20-epoch schedule, patience 4, 25-min cap); ptv2 seeds 1-3 on a 20-epoch schedule (`--max-epochs 20 "
    "--patience 5 --tag=-e20`, 30-min cap); a first seed-1 ptv2 run on the harness's 60-epoch schedule (patience 5, "
    "28-min cap); PEFT 0.21.2 prefix tuning (methods.py run by the transformers-5.23 environment's interpreter), "
    "seeds 1-3 on the ptv2-e20 schedule (27-min cap); then ptv2-e20 with the prefix started at PEFT's "
    "std 1.0 (`--prefix-init-std 1.0 --tag=-e20-init1`), seeds 1-2 side by side (20-min cap); last, in a later session, "
    "ptv2 on the same schedule without early stopping (`--patience 20 --max-minutes 27 --tag=-e20-nostop`), PEFT's "
    "cap, seeds 1-2 one after another beside one other run; then the same with the real tokens numbered from P as "
    "PEFT's cache does (`--shift-positions --tag=-e20-nostop-shift`, a diagnostic), seeds 1-2 side by side, 22-min "
    "cap. In session 8, after `peft_parity.py` showed PEFT's prefix is ours with the real tokens numbered from P: "
    "ptv2-e20 with both of PEFT's settings (`--prefix-init-std 1.0 --shift-positions --tag=-e20-init1-shift`, "
    "PEFT's 27-min cap), seeds 1-2 side by side, then seed 3 beside `ptv2-e20-init1` seed 3 (its seeds 1-2's "
    "20-min cap); then the positions alone on the same schedule (`--shift-positions --tag=-e20-shift`, 27-min cap), "
    "seeds 1-2 side by side and seed 3 alone. Two to four runs "
    "shared the 2 cores at any time, and a CPU smoke test of another script shared them for 7 minutes during "
    "fine-tuning seed 1 and the 60-epoch ptv2 run, so wall times are inflated unevenly and the time cap ended some "
    "runs (`stopped by`)",
    "cpu-peft-mc": "this 2-core CPU, PEFT 0.21.2 prefix tuning under transformers 5.23 (methods.py run by that "
    "environment's interpreter) on COPA and WSC at the harness defaults (P=20, lr 1e-2, patience 10, batch 16, max "
    "length 256), seeds one after another, 25-min cap per run, one thread, beside one other run: the same setup as "
    "cpu-small's fine-tuning and ptv2 rows",
    "cpu-peft-conll": "this 2-core CPU, CoNLL-2003 on its first 1,000 training sentences (`--max-train-samples "
    "1000`) scored on the full dev file: PEFT 0.21.2 prefix tuning (transformers 5.23, `--peft-python`) and ptv2 "
    "side by side, one thread each, seeds one pair after another; both P=100, lr 2e-2, batch 16, a 30-epoch "
    "schedule (patience 5) capped at 32 min of training; the cap ended some runs with dev F1 still rising, patience "
    "the others (`stopped by`): a comparison on equal data and time, not of converged runs. Only ptv2 has a test F1: these PEFT "
    "runs predate the harness's test pass for peft-prefix rows (its best-dev weights kept in memory). Fine-tuning, "
    "added in a later session, ran the same command at its own lr 5e-5 (no `--lr`), one thread beside one other run",
    "cpu-peft-rte": "this 2-core CPU, SuperGLUE RTE on its first 1,000 training examples (`--max-train-samples 1000`) "
    "scored on the full 277-example dev set, `--group-by-length`: PEFT 0.21.2 prefix tuning (transformers 5.23, "
    "`--peft-python`) and ptv2 side by side, one thread each, seeds one pair after another; both at the harness "
    "defaults (P=20, lr 1e-2, batch 16, max length 256) on a 20-epoch schedule (patience 5) capped at 22 min of "
    "training (no run reached it: patience ended all). A full-data RTE epoch took more than 6.5 min here, so the "
    "full task did not fit. On 1,000 examples neither prefix learns the task: both stay at the majority class's "
    "52.7 % within a point, the dev accuracy falling below it in most epochs, so this round shows that the PEFT "
    "row runs on RTE under the same rule, not which method is better there",
    "cpu-reparam-lr": "this 2-core CPU, `ptv2-reparam` at learning rates 1e-4 and 5e-4 (see 'Why the MLP "
    "reparameterisation diverges'), seeds 1-3 at 1e-4 and seed 1 at 5e-4 (the rest cut for time), one thread, "
    "each run capped at 6 min of training (`--max-minutes 6`): all of them were still improving when the cap hit",
    "cpu-nodrop": "this 2-core CPU, ptv2 with every dropout rate inside the backbone set to 0 (`--backbone-dropout 0`), "
    "otherwise the command of an earlier CPU row: SST-2's 4k subset as cpu-sst2's ptv2-e20 (20 epochs, patience 5, "
    "30-min cap, grouped by length), CB as cpu-init's ptv2 and COPA and WSC as cpu-small's ptv2 (harness defaults); "
    "one thread per run, seeds one after another, always two runs side by side (each other, or cpu-peft-conll's "
    "fine-tuning rows)",
}


def detail(runs: list[Run], round_name: str) -> str:
    """Every run of one round with its whole dev curve, so a reader can check any headline figure against it."""
    lines = ["| task | method | seed | best dev | test | epochs (best / run) | stopped by | wall s | dev per epoch |"]
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for r in sorted((r for r in runs if r.round == round_name), key=lambda r: (r.task, r.label, r.seed)):
        best = r.best
        extra = (
            f", EM {100 * best['em']:.1f}"
            if "em" in best
            else (f", EM {100 * best['exact']:.1f}" if "exact" in best else "")
        )
        test = "—"
        if r.row and r.row.get("test"):
            t = r.row["test"]
            test = f"{r.metric} {100 * t[r.metric]:.1f}" + (f", EM {100 * t['exact']:.1f}" if "exact" in t else "")
        wall = f"{r.row['wall_s']:.0f}" if r.row else f"> {r.history[-1].get('elapsed_s', 0):.0f}"
        curve = " ".join(f"{100 * h[r.metric]:.1f}" for h in r.history)
        lines.append(
            f"| {r.task} | {r.label} | {r.seed} | {r.metric} {100 * best[r.metric]:.1f}{extra} | {test} "
            f"| {epoch(best)} / {epoch(r.history[-1])} | {r.stopped_by} | {wall} | {curve} |"
        )
    return "\n".join(lines)


def round_sections(runs: list[Run]) -> list[str]:
    """One section per round that has runs, in ``ROUNDS`` order (oldest first), not the directories' sort order."""
    rounds = [name for name in ROUNDS if any(r.round == name for r in runs)]
    return [f"### {name}: {ROUNDS[name]}\n\n{detail(runs, name)}\n" for name in rounds]
