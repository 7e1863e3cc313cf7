"""Methods as registered plug-ins: the interface, the registry, decay by shape, and a toy method end to end."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from conftest import tiny_backbone, train_tiny

from ptuning import artifact, pipeline
from ptuning.encoders import Encoder, PrefixBatch, PromptInputs
from ptuning.errors import PTuningError
from ptuning.heads import SequenceClassificationHead
from ptuning.method import REGISTRY, Method, MethodConfig, config_from_dict, method_config, register
from ptuning.method.base import MAX_PROMPT_LENGTH, check_prompt_length
from ptuning.model import PTuningModel


@dataclass
class SharedSlotsConfig(MethodConfig):
    method: ClassVar[str] = "toy-shared-slots"
    prompt_length: int = 4

    def validate(self) -> None:
        check_prompt_length(self.prompt_length)


@register
class SharedSlots(Method):
    """A toy method: ONE set of prefix slots repeated in every layer. Defined here, it touches no library file."""

    name: ClassVar[str] = "toy-shared-slots"
    description: ClassVar[str] = "test-only: one prefix shared by every layer"
    config_class: ClassVar[type[MethodConfig]] = SharedSlotsConfig

    def __init__(self, config: SharedSlotsConfig, encoder: Encoder) -> None:
        super().__init__(config, encoder)
        g = encoder.geometry
        self.slots = torch.nn.Parameter(torch.randn(2, g.num_kv_heads, config.prompt_length, g.head_dim))

    def attach(self, encoder: Encoder) -> None:
        super().attach(encoder)
        encoder.enable_prefix()

    def prefix(self) -> torch.Tensor:
        return self.slots.unsqueeze(0).expand(self.geometry.num_layers, -1, -1, -1, -1)  # (layers, 2, kv, P, hd)

    def prompt_inputs(self) -> PromptInputs:
        return PromptInputs(prefix=PrefixBatch.single(self.prefix()))

    def fold(self) -> dict[str, torch.Tensor]:
        return {"slots": self.slots.detach().clone()}

    @torch.no_grad()
    def load_folded(self, tensors: dict[str, torch.Tensor]) -> None:
        self.slots.copy_(tensors["slots"])

    def serving_prefix(self) -> torch.Tensor:
        return self.prefix().detach().contiguous()


def test_the_built_in_methods_are_registered():
    assert {"ptv2", "prompt-tuning", "ptv1", "finetune", "linear-probe"} <= set(REGISTRY)


def test_a_toy_method_trains_saves_loads_and_serves(tmp_path, sst2_dir, tiny_bert_dir):
    from ptuning.serve.pool import PromptPool

    out = tmp_path / "toy"
    summary = train_tiny(
        "sst2", sst2_dir, out, tiny_bert_dir, method="toy-shared-slots", prompt_length=3, epochs=2, max_length=32
    )
    assert summary["method"] == {"method": "toy-shared-slots", "prompt_length": 3}
    assert summary["trainable_params"] == 2 * 4 * 3 * 8 + (32 * 2 + 2)  # the slots + the head
    model, _, _, meta = artifact.load_artifact(out, model_name=str(tiny_bert_dir))
    assert isinstance(model.method, SharedSlots) and meta["method"]["method"] == "toy-shared-slots"
    scored = pipeline.evaluate(out, str(sst2_dir), model_name=str(tiny_bert_dir))
    pool = PromptPool.from_artifact(out, model_name=str(tiny_bert_dir))
    pool.load(out, "toy")
    assert pool.predict([("toy", pool.to_example("toy", "a fine film"))])[0]["label"] in ("0", "1")
    assert abs(scored["accuracy"] - summary["best"]["accuracy"]) < 1e-6


def test_an_option_the_method_does_not_take_is_one_line_naming_it():
    with pytest.raises(PTuningError, match="--prompt-length does not apply to --method finetune"):
        method_config("finetune", prompt_length=5)
    assert method_config("finetune", strict=False, prompt_length=5).to_dict() == {"method": "finetune"}
    with pytest.raises(PTuningError, match="unknown method 'lora'"):
        method_config("lora")


@pytest.mark.parametrize(
    "options,flag",
    [
        ({"prompt_length": 100_000}, "--prompt-length"),
        ({"prompt_length": -1}, "--prompt-length"),
        ({"prefix_dropout": 1.5}, "--prefix-dropout"),
        ({"prefix_init_std": float("nan")}, "--prefix-init-std"),
        ({"reparam_hidden": 0}, "--reparam-hidden"),
    ],
)
def test_configs_validate_themselves_on_creation(options, flag):
    with pytest.raises(PTuningError, match=flag):
        method_config("ptv2", **options)
    assert MAX_PROMPT_LENGTH >= 200  # the paper's longest prompts still fit


def test_format_1_artifacts_recorded_every_option_flat():
    flat = {"method": "prompt-tuning", "prompt_length": 7, "reparam": False, "prompt_encoder": "lstm"}
    assert config_from_dict(flat).to_dict() == {
        "method": "prompt-tuning",
        "prompt_length": 7,
        "residual": False,  # options added since format 1 take their defaults
        "residual_hidden": 800,
    }


def groups_of(model: PTuningModel) -> dict[str, float]:
    """Parameter name -> the weight decay its AdamW group applies."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g["weight_decay"] for g in model.parameter_groups(0.1) for p in g["params"]}


def build(method: str, **options) -> PTuningModel:
    head = SequenceClassificationHead(32, 2, "cls")
    return PTuningModel(tiny_backbone("bert"), method_config(method, **options), head)


def test_decay_is_decided_by_each_method_by_shape_not_by_names():
    reparam = groups_of(build("ptv2", prompt_length=3, reparam=True, reparam_hidden=8))
    assert reparam["method.prefix_encoder.embedding.weight"] == 0.0  # the prompt itself
    assert reparam["method.prefix_encoder.mlp.0.weight"] == 0.1  # the MLP decays like any matrix
    assert reparam["method.prefix_encoder.mlp.0.bias"] == 0.0
    ptv1 = groups_of(build("ptv1", prompt_length=3))
    assert ptv1["method.prompt_encoder.embedding.weight"] == 0.0
    assert ptv1["method.prompt_encoder.mlp.0.weight"] == ptv1["method.prompt_encoder.lstm.weight_ih_l0"] == 0.1
    assert groups_of(build("prompt-tuning", prompt_length=3)) == {
        "method.weight": 0.0,
        "head.classifier.weight": 0.1,
        "head.classifier.bias": 0.0,
    }
    finetune = groups_of(build("finetune"))
    assert finetune["encoder.backbone.encoder.layer.0.attention.self.query.weight"] == 0.1
    assert finetune["encoder.backbone.embeddings.LayerNorm.weight"] == 0.0
    assert set(groups_of(build("linear-probe"))) == {"head.classifier.weight", "head.classifier.bias"}


def test_a_method_that_forgets_a_trainable_parameter_is_caught():
    model = build("ptv2", prompt_length=2)
    model.method.parameter_groups = lambda wd: []
    with pytest.raises(TypeError, match="each trainable parameter once"):
        model.parameter_groups(0.1)


def test_default_learning_rates_come_from_the_method():
    assert build("ptv2", prompt_length=2).learning_rate() == 5e-3
    assert build("ptv2", prompt_length=2, reparam=True).learning_rate() == 5e-4
    assert build("finetune").learning_rate() == 5e-5
