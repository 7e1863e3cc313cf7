"""A frozen backbone stored and run in reduced precision: ``--backbone-dtype fp32|bf16|fp16|int8``.

Only a frozen backbone can do this: its weights never receive an update, so no float32 master copy is needed.
Fine-tuning in bf16 would round every small update away (a weight of 1.0 does not move for updates below
2^-8), which is why mixed-precision fine-tuning keeps float32 weights and only *computes* in half precision.
Here the prompt, the head and the optimizer state stay float32; the backbone's weights and activations are
bf16/fp16. The prefix is cast to the backbone's dtype where it enters attention (``encoders/attention.py``,
``encoders/deberta.py``: ``pk.to(key.dtype)``), an input-level prompt where it joins the word embeddings
(``prepend_prompt``), and the encoder hands the head float32 hidden states (:meth:`Encoder.forward`).
Gradients come back through those casts, so the prompt's gradient is float32.

``fp16`` needs a CUDA GPU and, for training, ``--mixed-precision fp16``: fp16's range is narrow (gradients
below 6e-8 flush to zero), and Accelerate's fp16 mode scales the loss (a GradScaler) so that the gradients
flowing back through the fp16 backbone to the prompt stay representable. ``int8`` loads the backbone's
linear layers through bitsandbytes (LLM.int8()); it needs bitsandbytes and a CUDA GPU.

The backbone's fingerprint is the float32 weights' (computed before the cast and kept on the module), so a
prompt trained on a bf16 backbone loads on the float32 one and back: they are the same weights.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import nn

from .errors import PTuningError
from .trainconfig import BACKBONE_DTYPES

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
FINGERPRINT_ATTR = "_ptuning_fingerprint"  # the float32 weights' fingerprint, kept on a cast backbone


def check_backbone_dtype(name: str, *, training: bool = False, mixed_precision: str = "no") -> str:
    """Refuse a backbone dtype this machine (or this run's settings) cannot use, in one line, before any work."""
    if name not in BACKBONE_DTYPES:
        raise PTuningError(f"unknown --backbone-dtype {name!r}; choose one of {', '.join(BACKBONE_DTYPES)}")
    cuda = torch.cuda.is_available()
    if name == "fp16" and not cuda:
        raise PTuningError("--backbone-dtype fp16 needs a CUDA GPU; use bf16 (CPU and recent GPUs) or fp32")
    if name == "fp16" and training and mixed_precision != "fp16":
        raise PTuningError(
            "--backbone-dtype fp16 trains only with --mixed-precision fp16 (its loss scaling keeps the prompt's "
            "gradients from flushing to zero in fp16 activations); or use --backbone-dtype bf16"
        )
    if name == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise PTuningError("this GPU has no bf16 support; use --backbone-dtype fp16 or fp32")
    if name == "int8" and (importlib.util.find_spec("bitsandbytes") is None or not cuda):
        missing = "bitsandbytes is not installed" if cuda else "no CUDA GPU is visible to torch"
        raise PTuningError(f"--backbone-dtype int8 needs bitsandbytes and a CUDA GPU ({missing}); use bf16 or fp32")
    return name


def check_training_dtype(settings, method_class) -> None:
    """``settings.backbone_dtype`` for a training run (a ``TrainConfig``) of ``method_class``, refused in one line
    where the machine cannot run it or the method trains the backbone (its weights need float32 to take updates)."""
    dtype = settings.backbone_dtype
    check_backbone_dtype(dtype, training=True, mixed_precision=settings.mixed_precision)
    if dtype != "fp32" and method_class.trains_backbone:
        raise PTuningError(
            f"--backbone-dtype {dtype} needs a frozen backbone, and --method {method_class.name} trains it "
            "(its weights need float32 to take updates; use --mixed-precision)"
        )


def dtype_name(backbone: nn.Module) -> str:
    """How an artifact records the dtype ``backbone`` runs in (``fp32`` for anything else)."""
    if getattr(backbone, "is_loaded_in_8bit", False):
        return "int8"
    dtype = next((p.dtype for p in backbone.parameters() if p.is_floating_point()), torch.float32)
    return next((name for name, d in TORCH_DTYPES.items() if d == dtype), "fp32")


def keep_fingerprint(backbone: nn.Module) -> str:
    """Compute (once) and keep on ``backbone`` the fingerprint of its weights as they are now (float32)."""
    from .backbones import fingerprint

    recorded = getattr(backbone, FINGERPRINT_ATTR, None)
    if recorded is None:
        recorded = fingerprint(backbone)
        setattr(backbone, FINGERPRINT_ATTR, recorded)
    return recorded


def cast_frozen(backbone: nn.Module, name: str) -> None:
    """Store and run a frozen ``backbone`` in ``name`` (``fp32``, ``bf16``, ``fp16``), keeping its fingerprint.

    A backbone with trainable weights is refused: they would have no float32 master copy to update.
    """
    if name not in TORCH_DTYPES:
        raise PTuningError(f"--backbone-dtype {name} is chosen when the backbone is loaded, not by a cast")
    trainable = [n for n, p in backbone.named_parameters() if p.requires_grad]
    if trainable and name != "fp32":
        raise PTuningError(
            f"--backbone-dtype {name} needs a frozen backbone, but {len(trainable)} of its weights train "
            f"({trainable[0]}...): a method that trains the backbone needs float32 weights (use --mixed-precision)"
        )
    keep_fingerprint(backbone)
    backbone.to(TORCH_DTYPES[name])


def load_int8(name: str, overrides: dict, loader=None) -> nn.Module:
    """The backbone at ``name`` with its linear layers in 8 bits (bitsandbytes LLM.int8()), on the first GPU.

    ``loader``: the transformers auto class (``AutoModel``; ``AutoModelForCausalLM`` keeps the LM head).

    Its fingerprint is the float32 weights': they are read once on the CPU for it (the cost of one extra load).
    Not exercised by the test suite (it needs bitsandbytes and a GPU).
    """
    from transformers import AutoModel, BitsAndBytesConfig

    loader = loader or AutoModel
    full = loader.from_pretrained(name, **overrides)
    recorded = keep_fingerprint(full.base_model)  # the base model's, as without int8 (base_model: itself)
    del full
    quantization = BitsAndBytesConfig(load_in_8bit=True)
    backbone = loader.from_pretrained(name, quantization_config=quantization, device_map={"": 0}, **overrides)
    setattr(backbone.base_model, FINGERPRINT_ATTR, recorded)
    return backbone


def as_float32(hidden: torch.Tensor) -> torch.Tensor:
    """Hidden states for the float32 head: a half-precision backbone's are cast up (a no-op for float32)."""
    return hidden.float() if hidden.dtype in (torch.bfloat16, torch.float16) else hidden
