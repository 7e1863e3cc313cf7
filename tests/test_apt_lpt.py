"""APT (gated deep prefixes) and LPT (a late, generated prompt) on tiny backbones of every family.

Every family of ``FAMILIES`` supports both: the attention-interface families through forward pre-hooks
on each layer's attention module and block, DeBERTa through its own attention code and a layer pre-hook.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import FAMILIES, WORDS, save_artifact_of, tiny_backbone, train_tiny, write_sst2
from typer.testing import CliRunner

from ptuning import artifact, backbones, pipeline
from ptuning.backbones import geometry
from ptuning.encoders import PrefixBatch, PrefixStack, PromptInputs
from ptuning.errors import PTuningError
from ptuning.heads import SequenceClassificationHead
from ptuning.method import method_config
from ptuning.model import PTuningModel


def build(family: str, method: str, seed: int = 0, **options) -> PTuningModel:
    backbone = tiny_backbone(family, seed=seed)
    pooling = "last" if geometry(backbone).is_decoder else "cls"
    torch.manual_seed(seed + 1)
    head = SequenceClassificationHead(32, 3, pooling, dropout=0.0)
    return PTuningModel(backbone, method_config(method, **options), head).eval()


def batch(seed: int = 0, length: int = 9):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 120, (3, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, length - 3 :] = 0  # one padded row
    return ids, mask


def plain(family: str, ids, mask, seed: int = 0) -> torch.Tensor:
    with torch.no_grad():
        return tiny_backbone(family, seed=seed)(input_ids=ids, attention_mask=mask).last_hidden_state


def strong_apt(family: str, **options) -> PTuningModel:
    """An APT model whose prefix and gate are far from their init: their effect is unmistakable."""
    model = build(family, "apt", prompt_length=4, **options)
    with torch.no_grad():
        model.method.prefix_encoder.embedding.weight.normal_(std=1.0)
        model.method.gate.weight.normal_(std=0.5)
        model.method.gate.scale.uniform_(0.5, 1.5)
    return model


def strong_lpt(family: str, **options) -> PTuningModel:
    model = build(family, "lpt", **{"prompt_length": 3, "generator_hidden": 8, "generator_dropout": 0.0, **options})
    with torch.no_grad():
        model.method.generator.up.weight.normal_(std=1.0)
    return model


def layer_inputs(model_or_backbone, run) -> list[torch.Tensor]:
    """The hidden states entering each layer block during ``run()`` (after any hook of ours)."""
    backbone = getattr(model_or_backbone, "backbone", model_or_backbone)
    blocks = next(m for m in backbone.modules() if isinstance(m, torch.nn.ModuleList))
    seen, handles = [], []
    for block in blocks:
        handles.append(
            block.register_forward_pre_hook(
                lambda m, a, k: seen.append(a[0] if a else k["hidden_states"]), with_kwargs=True
            )
        )
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return seen


# -- APT --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_apt_changes_the_output_and_trains_prefix_and_gates(family):
    model = strong_apt(family)
    ids, mask = batch()
    hidden = model.encode(ids, mask)
    assert (hidden.detach() - plain(family, ids, mask)).abs()[mask.bool()].max() > 1e-3
    torch.nn.functional.cross_entropy(model.head(hidden, mask), torch.tensor([0, 1, 2])).backward()
    method = model.method
    for p in (method.prefix_encoder.embedding.weight, method.gate.weight, method.gate.bias, method.gate.scale):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.backbone.parameters()), "backbone must stay frozen"


@pytest.mark.parametrize("family", FAMILIES)
def test_apt_of_length_zero_is_the_plain_backbone(family):
    model = build(family, "apt", prompt_length=0)
    ids, mask = batch()
    with torch.no_grad():
        assert torch.equal(model.encode(ids, mask), plain(family, ids, mask))


@pytest.mark.parametrize("family", FAMILIES)
def test_apt_with_an_open_gate_is_ptv2_and_with_scale_zero_a_zero_prefix(family):
    """lambda = 1 and sigmoid saturated at 1: exactly the ptv2 prefix; lambda = 0: a prefix of zeros."""
    model = strong_apt(family)
    ids, mask = batch()
    prefix = model.method.prefix_encoder.fold()
    with torch.no_grad():
        model.method.gate.weight.zero_()
        model.method.gate.bias.fill_(40.0)  # sigmoid(40) == 1.0 in float32
        model.method.gate.scale.fill_(1.0)
        ptv2 = model.encode(ids, mask, prompt=PromptInputs(prefix=PrefixBatch.single(prefix)))
        assert (model.encode(ids, mask) - ptv2).abs().max() < 1e-6
        model.method.gate.scale.zero_()
        zeros = model.encode(ids, mask, prompt=PromptInputs(prefix=PrefixBatch.single(torch.zeros_like(prefix))))
        assert (model.encode(ids, mask) - zeros).abs().max() < 1e-6


@pytest.mark.parametrize("family", FAMILIES)
def test_apt_gate_rows_mixed_with_other_prompts_equal_each_prompt_alone(family):
    """The pool's design: gated (APT) and plain prefixes of different lengths share one forward."""
    model = strong_apt(family)
    g = geometry(model.backbone)
    apt_prefix, gate = model.method.serving_prefix(), model.method.serving_gate()
    torch.manual_seed(3)
    other = torch.randn(g.num_layers, 2, g.num_kv_heads, 2, g.head_dim)
    stack = PrefixStack.build([other, apt_prefix], [None, gate])
    ids, mask = batch()
    index = torch.tensor([1, 0, 1])
    with torch.no_grad():
        mixed = model.encode(ids, mask, prompt=PromptInputs(prefix=PrefixBatch.from_stack(stack, index)))
        alone = [
            model.encode(ids, mask, prompt=PromptInputs(prefix=PrefixBatch.single(other))),
            model.encode(ids, mask),
        ]
        single_rows = [
            model.encode(ids[i : i + 1, : int(mask[i].sum())], mask[i : i + 1, : int(mask[i].sum())]) for i in (0, 1)
        ]
    expected = torch.stack([alone[i][row] for row, i in enumerate(index.tolist())])
    assert (mixed - expected).abs()[mask.bool()].max() < 1e-5
    assert (alone[1][0] - single_rows[0][0]).abs().max() < 1e-5  # a row's gate ignores the others and the padding
    assert (alone[1][1, :6] - single_rows[1][0]).abs().max() < 1e-5


@pytest.mark.parametrize("method", ["apt", "lpt"])
@pytest.mark.parametrize("family", ["bert", "llama"])
def test_gradient_checkpointing_replays_the_gate_and_the_late_prompt(family, method):
    grads = []
    for checkpointing in (False, True):
        model = strong_apt(family) if method == "apt" else strong_lpt(family)
        model.train()
        if checkpointing:
            model.enable_gradient_checkpointing()
        ids, mask = batch()
        torch.nn.functional.cross_entropy(model(ids, mask), torch.tensor([0, 1, 2])).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.method.parameters()]))
    assert grads[0].abs().sum() > 0 and torch.allclose(grads[0], grads[1], atol=1e-6)


@pytest.mark.parametrize("method", ["apt", "lpt"])
@pytest.mark.parametrize("family", ["bert", "llama"])
def test_eager_kernel_matches_sdpa(family, method):
    make = strong_apt if method == "apt" else strong_lpt
    sdpa = make(family)
    eager = make(family)
    eager.backbone.set_attn_implementation("ptuning_eager")
    eager.load_state_dict(sdpa.state_dict())
    assert eager.backbone.config._attn_implementation == "ptuning_eager"
    ids, mask = batch()
    with torch.no_grad():
        assert (sdpa.encode(ids, mask) - eager.encode(ids, mask)).abs()[mask.bool()].max() < 1e-5


@pytest.mark.parametrize("method", ["apt", "lpt"])
@pytest.mark.parametrize("family", ["bert", "deberta-v2", "llama"])
def test_bf16_autocast_trains_the_fp32_prompt(family, method):
    model = strong_apt(family) if method == "apt" else strong_lpt(family)
    ids, mask = batch()
    with torch.no_grad():
        reference = model(ids, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(ids, mask)
    assert (logits.float() - reference).abs().max() < 0.1 * reference.abs().max() + 0.05
    torch.nn.functional.cross_entropy(logits.float(), torch.tensor([0, 1, 2])).backward()
    grads = [p.grad for p in model.method.parameters()]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def test_plain_ptv2_runs_no_layer_hook():
    model = build("bert", "ptv2", prompt_length=3)
    assert not model.encoder.layer_hooks_enabled
    assert all(not m._forward_pre_hooks for m in model.backbone.modules())


# -- LPT --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_lpt_of_length_zero_is_the_plain_backbone(family):
    model = build(family, "lpt", prompt_length=0)
    ids, mask = batch()
    with torch.no_grad():
        assert torch.equal(model.encode(ids, mask), plain(family, ids, mask))


@pytest.mark.parametrize("family", FAMILIES)
def test_lpt_leaves_the_layers_below_k_alone_and_trains_only_the_generator(family):
    model = strong_lpt(family)
    K, L = model.method.config.prompt_layer, 9
    assert K == 1  # the middle of two layers
    ids, mask = batch(length=L)
    reference = tiny_backbone(family)
    expected = layer_inputs(reference, lambda: reference(input_ids=ids, attention_mask=mask))
    outputs, below = [], []
    blocks = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.ModuleList))
    handle = blocks[K - 1].register_forward_hook(
        lambda m, a, out: below.append(out[0] if isinstance(out, tuple) else out)
    )
    seen = layer_inputs(model, lambda: outputs.append(model.encode(ids, mask)))
    handle.remove()
    real = mask.bool()
    for layer in range(K + 1):  # what enters layers 0..K is the plain backbone's (the prompt follows the input)
        assert (seen[layer][:, :L] - expected[layer]).abs()[real].max() < 1e-5, layer
    assert seen[K].shape[1] == L + 3 and seen[K].requires_grad
    assert not below[0].requires_grad and not any(h.requires_grad for h in seen[:K])  # no graph below K
    hidden = outputs[0]
    assert hidden.shape == (3, L, 32)
    assert (hidden.detach() - plain(family, ids, mask)).abs()[real].max() > 1e-3
    torch.nn.functional.cross_entropy(model.head(hidden, mask), torch.tensor([0, 1, 2])).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.method.parameters())
    assert all(p.grad is None for p in model.backbone.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_lpt_rows_do_not_depend_on_the_batch_they_are_in(family):
    """Padding, positions and masks: a row alone equals the same row in a padded batch."""
    model = strong_lpt(family)
    ids, mask = batch()
    with torch.no_grad():
        together = model.encode(ids, mask)
        for i in range(3):
            n = int(mask[i].sum())
            alone = model.encode(ids[i : i + 1, :n], mask[i : i + 1, :n])
            assert (together[i, :n] - alone[0]).abs().max() < 1e-5, i


def test_lpt_prompt_layer_defaults_to_the_middle_and_is_checked():
    assert method_config("lpt").prompt_layer is None
    assert build("bert", "lpt").config.prompt_layer == 1  # recorded as used
    with pytest.raises(PTuningError, match="--prompt-layer 0"):
        method_config("lpt", prompt_layer=0)
    with pytest.raises(PTuningError, match="--prompt-layer 2: this backbone has 2 layers"):
        build("bert", "lpt", prompt_layer=2)
    with pytest.raises(PTuningError, match="--generator-dropout"):
        method_config("lpt", generator_dropout=1.0)
    with pytest.raises(PTuningError, match="--prompt-layer does not apply to --method apt"):
        method_config("apt", prompt_layer=1)


def test_lpt_takes_input_positions_for_its_placeholders():
    model = build("bert", "lpt", prompt_length=3)
    assert model.token_budget(64) == 61


# -- artifacts, training, serving ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method,options", [("apt", {"reparam": True, "reparam_hidden": 8}), ("lpt", {})])
def test_artifact_round_trip_equals_the_trained_model(tmp_path, tiny_bert_dir, method, options):
    from ptuning.tasks import get_task

    backbone, _, _ = backbones.load_backbone(str(tiny_bert_dir))
    task = get_task("sst2")
    model = PTuningModel(backbone, method_config(method, prompt_length=3, **options), task.build_head(32, "cls"))
    with torch.no_grad():
        for p in model.method.parameters():
            p.add_(0.3 * torch.randn_like(p))
    model.eval()
    save_artifact_of(tmp_path, model, task, str(tiny_bert_dir), backbone, 32, "cls")
    loaded, _, _, meta = artifact.load_artifact(tmp_path, model_name=str(tiny_bert_dir))
    ids, mask = torch.randint(5, 30, (3, 9)), torch.ones(3, 9, dtype=torch.long)
    mask[2, 6:] = 0
    with torch.no_grad():
        assert (loaded(ids, mask) - model(ids, mask)).abs().max() < 1e-5
    assert meta["method"]["method"] == method


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, tiny_bert_dir) -> dict:
    """A ptv2, an APT and an LPT prompt trained on the toy SST-2 data, with their summaries."""
    root = tmp_path_factory.mktemp("apt-lpt")
    data = write_sst2(root / "sst2")
    runs = {}
    for method in ("ptv2", "apt", "lpt"):
        summary = train_tiny("sst2", data, root / method, tiny_bert_dir, method=method, epochs=2, max_length=32)
        runs[method] = (root / method, summary)
    return {"data": data, "runs": runs}


@pytest.mark.parametrize("method", ["apt", "lpt"])
def test_trains_from_the_pipeline_and_its_artifact_scores_what_it_logged(artifacts, tiny_bert_dir, method):
    out, summary = artifacts["runs"][method]
    assert summary["method"]["method"] == method and summary["trainable_params"] > 0
    scored = pipeline.evaluate(out, str(artifacts["data"]), model_name=str(tiny_bert_dir))
    assert abs(scored["accuracy"] - summary["best"]["accuracy"]) < 1e-6


def _predictions(pool, rows):
    return [
        {k: v for k, v in p.items() if k != "scores"} | {"scores": pytest.approx(p["scores"], abs=1e-5)}
        for p in pool.predict(rows)
    ]


@pytest.mark.parametrize("method,batching", [("apt", "shared"), ("lpt", "per-prompt")])
def test_the_pool_mixes_its_rows_with_other_tasks_and_matches_each_alone(artifacts, tiny_bert_dir, method, batching):
    from ptuning.method import method_class
    from ptuning.serve.pool import PromptPool

    assert method_class(method).pool_batching.value == batching
    pool = PromptPool.from_artifact(artifacts["runs"]["ptv2"][0], model_name=str(tiny_bert_dir), max_batch=8)
    pool.load(artifacts["runs"]["ptv2"][0], "plain")
    pool.load(artifacts["runs"][method][0], "new")
    texts = [" ".join(WORDS[i : i + n]) for i, n in ((0, 3), (5, 9), (10, 2), (2, 6))]
    rows = [
        (name, pool.to_example(name, text)) for name, text in zip(["new", "plain", "new", "plain"], texts, strict=True)
    ]
    mixed = pool.predict(rows)
    alone = [pool.predict([row])[0] for row in rows]
    for got, want in zip(mixed, alone, strict=True):
        assert got["label"] == want["label"] and got["scores"] == pytest.approx(want["scores"], abs=1e-5)
    plain_bytes, new_bytes = (d["bytes"] for d in pool.describe())
    assert new_bytes > plain_bytes  # same prompt length and head: the gates / the generator are counted


def test_the_cli_lists_and_trains_the_new_methods(tmp_path, tiny_bert_dir):
    from conftest import train_argv

    from ptuning.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["methods"])
    assert listed.exit_code == 0 and "apt " in listed.output and "lpt " in listed.output
    assert "--prompt-layer None" in listed.output
    data = write_sst2(tmp_path / "sst2", n_train=16, n_dev=8)
    out = tmp_path / "lpt"
    argv = train_argv(data, tiny_bert_dir, out, "--method", "lpt", "--prompt-length", "2", "--prompt-layer", "1")
    result = runner.invoke(app, [*argv, "--generator-hidden", "8", "--epochs", "1", "--max-length", "32"])
    assert result.exit_code == 0, result.output
    meta = artifact.read_meta(out)["method"]
    assert meta == {
        "method": "lpt",
        "prompt_length": 2,
        "prompt_layer": 1,
        "generator_hidden": 8,
        "generator_dropout": 0.1,  # the training config; loading folds it to 0
    }


def test_a_gated_prefix_needs_the_layer_hooks():
    model = build("bert", "ptv2", prompt_length=2)
    gated = replace(model.method.prompt_inputs().prefix, gate=lambda layer, hidden, mask: hidden.new_ones(3, 2))
    ids, mask = batch()
    with pytest.raises(PTuningError, match="enable_layer_hooks"):
        model.encode(ids, mask, prompt=PromptInputs(prefix=gated))
