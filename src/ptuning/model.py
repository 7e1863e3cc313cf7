"""A model is an encoder (backbone + its family's injector) + one tuning method + one task head.

Method, backbone and task are orthogonal: the method (``method/``) decides what is trained and what it
adds to a forward call, the encoder (``encoders/``) runs any backbone family with it, and the head comes
from the task (``tasks/``). There is no class per (model, task) pair, and nothing here knows a method
or family by name.

A method whose prompt starts above layer 0 (:meth:`Method.frozen_layers`, ``--prefix-layers top:K``) leaves the
layers below as the frozen backbone runs them: the model keeps them in eval mode (no dropout) while training and
runs them without autograd, and a training run may attach an activation cache (``activations.py``) that keeps their
output per input, so that later epochs run only the prompted layers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .encoders import Encoder, PromptInputs
from .encoders.depth import DepthPlan
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
        self.encoder.freeze_below(self.method.frozen_layers())
        self.activations = None  # an ActivationCache (activations.py) the training loop may attach

    def frozen_layers(self) -> int:
        """The bottom layers nothing trained reaches in the current mode (:meth:`Method.training_frozen_layers`)."""
        return self.method.training_frozen_layers() if self.training else self.method.frozen_layers()

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
        activation_units: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states ``(B, L, H)`` aligned with ``input_ids``. ``prompt`` overrides the method's own.

        ``activation_units`` ``(B,)``: each row's entry in the attached activation cache, which then supplies (or
        keeps) the hidden states entering the first prompted layer. Without a cache it is ignored, and so is the
        frozen bottom when ``prompt`` is not the method's own (it may reach any layer).
        """
        frozen = self.frozen_layers() if prompt is None else 0
        prompt = self.method.prompt_inputs() if prompt is None else prompt
        cache = self.activations
        if cache is not None and activation_units is not None and 0 < cache.depth <= frozen:
            return cache.encode(self.encoder, activation_units, input_ids, attention_mask, token_type_ids, prompt)
        plan = DepthPlan(no_grad_below=frozen) if frozen and torch.is_grad_enabled() else None
        return self.encoder(input_ids, attention_mask, token_type_ids, prompt, plan=plan)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        *,
        prompt: PromptInputs | None = None,
        choice_mask: torch.Tensor | None = None,
        activation_units: torch.Tensor | None = None,
        **head_inputs: torch.Tensor,
    ) -> torch.Tensor:
        """Task logits. Extra inputs of the batch (span masks…, a mixture's ``task`` name) go to the head.

        ``(B, C, L)`` inputs are multiple choice: every choice is scored as its own
        row and the scores come back as ``(B, C)``, padded choices masked out.
        ``activation_units`` (``(B,)``, ``(B, C)``): see :meth:`encode`.
        """
        if input_ids.dim() == 3:
            B, C, L = input_ids.shape

            def flat(t):
                if not torch.is_tensor(t):  # None, or a mixture's task name
                    return t
                return t.reshape(B * C, *t.shape[2:])  # (B*C, ...)

            scores = self.forward(
                flat(input_ids),
                flat(attention_mask),
                flat(token_type_ids),
                prompt=prompt,
                activation_units=flat(activation_units),
                **{k: flat(v) for k, v in head_inputs.items()},
            ).view(B, C)  # (B, C)
            if choice_mask is not None:
                scores = scores.masked_fill(~choice_mask.bool(), torch.finfo(scores.dtype).min)
            return scores
        hidden = self.encode(
            input_ids, attention_mask, token_type_ids, prompt=prompt, activation_units=activation_units
        )
        return self.head(hidden, attention_mask, **head_inputs)
