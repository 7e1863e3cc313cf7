"""The method harness's tables: per-method and per-task settings, data folders, the --quick subset.

Kept apart from ``methods.py`` so that its settings can be read (by ``report.py``, ``reproduce.py`` and the tests)
as one page of data, and the harness itself stays a page of logic.
"""

from __future__ import annotations

# Per-method settings: prompts need far larger rates and more epochs than fine-tuning.
SETTINGS = {
    "finetune": {"lr": 3e-5, "epochs": 20, "patience": 4},
    "ptv2": {"lr": 1e-2, "epochs": 60, "patience": 10, "prompt_length": 20},
    "ptv2-reparam": {"lr": 5e-4, "epochs": 60, "patience": 10, "prompt_length": 20},  # 5e-3 collapses (report.py)
    "prompt-tuning": {"lr": 3e-2, "epochs": 60, "patience": 10, "prompt_length": 20},
    # PTP (Chen et al., EMNLP 2023) regularises ptv2 and keeps its hyper-parameters; --perturb-eps is the library's.
    "ptv2-ptp-noise": {"lr": 1e-2, "epochs": 60, "patience": 10, "prompt_length": 20},
    "ptv2-ptp-adv": {"lr": 1e-2, "epochs": 60, "patience": 10, "prompt_length": 20},
    # Residual Prompt Tuning: the authors' MLP (bottleneck 800, ReLU, LayerNorm: the config's defaults); their lr 0.3
    # is T5's (embeddings far larger than MiniLM's ~1), so prompt-tuning's rate; P 20 as the prompt-tuning row.
    "prompt-tuning-residual": {"lr": 3e-2, "epochs": 60, "patience": 10, "prompt_length": 20},
    "ptv1": {"lr": 5e-3, "epochs": 60, "patience": 10, "prompt_length": 20},
    "linear-probe": {"lr": 5e-3, "epochs": 60, "patience": 10},
    "peft-prefix": {"lr": 1e-2, "epochs": 60, "patience": 10, "prompt_length": 20},
    # APT keeps P-Tuning v2's settings (its gates add no hyper-parameter); LPT: the official scripts' P=5, lr 1e-3
    # (its generator's bottleneck 128 and K = layers // 2 are the method's defaults)
    "apt": {"lr": 1e-2, "epochs": 60, "patience": 10, "prompt_length": 20},
    "lpt": {"lr": 1e-3, "epochs": 60, "patience": 10, "prompt_length": 5},
}
# Few-shot runs (--fewglue, --few-shot K) take 2 steps an epoch: fine-tuning's full-data schedule (20 epochs,
# patience 4) would stop it after at most 40 steps, so it gets the prompt methods' patience and more epochs.
FEW_SHOT_SETTINGS = {"finetune": {"epochs": 100, "patience": 10}}
ALL_METHODS = "finetune,prompt-tuning,ptv1,ptv2,ptv2-reparam"
# Rows that are a registered method with options set: name -> (registered method, its options).
VARIANTS = {
    "ptv2-reparam": ("ptv2", {"reparam": True}),
    "ptv2-ptp-noise": ("ptv2", {"perturb": "noise"}),
    "ptv2-ptp-adv": ("ptv2", {"perturb": "adversarial"}),
    "prompt-tuning-residual": ("prompt-tuning", {"residual": True}),
}
DATA_DIRS = {
    "cb": "superglue/cb",
    "rte": "superglue/rte",
    "copa": "superglue/copa",
    "wsc": "superglue/wsc",
    "multirc": "superglue/multirc",
    "boolq": "superglue/boolq",
    "sst2": "glue/sst2",
    "conll03": "conll2003",
    "squad": "squad/v1.1",
}
FEWGLUE_DIRS = {"cb": "CB", "rte": "RTE", "copa": "COPA", "wsc": "WSC", "boolq": "BoolQ", "multirc": "MultiRC"}
# Per-task settings that override the per-method ones (the paper uses long prompts for labelling tasks).
TASK_SETTINGS = {
    "conll03": {"prompt_length": 100, "max_length": 128, "batch_size": 32, "lr": {"finetune": 5e-5, "ptv2": 2e-2}},
    "squad": {"max_length": 384, "batch_size": 32, "task_options": {"split_by_article": 0.4}, "lr": {"finetune": 5e-5}},
    "multirc": {"batch_size": 32},
    "sst2": {"max_length": 128, "batch_size": 32},
}
TEST_SPLITS = {"conll03": "test", "squad": "test"}
# --quick: a subset of every task that fits ~20 minutes on 2 CPU cores; a smoke test of the harness, not a result.
QUICK = {
    "tasks": "cb,rte,conll03",  # no test-set pass (the full CoNLL test file takes minutes on CPU)
    "methods": ALL_METHODS,
    "seeds": "1",
    "max_epochs": 2,
    "max_train_samples": 96,
    "max_eval_samples": 64,
    "max_length": 128,
    "prompt_lengths": "1,5,20,50,100",
    "sweep_tasks": "rte,conll03",
}
