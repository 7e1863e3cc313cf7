"""Benchmark-only methods: HF PEFT's prefix tuning, and our prefix with PEFT's position numbering.

Both are registered plug-ins (``ptuning.method.register``), so the harness trains, saves, loads and scores
them through the library's own pipeline like any built-in method; they do not ship with the library.

``peft-prefix``: the comparison must differ in the prefix mechanism alone, so PEFT's ``PrefixTuningConfig``
wraps the bare backbone and everything else (task featurisation, head, pooling, AdamW loop, early stopping,
metrics) is ours. PEFT 0.21.2 injects the prefix through ``past_key_values``. On transformers 5.24 its task
models (sequence/token classification, QA) refuse encoders ("Model does not support past key values ...":
``BertModel.forward`` renamed the argument ``cache``), but the feature-extraction model used here still
passes it through 5.24's deprecation shim. If a transformers release drops that shim,
:func:`require_working_peft` says so and ``--peft-python`` runs these rows in a second environment
(``benchmarks/README.md``). PEFT's cache numbers the real tokens from ``P`` and PEFT drops
``token_type_ids``: otherwise its numbers equal our ptv2's exactly (``peft_parity.py``).

``ptv2-shifted``: our ptv2 with the real tokens numbered ``P..P+L-1``, as a cache-based prefix (PEFT, the
official code) numbers them: the diagnostic that isolates the position shift. The shift is now a library option
(``ptv2 --shift-positions``, recorded in the artifact); this name is its alias for earlier runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch

from ptuning.encoders import Encoder
from ptuning.method import Method, MethodConfig, PoolBatching, register
from ptuning.method.base import check_prompt_length
from ptuning.method.prefix import DeepPrompt, Ptv2Config


def require_working_peft(wrapped) -> None:
    """Fail in one line, before any training, when this transformers no longer runs PEFT's prefix.

    A forward pass on two tokens is the test: the failure depends on how transformers takes the cache, not on a
    version number we could list in advance. It runs in eval mode, so dropout draws no random numbers and the
    seeded run that follows is unchanged.
    """
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


@dataclass
class PeftPrefixConfig(MethodConfig):
    method: ClassVar[str] = "peft-prefix"
    prompt_length: int = 20

    def validate(self) -> None:
        check_prompt_length(self.prompt_length)


@register
class PeftPrefix(Method):
    """PEFT's prefix encoder trains; the backbone it wraps stays frozen."""

    name: ClassVar[str] = "peft-prefix"
    description: ClassVar[str] = "HF PEFT's prefix tuning (benchmark baseline; positions shifted by P)"
    config_class: ClassVar[type[MethodConfig]] = PeftPrefixConfig
    default_lr: ClassVar[float] = 1e-2
    pool_batching: ClassVar[PoolBatching] = PoolBatching.REFUSED
    pool_refusal: ClassVar[str] = "peft-prefix is a benchmark baseline; serve our own ptv2 artifacts"

    def __init__(self, config: PeftPrefixConfig, encoder: Encoder) -> None:
        super().__init__(config, encoder)
        encoder.wrap(lambda backbone: peft_wrap(backbone, config.prompt_length))
        self.prompt_encoder = encoder.backbone.prompt_encoder  # shared with the wrapped backbone

    def attach(self, encoder: Encoder) -> None:
        super().attach(encoder)  # freezes everything PEFT wrapped, its prompt encoder included ...
        self.prompt_encoder.requires_grad_(True)  # ... which alone trains again

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        return [{"params": list(self.prompt_encoder.parameters()), "weight_decay": 0.0}]  # the prefix table itself

    def fold(self) -> dict[str, torch.Tensor]:
        return {f"peft.{k}": v.detach().clone() for k, v in self.prompt_encoder.state_dict().items()}

    @torch.no_grad()
    def load_folded(self, tensors: dict[str, torch.Tensor]) -> None:
        self.prompt_encoder.load_state_dict(
            {k.removeprefix("peft."): v for k, v in tensors.items() if k[:5] == "peft."}
        )


@dataclass
class ShiftedPtv2Config(Ptv2Config):
    """ptv2 with ``shift_positions`` on by default: the name earlier runs of ``methods.py --shift-positions`` used."""

    method: ClassVar[str] = "ptv2-shifted"
    shift_positions: bool = True


@register
class ShiftedDeepPrompt(DeepPrompt):
    """ptv2 with PEFT's position numbering (diagnostic): now the library's ``ptv2 --shift-positions``, kept under
    this name so that artifacts made under it still load where this module is imported."""

    name: ClassVar[str] = "ptv2-shifted"
    description: ClassVar[str] = "ptv2 with real tokens numbered from P, as PEFT does (= ptv2 --shift-positions)"
    config_class: ClassVar[type[MethodConfig]] = ShiftedPtv2Config

    @classmethod
    def inference_config(cls, config: Ptv2Config) -> ShiftedPtv2Config:
        return ShiftedPtv2Config(**asdict(DeepPrompt.inference_config(config)))
