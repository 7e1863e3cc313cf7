"""The deep-prompt engine on tiny random backbones of every supported family."""

from __future__ import annotations

import threading

import pytest
import torch
from conftest import FAMILIES, tiny_backbone, tiny_config

from ptuning.backbones import geometry
from ptuning.encoders import PrefixBatch, PrefixStack, PromptInputs
from ptuning.errors import PTuningError
from ptuning.heads import SequenceClassificationHead
from ptuning.method import method_config
from ptuning.model import PTuningModel


def build(family: str, method: str = "ptv2", P: int = 5, seed: int = 0, **backbone_kw) -> PTuningModel:
    backbone = tiny_backbone(family, seed=seed, **backbone_kw)
    pooling = "last" if geometry(backbone).is_decoder else "cls"
    torch.manual_seed(seed + 1)
    model = PTuningModel(
        backbone,
        method_config(method, strict=False, prompt_length=P),
        SequenceClassificationHead(32, 3, pooling, dropout=0.0),
    )
    return model.eval()


def build_with_strong_prefix(family: str) -> PTuningModel:
    """A prefix far from its small init, so its effect on the output is unmistakable."""
    model = build(family)
    with torch.no_grad():
        model.method.prefix_encoder.embedding.weight.normal_(std=1.0)
    return model


def batch(seed: int = 0, length: int = 9):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 120, (3, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, length - 3 :] = 0  # one padded row
    return ids, mask


def plain_hidden(backbone, ids, mask):
    with torch.no_grad():
        return backbone(input_ids=ids, attention_mask=mask).last_hidden_state


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_length_prompt_reproduces_backbone_exactly(family):
    backbone = tiny_backbone(family)
    ids, mask = batch()
    reference = plain_hidden(backbone, ids, mask)
    model = PTuningModel(
        backbone, method_config("ptv2", prompt_length=0), SequenceClassificationHead(32, 2, "cls")
    ).eval()
    with torch.no_grad():
        assert torch.equal(model.encode(ids, mask), reference)


@pytest.mark.parametrize("family", FAMILIES)
def test_prefix_changes_output_and_receives_gradients(family):
    model = build_with_strong_prefix(family)
    ids, mask = batch()
    reference = plain_hidden(model.backbone, ids, mask)
    hidden = model.encode(ids, mask)
    real = mask.bool()
    assert (hidden.detach() - reference).abs()[real].max() > 1e-3
    logits = model.head(hidden, mask)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    grad = model.method.prefix_encoder.embedding.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert all(p.grad is None for p in model.backbone.parameters()), "backbone must stay frozen"


@pytest.mark.parametrize("family", FAMILIES)
def test_mixed_batch_equals_each_prompt_alone(family):
    model = build(family, P=5)
    g = geometry(model.backbone)
    torch.manual_seed(3)
    long = torch.randn(g.num_layers, 2, g.num_kv_heads, 5, g.head_dim)
    short = torch.randn(g.num_layers, 2, g.num_kv_heads, 2, g.head_dim)
    stack = PrefixStack.build([long, short])
    ids, mask = batch()
    index = torch.tensor([0, 1, 1])
    with torch.no_grad():
        mixed = model.encode(ids, mask, prompt=PromptInputs(prefix=PrefixBatch.from_stack(stack, index)))
        alone = [model.encode(ids, mask, prompt=PromptInputs(prefix=PrefixBatch.single(p))) for p in (long, short)]
    expected = torch.stack([alone[i][row] for row, i in enumerate(index.tolist())])
    real = mask.bool()
    assert (mixed - expected).abs()[real].max() < 1e-5


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_eager_kernel_matches_sdpa(family):
    sdpa = build(family, seed=4)
    eager = build(family, seed=4, attn_implementation="eager")
    eager.load_state_dict(sdpa.state_dict())
    ids, mask = batch()
    with torch.no_grad():
        assert eager.backbone.config._attn_implementation == "ptuning_eager"
        assert (sdpa.encode(ids, mask) - eager.encode(ids, mask)).abs()[mask.bool()].max() < 1e-5


@pytest.mark.parametrize("family", ["bert", "roberta", "llama"])
def test_positions_not_shifted_full_length_input_works(family):
    """A P=20 prompt on an input of the backbone's full length: no position overflow."""
    model = build(family, P=20)
    limit = 64 - (2 if family == "roberta" else 0)  # RoBERTa reserves padding_idx + 1 positions
    ids = torch.randint(5, 120, (2, limit))
    hidden = model.encode(ids, torch.ones_like(ids))
    assert hidden.shape == (2, limit, 32)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_decoder_stays_causal_with_prefix(family):
    model = build(family, P=4)
    with torch.no_grad():
        model.method.prefix_encoder.embedding.weight.normal_()
    ids = torch.randint(5, 120, (1, 8))
    changed = ids.clone()
    changed[0, 6:] = 7
    with torch.no_grad():
        a = model.encode(ids, torch.ones_like(ids))
        b = model.encode(changed, torch.ones_like(ids))
    assert torch.allclose(a[0, :6], b[0, :6], atol=1e-6), "a token saw the future"
    assert not torch.allclose(a[0, 6:], b[0, 6:])


def test_two_models_in_threads_do_not_share_prefixes():
    one, two = build("bert", P=3, seed=1), build("bert", P=7, seed=2)
    two.backbone.load_state_dict(one.backbone.state_dict())
    ids, mask = batch()
    with torch.no_grad():
        expected = {1: one.encode(ids, mask), 2: two.encode(ids, mask)}
    results, errors = {}, []

    def work(key, model):
        try:
            with torch.no_grad():
                for _ in range(20):
                    out = model.encode(ids, mask)
                    if not torch.allclose(out, expected[key], atol=1e-6):
                        errors.append(key)
            results[key] = True
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(k, m)) for k, m in ((1, one), (2, two))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 2


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_gradient_checkpointing_gives_same_gradients(family):
    grads = []
    for checkpointing in (False, True):
        model = build(family, P=4, seed=5)
        model.train()
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        if checkpointing:
            model.enable_gradient_checkpointing()
        ids, mask = batch()
        loss = torch.nn.functional.cross_entropy(model(ids, mask), torch.tensor([0, 1, 2]))
        loss.backward()
        grads.append(model.method.prefix_encoder.embedding.weight.grad.clone())
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_reparam_prefix_folds_to_the_same_output():
    backbone = tiny_backbone("bert")
    config = method_config("ptv2", prompt_length=6, reparam=True, reparam_hidden=16)
    model = PTuningModel(backbone, config, SequenceClassificationHead(32, 3, "cls", dropout=0.0)).eval()
    g = geometry(model.backbone)
    ids, mask = batch()
    with torch.no_grad():
        trained = model.encode(ids, mask)
        folded = model.encode(ids, mask, prompt=PromptInputs(prefix=PrefixBatch.single(model.method.fold()["prefix"])))
    assert torch.allclose(trained, folded, atol=1e-6)
    assert model.method.prefix_encoder.fold().shape == (g.num_layers, 2, g.num_kv_heads, 6, g.head_dim)


@pytest.mark.parametrize("method", ["prompt-tuning", "ptv1"])
@pytest.mark.parametrize("family", ["bert", "llama"])
def test_input_prompts_train_and_keep_hidden_aligned(method, family):
    model = build(family, method=method, P=4)
    ids, mask = batch()
    hidden = model.encode(ids, mask)
    assert hidden.shape == (3, ids.shape[1], 32)
    reference = plain_hidden(model.backbone, ids, mask)
    assert (hidden.detach() - reference).abs().max() > 1e-4
    torch.nn.functional.cross_entropy(model.head(hidden, mask), torch.tensor([0, 1, 2])).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.method.parameters())
    assert all(p.grad is None for p in model.backbone.parameters())


def test_prompt_tuning_applies_embeddings_once():
    """Soft tokens go in as word embeddings: position and type embeddings are added by the backbone."""
    model = build("bert", method="prompt-tuning", P=3)
    ids, mask = batch()
    emb = model.backbone.embeddings
    words = emb.word_embeddings(ids)
    prompt = model.method.prompt_inputs().embeds.unsqueeze(0).expand(3, -1, -1)
    manual = model.backbone(
        inputs_embeds=torch.cat([prompt, words], 1),
        attention_mask=torch.cat([torch.ones(3, 3, dtype=mask.dtype), mask], 1),
        token_type_ids=torch.zeros(3, 3 + ids.shape[1], dtype=torch.long),
    ).last_hidden_state[:, 3:]
    with torch.no_grad():
        assert torch.allclose(model.encode(ids, mask, torch.zeros_like(ids)), manual, atol=1e-6)


@pytest.mark.parametrize("method,trainable", [("finetune", True), ("linear-probe", False)])
def test_baselines_freeze_what_they_should(method, trainable):
    model = build("bert", method=method)
    assert all(p.requires_grad == trainable for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    assert not list(model.method.parameters())  # the method adds no parameters of its own


def test_deberta_refuses_gradient_checkpointing_with_deep_prompts():
    with pytest.raises(PTuningError, match="(?i)deberta"):
        build("deberta-v2").enable_gradient_checkpointing()


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_autocast_trains_the_fp32_prefix(family):
    """``--mixed-precision bf16``: fp32 prefix meets bf16 keys; gradients come back fp32 and finite."""
    model = build_with_strong_prefix(family)
    ids, mask = batch()
    with torch.no_grad():
        reference = model(ids, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(ids, mask)
    assert (logits.float() - reference).abs().max() < 0.1 * reference.abs().max() + 0.05
    torch.nn.functional.cross_entropy(logits.float(), torch.tensor([0, 1, 2])).backward()
    grad = model.method.prefix_encoder.embedding.weight.grad
    assert grad.dtype == torch.float32 and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("std", [0.02, 1.0])
def test_prefix_starts_at_the_configured_scale(std):
    from ptuning.errors import PTuningError

    backbone = tiny_backbone("bert")
    head = SequenceClassificationHead(32, 3, "cls", dropout=0.0)
    model = PTuningModel(backbone, method_config("ptv2", prompt_length=50, prefix_init_std=std), head)
    weight = model.method.prefix_encoder.embedding.weight
    assert abs(weight.std().item() / std - 1) < 0.05  # thousands of values: within 5 % of the asked std
    with pytest.raises(PTuningError, match="prefix-init-std"):
        method_config("ptv2", prompt_length=5, prefix_init_std=0.0)


def test_a_shared_prompt_is_broadcast_over_the_batch_only_after_its_layer_is_picked():
    """Picking a layer out of a batch-wide prefix made autograd zero-fill a batch-wide gradient per layer."""
    prefix = torch.randn(3, 2, 4, 5, 8, requires_grad=True)  # (layers, 2, kv, P, hd)
    batch = PrefixBatch.single(prefix)
    assert batch.kv.shape == (3, 2, 1, 4, 5, 8)  # no batch-wide copy, not even a view
    pk, pv = batch.layer(1, 6)
    assert pk.shape == pv.shape == (6, 4, 5, 8)
    (pk.sum() + 2 * pv.sum()).backward()
    assert torch.equal(prefix.grad[1, 0], torch.full((4, 5, 8), 6.0))  # each row's gradient adds up
    assert torch.equal(prefix.grad[1, 1], torch.full((4, 5, 8), 12.0)) and not prefix.grad[0].any()


@pytest.mark.parametrize("family", FAMILIES)
def test_backbone_dropout_reaches_every_dropout_of_each_family(family):
    """Families name their dropout rates differently; the override must find all of them (rate 0: a training-mode
    forward is deterministic) and must really act (rate 0.5: two training-mode forwards differ)."""
    from transformers import AutoModel

    from ptuning.backbones import dropout_overrides

    ids = torch.randint(5, 100, (2, 7))

    def two_training_forwards(rate: float) -> tuple[torch.Tensor, torch.Tensor]:
        config = tiny_config(family)
        for name, value in dropout_overrides(config, rate).items():
            setattr(config, name, value)
        torch.manual_seed(0)
        model = AutoModel.from_config(config).train()
        return model(input_ids=ids).last_hidden_state, model(input_ids=ids).last_hidden_state

    first, second = two_training_forwards(0.0)
    assert torch.equal(first, second)
    first, second = two_training_forwards(0.5)
    assert not torch.allclose(first, second)


def test_backbone_dropout_is_applied_when_loading_and_checked(tiny_bert_dir):
    from ptuning.backbones import load_backbone

    backbone, _, _ = load_backbone(str(tiny_bert_dir), dropout=0.0)
    assert backbone.config.hidden_dropout_prob == 0.0 and backbone.config.attention_probs_dropout_prob == 0.0
    assert all(m.p == 0.0 for m in backbone.modules() if isinstance(m, torch.nn.Dropout))
    kept, _, _ = load_backbone(str(tiny_bert_dir))
    assert kept.config.hidden_dropout_prob == 0.1
    with pytest.raises(PTuningError, match="not a rate"):
        load_backbone(str(tiny_bert_dir), dropout=1.0)
