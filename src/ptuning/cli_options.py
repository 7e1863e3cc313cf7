"""The ``ptuning train`` options other than the method's, declared once as annotated types.

``cli.train`` lists each option in one line (``epochs: Epochs = TrainConfig.epochs``):
the help text lives here, the default in the dataclass that uses it, so neither
is copied. Names follow Hugging Face ``run_glue.py`` where one exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Task = Annotated[
    Optional[str],
    typer.Option(
        help="Task name (see `ptuning tasks`); several, comma-separated (rte,cb), train one multi-task prompt."
    ),
]
Data = Annotated[
    Optional[str],
    typer.Option(
        help="Directory with the official split files, or a Hugging Face dataset id; with --task a,b a folder "
        "holding one sub-folder per task."
    ),
]
TasksFile = Annotated[
    Optional[Path],
    typer.Option(
        help="Multi-task run: YAML `tasks: [{task: rte, data: DIR}, {task: cb, data: DIR, weight: 2.0}]` "
        "(one shared prompt, a head per task); replaces --task/--data."
    ),
]
MixTemperature = Annotated[
    Optional[float],
    typer.Option(
        help="Multi-task: draw each task's batches with p ∝ weight · size^(1/T); 1 (default) proportional to "
        "size, large T uniform."
    ),
]
InitFrom = Annotated[
    Optional[str],
    typer.Option(
        help="Start from this artifact's prompt (e.g. a multi-task one) and from its head where the task's label "
        "set matches."
    ),
]
Teacher = Annotated[
    Optional[str],
    typer.Option(help="Distil from this artifact (e.g. a --method finetune one on the same task and labels)."),
]
DistillAlpha = Annotated[
    Optional[float], typer.Option(help="--teacher: weight A of the task loss in A·CE + (1−A)·T²·KL (0.5).")
]
DistillTemperature = Annotated[
    Optional[float], typer.Option(help="--teacher: temperature T softening both distributions (2.0).")
]
Output = Annotated[Path, typer.Option(help="Output directory: artifact, metrics.json(l), config.yaml, checkpoint.")]
Model = Annotated[Optional[str], typer.Option(help="Backbone path or hub id (default: bundled all-MiniLM-L6-v2).")]

Epochs = Annotated[int, typer.Option(help="Maximum epochs.")]
Lr = Annotated[
    Optional[float],
    typer.Option(help="Peak learning rate (default per method: ptv2 5e-3, ptv2 --reparam 5e-4, finetune 5e-5...)."),
]
BatchSize = Annotated[int, typer.Option(help="Training batch size (per process).")]
EvalBatchSize = Annotated[int, typer.Option(help="Evaluation batch size.")]
MaxLength = Annotated[
    Optional[int],
    typer.Option(help="Maximum tokens per input, at least 8 (default 384 for QA, else 128; deep prompts take none)."),
]
MaxTrainSamples = Annotated[Optional[int], typer.Option(help="Use only the first N training examples.")]
MaxEvalSamples = Annotated[Optional[int], typer.Option(help="Use only the first N evaluation examples.")]
FewShot = Annotated[
    Optional[int],
    typer.Option(
        help="Low-resource protocol: draw K training and K selection examples from the training file (stratified "
        "by label; ids in OUT/few_shot.json); the full validation file is only reported."
    ),
]
FewShotSeed = Annotated[int, typer.Option(help="Which K-shot draw (--few-shot): the same seed draws the same ids.")]
Seed = Annotated[int, typer.Option(help="Random seed.")]
WeightDecay = Annotated[float, typer.Option(help="AdamW weight decay (not on prompts or biases).")]
WarmupRatio = Annotated[float, typer.Option(help="Fraction of steps for linear warmup, in [0, 1).")]
Scheduler = Annotated[str, typer.Option(help="linear | exponential | constant decay after warmup.")]
DecayGamma = Annotated[float, typer.Option(help="Per-epoch factor of the exponential decay, in (0, 1].")]
MaxGradNorm = Annotated[float, typer.Option(help="Gradient clipping norm.")]
EvalSteps = Annotated[Optional[int], typer.Option(help="Evaluate every N steps instead of every epoch.")]
Patience = Annotated[Optional[int], typer.Option(help="Stop after N evaluations without improvement.")]
MaxMinutes = Annotated[
    Optional[float],
    typer.Option(help="Stop at the first evaluation after this many minutes of training (the best artifact is kept)."),
]
GradAccum = Annotated[int, typer.Option(help="Gradient accumulation steps.")]
GradientCheckpointing = Annotated[bool, typer.Option(help="Recompute activations to save memory.")]
GroupByLength = Annotated[
    bool, typer.Option(help="Batch inputs of similar length together: less padding, faster epochs on varied data.")
]
MixedPrecision = Annotated[
    str,
    typer.Option(help="no | bf16 | fp16: forward passes under autocast (faster on GPUs); weights stay fp32."),
]
BackboneDropout = Annotated[
    Optional[float],
    typer.Option(
        help="Every dropout rate inside the backbone while training (default: the checkpoint's, 0.1 for BERT). "
        "0 makes CPU training much faster (see BENCHMARKS.md); its effect on accuracy depends on the task."
    ),
]
ActivationCache = Annotated[
    bool,
    typer.Option(
        "--activation-cache/--no-activation-cache",
        help="With --prefix-layers top:K or A-B: compute the unprompted bottom layers once per input (first epoch) "
        "and run only the prompted ones after; same results, less time. The run log says whether it was used.",
    ),
]
ActivationCacheMb = Annotated[
    float,
    typer.Option(help="The activation cache stays in memory up to this many MB, else it is memory-mapped in OUT."),
]
Pooling = Annotated[
    str,
    typer.Option(
        help="auto | cls | mean | last. auto: the checkpoint's declared pooling, else cls or last (decoders)."
    ),
]
TextColumn = Annotated[Optional[str], typer.Option(help="text-classification: the text column.")]
TextPairColumn = Annotated[Optional[str], typer.Option(help="text-classification: the second text column.")]
LabelColumn = Annotated[Optional[str], typer.Option(help="text-classification: the label column.")]
Labels = Annotated[Optional[str], typer.Option(help="token-classification: comma-separated tag set (else from data).")]
Crf = Annotated[bool, typer.Option(help="Tagging tasks: a CRF layer (IOB2-constrained Viterbi) on the token head.")]
DocStride = Annotated[Optional[int], typer.Option(help="QA: tokens between context windows (default 128).")]
SplitByArticle = Annotated[
    Optional[float],
    typer.Option(
        help="QA: split ONE SQuAD file by article title; FRACTION of articles held out, halved into validation "
        "(early stopping) and test (`ptuning eval --split test`)."
    ),
]
Resume = Annotated[bool, typer.Option(help="Continue OUTPUT/checkpoint; refused if it was made with other settings.")]
Overwrite = Annotated[bool, typer.Option(help="Replace a non-empty OUTPUT.")]

# The methods' options (None: not given, the method's own default; a method refuses options it does not take).
Method = Annotated[
    str, typer.Option(help="ptv2 | apt | lpt | prompt-tuning | ptv1 | finetune | linear-probe (`ptuning methods`).")
]
PromptLength = Annotated[
    Optional[int], typer.Option(help="Prompt length P (prefix slots per layer, or input prompt tokens); default 20.")
]
Reparam = Annotated[
    Optional[bool], typer.Option("--reparam/--no-reparam", help="ptv2: train the prefix through an MLP.")
]
ReparamHidden = Annotated[Optional[int], typer.Option(help="ptv2: hidden width of the reparameterisation MLP (512).")]
PrefixDropout = Annotated[Optional[float], typer.Option(help="ptv2: dropout on the prefix during training (0).")]
PrefixLayers = Annotated[
    Optional[str],
    typer.Option(
        help="ptv2, apt: the layers that get a prefix: all (default) | top:K (the K highest) | A-B (from 0). Layers "
        "below the lowest prompted one run frozen: no dropout, no backward, and their output can be kept."
    ),
]
PromptEncoder = Annotated[Optional[str], typer.Option(help="ptv1 prompt encoder: lstm (default) | mlp.")]
PrefixInitStd = Annotated[
    Optional[float],
    typer.Option(help="ptv2 without --reparam: std of the prefix's initial values (0.02; 1.0 = the official code's)."),
]
ShiftPositions = Annotated[
    Optional[bool],
    typer.Option(
        "--shift-positions/--no-shift-positions",
        help="ptv2: number real tokens from P, as PEFT's cache-based prefix does (the prefix takes P positions).",
    ),
]
DropTokenTypes = Annotated[
    Optional[bool],
    typer.Option(
        "--drop-token-types/--keep-token-types",
        help="ptv2: run without token_type_ids (segment ids), as PEFT's prompt-learning models do.",
    ),
]
Perturb = Annotated[
    Optional[str],
    typer.Option(
        help="ptv2: PTP regulariser while training: none (default) | noise | adversarial input perturbations."
    ),
]
PerturbEps = Annotated[
    Optional[float],
    typer.Option(help="ptv2 --perturb: size of the perturbation, RMS norm per input token embedding (0.02)."),
]
Residual = Annotated[
    Optional[bool],
    typer.Option(
        "--residual/--no-residual", help="prompt-tuning: train the prompt through a residual MLP (Residual PT)."
    ),
]
ResidualHidden = Annotated[Optional[int], typer.Option(help="prompt-tuning --residual: the MLP's bottleneck (800).")]
PromptLayer = Annotated[
    Optional[int],
    typer.Option(help="lpt: the layer whose input receives the late prompt (default: the middle one, layers // 2)."),
]
GeneratorHidden = Annotated[Optional[int], typer.Option(help="lpt: bottleneck width of the prompt generator (128).")]
GeneratorDropout = Annotated[Optional[float], typer.Option(help="lpt: dropout on the generated prompt (0.1).")]
BackboneDtype = Annotated[
    str,
    typer.Option(
        help="fp32 | bf16 | fp16 | int8: store and run the frozen backbone in this precision; the prompt, head and "
        "optimizer stay fp32 (fp16 and int8 need a CUDA GPU; int8 needs bitsandbytes). Not for methods that train "
        "the backbone."
    ),
]
LoadedBackboneDtype = Annotated[
    Optional[str], typer.Option(help="fp32 | bf16 | fp16 | int8 for the backbone (default: what it was trained in).")
]
Optimizer = Annotated[
    str,
    typer.Option(
        help="adamw | cma. cma: Black-Box Tuning, CMA-ES over a random projection of the prompt and head (forward "
        "passes only, no gradients; ptv2, prompt-tuning); needs the cma package."
    ),
]
CmaDim = Annotated[int, typer.Option(help="--optimizer cma: dimension of the searched vector z.")]
CmaPopsize = Annotated[int, typer.Option(help="--optimizer cma: candidates scored per batch.")]
CmaSigma = Annotated[float, typer.Option(help="--optimizer cma: CMA-ES's initial step size in z.")]
ShardBackbone = Annotated[
    bool,
    typer.Option(
        help="Split the frozen backbone's weights across the launched processes (FSDP2; the prompt and head stay "
        "whole): for backbones larger than one device. See the README's launch command."
    ),
]

TargetColumn = Annotated[Optional[str], typer.Option(help="text-generation: the target column.")]

# Decoding (generation tasks: `ptuning generate`, and `ptuning eval` of a generation artifact). None: the task's own.
MaxNewTokens = Annotated[
    Optional[int], typer.Option(help="Generation: most new tokens per output (task default: e2e 64, dialogsum 96).")
]
NumBeams = Annotated[Optional[int], typer.Option(help="Generation: beam search width (1: greedy).")]
DoSample = Annotated[Optional[bool], typer.Option("--do-sample/--greedy", help="Generation: sample instead.")]
Temperature = Annotated[Optional[float], typer.Option(help="Generation --do-sample: softmax temperature (1.0).")]
TopP = Annotated[Optional[float], typer.Option(help="Generation --do-sample: nucleus probability mass (1.0).")]
TopK = Annotated[Optional[int], typer.Option(help="Generation --do-sample: sample among the K likeliest (50).")]
DecodeSeed = Annotated[Optional[int], typer.Option("--seed", help="Generation --do-sample: random seed (0).")]
