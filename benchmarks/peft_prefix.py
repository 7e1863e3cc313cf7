"""HF PEFT's prefix tuning as a benchmark-only baseline, on our heads, data and training loop.

The comparison must differ in the prefix mechanism alone, so PEFT's
``PrefixTuningConfig`` wraps the bare backbone and everything else (task
featurisation, head, pooling, AdamW loop, early stopping, metrics) is ours.

PEFT 0.21.2 injects the prefix through ``past_key_values``. On transformers 5.24
its task models (sequence/token classification, QA) refuse encoders ("Model does
not support past key values ...": ``BertModel.forward`` renamed the argument
``cache``), but the feature-extraction model used here still passes it through
5.24's deprecation shim. If a transformers release drops that shim,
:func:`require_working_peft` says so and ``--peft-python`` runs these rows in a
second environment (``benchmarks/README.md``). PEFT's cache numbers the real
tokens from ``P`` and PEFT drops ``token_type_ids``: otherwise its numbers equal
our ptv2's exactly (``peft_parity.py``).
"""

from __future__ import annotations

from pathlib import Path

from ptuning import backbones
from ptuning.model import MethodConfig, PTuningModel


def require_working_peft(wrapped) -> None:
    """Fail in one line, before any training, when this transformers no longer runs PEFT's prefix.

    A forward pass on two tokens is the test: the failure depends on how transformers takes the cache, not on a
    version number we could list in advance. It runs in eval mode, so dropout draws no random numbers and the
    seeded run that follows is unchanged.
    """
    import torch
    import transformers

    ids = torch.ones(1, 2, dtype=torch.long)
    was_training = wrapped.training
    try:
        with torch.no_grad():
            wrapped.eval()
            wrapped(input_ids=ids, attention_mask=torch.ones_like(ids))
    except (TypeError, ValueError) as error:
        raise SystemExit(
            f"PEFT's prefix tuning fails on transformers {transformers.__version__} ({error}); run the PEFT rows "
            "with --peft-python and transformers 5.23 in a separate environment (benchmarks/README.md)"
        ) from None
    finally:
        wrapped.train(was_training)


def peft_wrap(backbone, prompt_length: int):
    """PEFT's prefix around the bare backbone (its feature-extraction model: our heads do the rest)."""
    from peft import PrefixTuningConfig, TaskType, get_peft_model

    wrapped = get_peft_model(
        backbone, PrefixTuningConfig(task_type=TaskType.FEATURE_EXTRACTION, num_virtual_tokens=prompt_length)
    )
    require_working_peft(wrapped)
    return wrapped


def peft_prefix_model(backbone, prompt_length: int, head) -> PTuningModel:
    """Our model around a PEFT-prefixed backbone: PEFT's prompt encoder and our head train, nothing else."""
    wrapped = peft_wrap(backbone, prompt_length)
    model = PTuningModel(wrapped, MethodConfig("linear-probe"), head)  # freezes everything PEFT wrapped ...
    for p in wrapped.prompt_encoder.parameters():  # ... then PEFT's prefix trains again
        p.requires_grad_(True)
    return model


class BestWeights:
    """The best-dev trainable weights, kept in memory: the stand-in for the artifact our methods save."""

    def __init__(self) -> None:
        self.weights: dict = {}

    def keep(self, model, scores: dict | None = None) -> None:
        """``train``'s ``save_best``; the scores are not needed: nothing an evaluation tunes is kept here."""
        self.weights = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}

    def restore(self, model) -> None:
        model.load_state_dict(self.weights, strict=False)  # the trainable weights only: the frozen rest never changed


def train_peft_prefix(
    task_name: str, data: str, output: Path, *, model_name, prompt_length, train_config, test_split=None, **options
):
    """``pipeline.train`` with PEFT's prefix in place of ours (no artifact: PEFT keeps its own format).

    The best-dev weights stay in memory instead, so that ``test_split`` (CoNLL-2003, SQuAD) is scored with them,
    as the harness scores our methods' best-dev artifacts.
    """
    from accelerate.utils import set_seed

    from ptuning.pipeline import _token_budget, score_split, training_examples
    from ptuning.tasks import get_task
    from ptuning.train import train as run_loop

    task, train_examples, eval_examples = training_examples(
        get_task(task_name, **options.get("task_options", {})),
        data,
        options.get("max_train_samples"),
        options.get("max_eval_samples"),
    )
    set_seed(train_config.seed)
    backbone, tokenizer, _ = backbones.load_backbone(model_name, dropout=train_config.backbone_dropout)
    head = task.build_head(backbone.config.hidden_size, options.get("pooling", "mean"))
    model = peft_prefix_model(backbone, prompt_length, head)
    budget = _token_budget(options.get("max_length", 256), model)
    output.mkdir(parents=True, exist_ok=True)
    print(
        f"peft-prefix: PEFT's {prompt_length}-slot prefix and our head train; the line below names our wrapper's "
        "frozen-backbone mode (linear-probe) and counts PEFT's prefix into the backbone",
        flush=True,
    )
    best = BestWeights()
    summary = run_loop(
        model,
        task,
        task.featurize(train_examples, tokenizer, budget).features,
        task.featurize(eval_examples, tokenizer, budget),
        eval_examples,
        task.collator(tokenizer),
        train_config,
        output,
        save_best=best.keep,
    )
    summary["backbone_params"] -= sum(p.numel() for p in model.backbone.prompt_encoder.parameters())  # the row: ours
    if test_split and best.weights:
        best.restore(model)
        summary["test"] = score_split(model, tokenizer, task, data, test_split, options.get("max_length", 256))
    return summary
