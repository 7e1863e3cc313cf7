"""A backbone + one tuning method + one task head.

Method, backbone and task are orthogonal: the method decides what is trained
(a deep prefix, an input prompt, all weights or only the head), the backbone
is any attention-interface model (or DeBERTa through its adapter), and the head
comes from the task. There is no class per (model, task) pair.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from . import backbones
from .errors import PTuningError
from .method import deberta, prefix
from .method.prefix import PrefixBatch, PrefixEncoder
from .method.prompt import PromptEncoder, SoftPrompt, prepend_prompt

METHODS = ("ptv2", "prompt-tuning", "ptv1", "finetune", "linear-probe")
DEEP = "ptv2"
INPUT_PROMPT = ("prompt-tuning", "ptv1")


@dataclass
class MethodConfig:
    """What is trained. ``prompt_length`` is ignored by finetune and linear-probe."""

    method: str = "ptv2"
    prompt_length: int = 20
    reparam: bool = False
    reparam_hidden: int = 512
    prefix_dropout: float = 0.0
    prompt_encoder: str = "lstm"
    prefix_init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise PTuningError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.prompt_length < 0:
            raise PTuningError("--prompt-length must be >= 0")
        if not self.prefix_init_std > 0:
            raise PTuningError(f"--prefix-init-std must be > 0, got {self.prefix_init_std}")
        if self.method not in (DEEP, *INPUT_PROMPT):
            self.prompt_length = 0

    def to_dict(self) -> dict:
        return asdict(self)


class PTuningModel(nn.Module):
    """Runs the backbone with the method's prompt and applies the task head."""

    def __init__(self, backbone: nn.Module, config: MethodConfig, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.config, self.head = backbone, config, head
        self.geometry = backbones.geometry(backbone)
        self.is_deberta = deberta.is_deberta(backbone)
        self.prefix_encoder: PrefixEncoder | None = None
        self.prompt: nn.Module | None = None
        P = config.prompt_length
        if config.method == DEEP:
            g = self.geometry
            self.prefix_encoder = PrefixEncoder(
                g.num_layers,
                g.num_kv_heads,
                g.head_dim,
                P,
                reparam=config.reparam,
                hidden_size=config.reparam_hidden,
                embed_size=g.hidden_size,
                dropout=config.prefix_dropout,
                init_std=config.prefix_init_std,
            )
            if self.is_deberta:
                deberta.attach(backbone)
            else:
                backbones.ensure_layer_indices(backbone)
                prefix.attach(backbone)
        elif config.method == "prompt-tuning":
            self.prompt = SoftPrompt(P, backbone.get_input_embeddings())
        elif config.method == "ptv1":
            self.prompt = PromptEncoder(P, self.geometry.hidden_size, config.prompt_encoder)
        for p in backbone.parameters():
            p.requires_grad_(config.method == "finetune")

    # -- parameters -------------------------------------------------------------
    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def backbone_parameters(self) -> int:
        return sum(p.numel() for p in self.backbone.parameters())

    @property
    def input_prompt_length(self) -> int:
        """Positions the input-level prompt occupies (the input must leave room for them)."""
        return self.config.prompt_length if self.config.method in INPUT_PROMPT else 0

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in backward. Works with deep prompts because the
        prefix is a forward argument, which checkpointing replays."""
        if self.is_deberta and self.config.method == DEEP:
            raise PTuningError("gradient checkpointing with deep prompts is not supported on DeBERTa")
        self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.backbone.config.use_cache = False

    # -- forward ----------------------------------------------------------------
    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        *,
        prefix_batch: PrefixBatch | None = None,
        prompt: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states ``(B, L, H)`` aligned with ``input_ids`` (input prompts stripped).

        ``prefix_batch`` / ``prompt`` override the model's own prompt, e.g. with a
        different prompt per row.
        """
        inputs: dict = {"attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        if self.prefix_encoder is not None and prefix_batch is None:
            prefix_batch = PrefixBatch.single(self.prefix_encoder())
        if self.prompt is not None and prompt is None:
            prompt = self.prompt()  # (P, H)
        strip = 0
        if prompt is not None and prompt.shape[-2] > 0:
            words = self.backbone.get_input_embeddings()(input_ids)  # (B, L, H)
            embeds, mask, types = prepend_prompt(words, prompt, attention_mask, token_type_ids)
            inputs.update(inputs_embeds=embeds, attention_mask=mask)  # (B, P + L, H)
            if types is not None:
                inputs["token_type_ids"] = types
            strip = prompt.shape[-2]
        else:
            inputs["input_ids"] = input_ids
        if self.is_deberta:
            with deberta.active_prefix(prefix_batch):
                out = self.backbone(**inputs)
        else:
            if prefix_batch is not None:
                inputs[prefix.PREFIX_KWARG] = prefix_batch
            out = self.backbone(**inputs)
        return out.last_hidden_state[:, strip:]  # (B, L, H)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        *,
        prefix_batch: PrefixBatch | None = None,
        prompt: torch.Tensor | None = None,
        choice_mask: torch.Tensor | None = None,
        **head_inputs: torch.Tensor,
    ) -> torch.Tensor:
        """Task logits. Extra tensors of the batch (span masks…) go to the head.

        ``(B, C, L)`` inputs are multiple choice: every choice is scored as its own
        row and the scores come back as ``(B, C)``, padded choices masked out.
        """
        if input_ids.dim() == 3:
            B, C, L = input_ids.shape

            def flat(t):
                return None if t is None else t.reshape(B * C, *t.shape[2:])  # (B*C, ...)

            scores = self.forward(
                flat(input_ids),
                flat(attention_mask),
                flat(token_type_ids),
                prefix_batch=prefix_batch,
                prompt=prompt,
                **{k: flat(v) for k, v in head_inputs.items()},
            ).view(B, C)  # (B, C)
            if choice_mask is not None:
                scores = scores.masked_fill(~choice_mask.bool(), torch.finfo(scores.dtype).min)
            return scores
        hidden = self.encode(input_ids, attention_mask, token_type_ids, prefix_batch=prefix_batch, prompt=prompt)
        return self.head(hidden, attention_mask, **head_inputs)

    # -- folding for artifacts ------------------------------------------------------
    def folded_prompt(self) -> dict[str, torch.Tensor]:
        """The prompt as plain tensors: reparam MLPs and prompt encoders applied once."""
        if self.prefix_encoder is not None:
            return {"prefix": self.prefix_encoder.fold()}  # (layers, 2, kv, P, hd)
        if self.prompt is not None:
            with torch.no_grad():
                return {"prompt": self.prompt().detach().clone().contiguous()}  # (P, H)
        return {}

    def load_folded_prompt(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`folded_prompt` on a model built without reparam/encoder."""
        if "prefix" in tensors:
            kv = tensors["prefix"]  # (layers, 2, kv, P, hd)
            weight = kv.permute(3, 0, 1, 2, 4).reshape(kv.shape[3], -1)  # (P, layers*2*kv*hd)
            self.prefix_encoder.embedding.weight.data.copy_(weight)
        if "prompt" in tensors:
            self.prompt = SoftPrompt(tensors["prompt"].shape[0], self.backbone.get_input_embeddings())
            self.prompt.weight.data.copy_(tensors["prompt"])
