"""A model is an encoder (backbone + its family's injector) + one tuning method + one task head.

Method, backbone and task are orthogonal: the method (``method/``) decides what is trained and what it
adds to a forward call, the encoder (``encoders/``) runs any backbone family with it, and the head comes
from the task (``tasks/``). There is no class per (model, task) pair, and nothing here knows a method
or family by name.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .encoders import Encoder, PromptInputs
from .method import Method, MethodConfig, build_method, decay_groups


class PTuningModel(nn.Module):
    """Runs the encoder with the method's prompt and applies the task head.

    ``encoder`` may be a bare backbone (it is wrapped) and ``method`` a config (it is built and attached).
    """

    def __init__(self, encoder: Encoder | nn.Module, method: Method | MethodConfig, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder if isinstance(encoder, Encoder) else Encoder(encoder)
        self.method = method if isinstance(method, Method) else build_method(method, self.encoder)
        self.head = head

    @property
    def backbone(self) -> nn.Module:
        return self.encoder.backbone

    @property
    def config(self) -> MethodConfig:
        return self.method.config

    # -- parameters -------------------------------------------------------------
    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def backbone_parameters(self) -> int:
        """The backbone's own parameters (a method that wraps the backbone does not count its own in)."""
        own = {id(p) for p in self.method.parameters()}
        return sum(p.numel() for p in self.encoder.parameters() if id(p) not in own)

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: the method decides for its parameters (the backbone's, for fine-tuning); the head decays its
        matrices."""
        backbone = {id(p) for p in self.encoder.parameters()}  # an LM head tied to the embeddings is the backbone's
        named = [(n, p) for n, p in self.head.named_parameters() if id(p) not in backbone]
        head = decay_groups(named, weight_decay)
        groups = [g for g in self.method.parameter_groups(weight_decay) + head if g["params"]]
        grouped = [id(p) for g in groups for p in g["params"]]
        trainable = {id(p) for p in self.parameters() if p.requires_grad}
        if len(grouped) != len(set(grouped)) or set(grouped) != trainable:
            raise TypeError(f"{type(self.method).__name__}.parameter_groups must list each trainable parameter once")
        return groups

    def learning_rate(self) -> float:
        return self.method.learning_rate()

    def training_loss(
        self,
        batch: dict,
        labels: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        *,
        forward: Callable[..., torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """One batch's training loss, as the method computes it (:meth:`Method.training_loss`).

        ``forward`` is what runs the model (default: this model itself); the training loop passes its
        accelerate-prepared wrapper of this model, so that autocast and data-parallel gradient syncing apply.
        """
        return self.method.training_loss(self if forward is None else forward, batch, labels, loss_fn)

    def token_budget(self, max_length: int) -> int:
        """Input tokens a feature may hold at ``max_length`` with this method's prompt."""
        return self.encoder.token_budget(max_length, self.method.input_positions)

    def enable_gradient_checkpointing(self) -> None:
        self.encoder.enable_gradient_checkpointing()

    # -- forward ----------------------------------------------------------------
    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        *,
        prompt: PromptInputs | None = None,
    ) -> torch.Tensor:
        """Hidden states ``(B, L, H)`` aligned with ``input_ids``. ``prompt`` overrides the method's own."""
        prompt = self.method.prompt_inputs() if prompt is None else prompt
        return self.encoder(input_ids, attention_mask, token_type_ids, prompt)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        *,
        prompt: PromptInputs | None = None,
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
                prompt=prompt,
                **{k: flat(v) for k, v in head_inputs.items()},
            ).view(B, C)  # (B, C)
            if choice_mask is not None:
                scores = scores.masked_fill(~choice_mask.bool(), torch.finfo(scores.dtype).min)
            return scores
        hidden = self.encode(input_ids, attention_mask, token_type_ids, prompt=prompt)
        return self.head(hidden, attention_mask, **head_inputs)
