"""PTP (ptv2 --perturb noise|adversarial) and Residual Prompt Tuning (prompt-tuning --residual):
training devices that change the training loss or the prompt's parameterisation, never what an artifact serves."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import tiny_backbone
from torch.nn.functional import cross_entropy

from ptuning import artifact, backbones, pipeline
from ptuning.errors import PTuningError
from ptuning.heads import SequenceClassificationHead
from ptuning.loop import TrainConfig
from ptuning.method import method_class, method_config
from ptuning.method.prefix import DeepPrompt, Ptv2Config
from ptuning.method.prompt_tuning import PromptTuning, PromptTuningConfig
from ptuning.model import PTuningModel
from ptuning.serve.pool import PromptPool
from ptuning.tasks import get_task

FAMILIES = ["bert", "llama", "deberta-v2"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}


def build(family: str, method: str = "ptv2", seed: int = 0, **options) -> PTuningModel:
    backbone = tiny_backbone(family, seed=seed)
    pooling = "last" if backbones.geometry(backbone).is_decoder else "cls"
    torch.manual_seed(seed + 1)
    model = PTuningModel(
        backbone, method_config(method, **options), SequenceClassificationHead(32, 3, pooling, dropout=0.0)
    )
    return model.eval()  # no dropout: the losses compared below are deterministic


def a_batch(seed: int = 0, length: int = 9) -> tuple[dict, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 120, (3, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, length - 3 :] = 0  # one padded row
    return {"input_ids": ids, "attention_mask": mask}, torch.tensor([0, 1, 2])


def strong_prefix(model: PTuningModel) -> None:
    with torch.no_grad():
        model.method.prefix_encoder.embedding.weight.normal_(std=1.0)


# -- configs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,options,flag",
    [
        ("ptv2", {"perturb": "gaussian"}, "--perturb"),
        ("ptv2", {"perturb_eps": 0.0}, "--perturb-eps"),
        ("ptv2", {"perturb_eps": -0.1}, "--perturb-eps"),
        ("ptv2", {"perturb_eps": float("nan")}, "--perturb-eps"),
        ("ptv2", {"perturb_eps": float("inf")}, "--perturb-eps"),
        ("ptv2", {"perturb": "noise", "perturb_eps": True}, "--perturb-eps"),
        ("prompt-tuning", {"residual": "yes"}, "--residual"),
        ("prompt-tuning", {"residual": True, "residual_hidden": 0}, "--residual-hidden"),
        ("prompt-tuning", {"residual_hidden": 2.5}, "--residual-hidden"),
    ],
)
def test_bad_settings_are_one_line_errors_naming_the_flag(method, options, flag):
    with pytest.raises(PTuningError, match=flag) as caught:
        method_config(method, **options)
    assert "\n" not in str(caught.value)


def test_the_options_belong_to_their_method_only():
    with pytest.raises(PTuningError, match="--perturb does not apply to --method prompt-tuning"):
        method_config("prompt-tuning", perturb="noise")
    with pytest.raises(PTuningError, match="--residual does not apply to --method ptv2"):
        method_config("ptv2", residual=True)


def test_artifacts_are_made_with_the_plain_configs():
    trained = Ptv2Config(prompt_length=4, perturb="adversarial", perturb_eps=0.3, prefix_dropout=0.1)
    assert DeepPrompt.inference_config(trained) == Ptv2Config(prompt_length=4)
    residual = PromptTuningConfig(prompt_length=4, residual=True, residual_hidden=16)
    assert PromptTuning.inference_config(residual) == PromptTuningConfig(prompt_length=4)


# -- PTP -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["noise", "adversarial"])
def test_perturbations_change_the_training_loss_and_reach_the_prefix(family, kind):
    model = build(family, prompt_length=3, perturb=kind, perturb_eps=0.05)
    strong_prefix(model)
    plain = build(family, prompt_length=3)
    plain.load_state_dict(model.state_dict())
    batch, labels = a_batch()

    with torch.no_grad():
        before = model(**batch)
        assert torch.equal(before, plain(**batch))  # the settings do nothing outside training_loss
    clean = cross_entropy(model(**batch), labels).detach()
    torch.manual_seed(0)
    loss = model.training_loss(batch, labels, cross_entropy)
    assert torch.equal(plain.training_loss(batch, labels, cross_entropy), cross_entropy(plain(**batch), labels))
    perturbed = loss.detach() - clean  # the loss is the clean loss plus the perturbed one
    assert torch.isfinite(loss) and abs(float(perturbed - clean)) > 1e-7
    if kind == "adversarial":
        assert perturbed > clean  # one ascent step along the gradient raises the loss

    loss.backward()
    grad = model.method.prefix_encoder.embedding.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert all(p.grad is None for p in model.backbone.parameters()), "backbone must stay frozen"
    with torch.no_grad():
        assert torch.equal(model(**batch), before)  # the hooks are gone: the model is the plain model again
    assert not model.encoder.word_embeddings()._forward_hooks


@pytest.mark.parametrize("family", FAMILIES)
def test_adversarial_loss_leaves_no_gradients_and_changes_no_parameter(family):
    model = build(family, prompt_length=3, perturb="adversarial", perturb_eps=0.5)
    strong_prefix(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    batch, labels = a_batch(seed=1)
    loss = model.training_loss(batch, labels, cross_entropy)
    assert loss.requires_grad
    assert all(p.grad is None for p in model.parameters()), "only the caller's backward may leave gradients"
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_adversarial_perturbation_has_the_size_asked_for_and_spares_padding():
    from ptuning.method import perturb

    grad = torch.randn(3, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]])
    delta = perturb.adversarial(grad, mask, 0.2)
    assert torch.allclose(delta[0].norm(), torch.tensor(0.2 * 5**0.5))
    assert torch.allclose(delta[1].norm(), torch.tensor(0.2 * 2**0.5)) and delta[1, 2:].abs().sum() == 0
    assert delta[2].abs().sum() == 0  # no real token: no perturbation (and no NaN)
    noise = perturb.noise(torch.zeros(64, 50, 32), torch.ones(64, 50), 0.2)
    assert abs(float(noise.norm(dim=-1).pow(2).mean().sqrt()) - 0.2) < 0.01


def test_adversarial_training_loss_on_multiple_choice_inputs():
    backbone = tiny_backbone("bert")
    torch.manual_seed(1)
    config = method_config("ptv2", prompt_length=3, perturb="adversarial")
    model = PTuningModel(backbone, config, SequenceClassificationHead(32, 1, "cls", dropout=0.0)).eval()
    ids = torch.randint(5, 120, (2, 3, 7))  # (B, C, L)
    mask = torch.ones_like(ids)
    mask[0, 2, 4:] = 0
    batch = {"input_ids": ids, "attention_mask": mask}
    loss = model.training_loss(batch, torch.tensor([1, 2]), cross_entropy)
    loss.backward()
    assert model.method.prefix_encoder.embedding.weight.grad.abs().sum() > 0


def test_the_trainer_takes_the_loss_from_the_method(monkeypatch, tmp_path, sst2_dir, tiny_bert_dir):
    calls = []
    original = DeepPrompt.training_loss

    def counted(self, forward, batch, labels, loss_fn):
        calls.append(forward)
        return original(self, forward, batch, labels, loss_fn)

    monkeypatch.setattr(DeepPrompt, "training_loss", counted)
    summary = train(tmp_path / "out", "sst2", sst2_dir, tiny_bert_dir, "ptv2", perturb="noise")
    assert len(calls) == summary["steps"] == 16  # 64 examples, batch 4, one epoch
    assert summary["method"]["perturb"] == "noise"


# -- Residual Prompt Tuning ------------------------------------------------------------------------


def test_residual_prompt_at_init_is_the_vocabulary_init_plus_a_normalised_mlp_output():
    model = build("bert", "prompt-tuning", prompt_length=4, residual=True, residual_hidden=16)
    method = model.method
    words = model.encoder.word_embeddings().weight
    assert all(any(torch.equal(row, w) for w in words) for row in method.weight)  # real tokens' embeddings
    mlp = method.reparam
    added = mlp.norm(mlp.up(torch.relu(mlp.down(method.weight))))
    prompt = method.prompt()
    assert torch.allclose(prompt, method.weight + added)
    delta = (prompt - method.weight).detach()  # LayerNorm at init: zero mean, unit variance per vector
    assert torch.allclose(delta.mean(-1), torch.zeros(4), atol=1e-5)
    assert torch.allclose(delta.var(-1, unbiased=False), torch.ones(4), atol=1e-3)
    assert mlp.down.weight.shape == (16, 32) and mlp.up.weight.shape == (32, 16)


def test_residual_decay_spares_the_prompt_and_decays_the_mlp_matrices():
    model = build("bert", "prompt-tuning", prompt_length=3, residual=True, residual_hidden=8)
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)]: g["weight_decay"] for g in model.parameter_groups(0.1) for p in g["params"]}
    assert decay["method.weight"] == 0.0
    assert decay["method.reparam.down.weight"] == decay["method.reparam.up.weight"] == 0.1
    assert decay["method.reparam.down.bias"] == decay["method.reparam.norm.weight"] == 0.0


@pytest.mark.parametrize("family", FAMILIES)
def test_residual_prompt_folds_into_a_plain_prompt_with_the_same_outputs(family, tmp_path):
    model = build(family, "prompt-tuning", prompt_length=4, residual=True, residual_hidden=16)
    with torch.no_grad():  # as if trained: the MLP is no longer at its init
        for p in model.method.reparam.parameters():
            p.add_(0.3 * torch.randn_like(p))
    batch, labels = a_batch()
    loss = model.training_loss(batch, labels, cross_entropy)
    loss.backward()
    assert model.method.weight.grad.abs().sum() > 0 and model.method.reparam.down.weight.grad.abs().sum() > 0

    task = get_task("cb")
    model.head = task.build_head(32, model.head.pooling).eval()
    name = f"tiny-{family}"
    artifact.save_artifact(
        tmp_path, model, task=task, backbone_name=name, backbone_fingerprint=backbones.fingerprint(model.backbone),
        max_length=32, pooling=model.head.pooling,
    )  # fmt: skip
    meta = json.loads((tmp_path / artifact.META).read_text())
    assert meta["method"] == {"method": "prompt-tuning", "prompt_length": 4, "residual": True, "residual_hidden": 16}
    loaded, _, _, _ = artifact.load_artifact(tmp_path, backbone=model.backbone)
    assert type(loaded.method) is PromptTuning and loaded.method.reparam is None
    assert sum(p.numel() for p in loaded.method.parameters()) == 4 * 32  # the MLP is gone
    with torch.no_grad():
        assert torch.allclose(loaded(**batch), model(**batch), atol=1e-6)


# -- end to end ------------------------------------------------------------------------------------


def train(out, task, data, model_dir, method, **options) -> dict:
    """conftest.train_tiny's run (batch 4) with the method's own options."""
    return pipeline.train(
        pipeline.TrainRequest(
            task=task,
            data=str(data),
            output=out,
            model=str(model_dir),
            method=method_config(method, prompt_length=3, **options),
            train=TrainConfig(epochs=1 if task == "sst2" else 2, batch_size=4),
            max_length=32,
        )
    )


@pytest.mark.parametrize(
    "method,options",
    [("ptv2", {"perturb": "noise", "perturb_eps": 0.05}), ("prompt-tuning", {"residual": True, "residual_hidden": 16})],
)
def test_trains_on_cb_and_the_artifact_scores_what_was_logged(method, options, tmp_path, cb_dir, tiny_bert_dir):
    out = tmp_path / "run"
    summary = train(out, "cb", cb_dir, tiny_bert_dir, method, **options)
    assert summary["method"] == method_config(method, prompt_length=3, **options).to_dict()
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in summary["history"])
    scored = pipeline.evaluate(out, str(cb_dir), model_name=str(tiny_bert_dir))
    assert {k: scored[k] for k in summary["best"]} == pytest.approx(summary["best"], abs=1e-6)
    model, _, _, meta = artifact.load_artifact(out, model_name=str(tiny_bert_dir))
    plain = method_class(method).inference_config(method_config(method, prompt_length=3, **options))
    assert model.config == plain and meta["method"]["method"] == method

    pool = PromptPool.from_artifact(out, model_name=str(tiny_bert_dir))
    pool.load(out, "cb")
    pair = {"premise": "the movie was good", "hypothesis": "the plot is good"}
    served = pool.predict([("cb", pool.to_example("cb", pair))])[0]
    tokenizer, task = pool.tokenizer, model_task(out)
    example = task.example_from_input(pair)
    featurized = task.featurize([example], tokenizer, model.token_budget(meta["max_length"]))
    logits = pipeline.predict_logits(model, featurized.features, task.collator(tokenizer), 8)
    alone = task.predictions(logits, [example], featurized.alignment)[0]
    assert served["label"] == alone["label"]
    assert all(abs(served["scores"][k] - v) < 1e-5 for k, v in alone["scores"].items())


def model_task(out):
    meta = artifact.read_meta(out)
    return get_task(meta["task"]["name"]).from_state(meta["task"])


def test_adversarial_ptp_from_the_cli(tmp_path, cb_dir, tiny_bert_dir):
    out = tmp_path / "adv"
    argv = ["train", "--task", "cb", "--data", str(cb_dir), "--model", str(tiny_bert_dir), "--output", str(out)]
    argv += ["--method", "ptv2", "--perturb", "adversarial", "--perturb-eps", "0.05", "--prompt-length", "3"]
    argv += ["--epochs", "2", "--batch-size", "4", "--max-length", "32"]
    result = subprocess.run([sys.executable, "-m", "ptuning.cli", *argv], capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["method"]["perturb"] == "adversarial" and summary["method"]["perturb_eps"] == 0.05
    meta = json.loads((out / artifact.META).read_text())
    assert meta["method"]["perturb"] == "adversarial"  # recorded as trained; loaded as plain ptv2
    scored = pipeline.evaluate(out, str(cb_dir), model_name=str(tiny_bert_dir))
    assert {k: scored[k] for k in summary["best"]} == pytest.approx(summary["best"], abs=1e-6)
    model, _, _, _ = artifact.load_artifact(out, model_name=str(tiny_bert_dir))
    assert model.config == Ptv2Config(prompt_length=3)

    command = [sys.executable, "-m", "ptuning.cli", *argv[:8], str(tmp_path / "bad"), "--perturb", "fgsm"]
    bad = subprocess.run(command, capture_output=True, text=True, env=ENV)
    assert bad.returncode == 2 and "--perturb 'fgsm'" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
