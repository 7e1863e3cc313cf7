"""--prefix-layers: prompts in some layers only, a frozen bottom, artifacts and the serving pool."""

from __future__ import annotations

import pytest
import torch
from conftest import FAMILIES, save_artifact_of, tiny_backbone

from ptuning import artifact, backbones, pipeline
from ptuning.backbones import geometry
from ptuning.encoders import PrefixBatch, PrefixStack, PromptInputs
from ptuning.encoders.depth import DepthPlan
from ptuning.errors import PTuningError
from ptuning.heads import SequenceClassificationHead
from ptuning.method import method_config
from ptuning.method.layers import check_layer_spec, resolve_layers
from ptuning.model import PTuningModel
from ptuning.serve.pool import PromptPool

LAYERS = 4


def deep_backbone(family: str, seed: int = 0):
    """A tiny backbone of LAYERS layers (every family names its depth differently)."""
    depth = {"n_layer": LAYERS} if family == "gpt2" else {"num_hidden_layers": LAYERS}
    return tiny_backbone(family, seed=seed, **depth)


def build(family: str, method: str = "ptv2", layers: str = "top:2", seed: int = 0, **options) -> PTuningModel:
    backbone = deep_backbone(family, seed)
    pooling = "last" if geometry(backbone).is_decoder else "cls"
    torch.manual_seed(seed + 1)
    config = method_config(method, prompt_length=3, prefix_layers=layers, prefix_init_std=1.0, **options)
    return PTuningModel(backbone, config, SequenceClassificationHead(32, 3, pooling, dropout=0.0))


def batch(seed: int = 0, length: int = 9):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 120, (3, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, length - 3 :] = 0  # one padded row
    return ids, mask


@pytest.mark.parametrize(
    "spec,expected", [("all", range(6)), ("top:2", range(4, 6)), ("top:6", range(6)), ("1-3", range(1, 4))]
)
def test_layer_specs_resolve_on_the_backbone_depth(spec, expected):
    assert resolve_layers(spec, 6) == expected


@pytest.mark.parametrize(
    "spec,words",
    [
        ("top:0", "K >= 1"),
        ("top:7", "has 6 layers"),
        ("4-2", "A <= B"),
        ("2-6", "layers 0-5"),
        ("bottom", "top:K"),
        ("top:-1", "top:K"),
        ("", "top:K"),
    ],
)
def test_bad_layer_specs_fail_in_one_line(spec, words):
    with pytest.raises(PTuningError) as error:
        resolve_layers(spec, 6)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_the_config_checks_the_syntax_and_the_backbone_the_range():
    with pytest.raises(PTuningError, match="top:0"):
        method_config("ptv2", prefix_layers="top:0")
    check_layer_spec("top:99")  # no backbone yet: only the syntax is checked ...
    with pytest.raises(PTuningError, match="has 4 layers"):
        build("bert", layers="top:99")  # ... and the range when the method meets one


@pytest.mark.parametrize("family", FAMILIES)
def test_unprompted_layers_get_no_prefix_at_all(family):
    """The hidden states entering the lowest prompted layer are exactly the plain backbone's: no zero-padded
    prefix slot in a lower layer's attention (zero keys would still take attention mass)."""
    model = build(family, layers="top:2").eval()
    ids, mask = batch()
    with torch.no_grad():
        plain = model.backbone(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[2]
        plan = DepthPlan(capture=2)
        model.encoder(ids, mask, prompt=model.method.prompt_inputs(), plan=plan)
    real = mask.bool()
    assert torch.equal(plan.captured[real], plain[real])
    assert model.method.prefix_encoder().shape[0] == 2  # (prompted layers, 2, kv, P, hd)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_top_prompt_changes_the_output_and_trains(family):
    model = build(family, layers="top:1").eval()
    ids, mask = batch()
    with torch.no_grad():
        reference = model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
    hidden = model.encode(ids, mask)
    assert (hidden.detach() - reference).abs()[mask.bool()].max() > 1e-3
    torch.nn.functional.cross_entropy(model.head(hidden, mask), torch.tensor([0, 1, 2])).backward()
    assert model.method.prefix_encoder.embedding.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.backbone.parameters())


@pytest.mark.parametrize("family", ["bert", "deberta-v2", "gpt2", "llama"])
def test_layers_below_the_prompt_lose_their_dropout_while_training_and_get_no_autograd(family):
    model = build(family, layers="top:2").train()
    blocks = model.encoder.injector.layer_blocks(model.backbone)
    upper = {id(m) for block in blocks[2:] for m in block.modules()}
    for module in model.backbone.modules():
        assert module.training == (id(module) in upper), type(module).__name__
    assert model.head.training
    full = build(family, layers="all").train()
    assert all(m.training for m in full.backbone.modules())
    # two training passes draw dropout in the upper layers only: the states entering layer 2 never change
    ids, mask = batch()
    captured = []
    for _ in range(2):
        plan = DepthPlan(capture=2, no_grad_below=2)
        model.encoder(ids, mask, prompt=model.method.prompt_inputs(), plan=plan)
        captured.append(plan.captured)
    assert torch.equal(captured[0], captured[1]) and not captured[0].requires_grad


def test_apt_takes_the_layers_too_and_gates_only_them():
    model = build("bert", method="apt", layers="1-2")
    assert model.method.gate.weight.shape[0] == 2 and model.method.frozen_layers() == 1
    assert model.config.prefix_layers == "1-2"
    ids, mask = batch()
    hidden = model.encode(ids, mask)
    torch.nn.functional.cross_entropy(model.head(hidden, mask), torch.tensor([0, 1, 2])).backward()
    assert model.method.gate.weight.grad.abs().sum() > 0


def test_perturbed_training_keeps_its_gradient_path_below_the_prompt():
    """PTP's adversarial step needs the input embeddings' gradient: the frozen layers must keep autograd then."""
    model = build("bert", layers="top:2", perturb="adversarial").train()
    assert model.method.frozen_layers() == 2 and model.method.training_frozen_layers() == 0
    ids, mask = batch()
    loss = model.training_loss(
        {"input_ids": ids, "attention_mask": mask}, torch.tensor([0, 1, 2]), torch.nn.functional.cross_entropy
    )
    loss.backward()
    assert model.method.prefix_encoder.embedding.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("family", ["bert", "deberta-v2", "llama"])
def test_mixed_layer_sets_in_one_batch_equal_each_prompt_alone(family):
    model = build(family, layers="all").eval()
    g = geometry(model.backbone)
    torch.manual_seed(3)

    def prefix(layers: range, P: int):
        return torch.randn(len(layers), 2, g.num_kv_heads, P, g.head_dim), layers

    prompts = [prefix(range(4), 3), prefix(range(2, 4), 5), prefix(range(1, 2), 2), prefix(range(4), 0)]
    stack = PrefixStack.build([p for p, _ in prompts], layers=[r for _, r in prompts], num_layers=4)
    ids, mask = batch()
    with torch.no_grad():
        for index in ([0, 1, 2], [1, 1, 3], [2, 3, 1]):
            index = torch.tensor(index)
            mixed = model.encode(ids, mask, prompt=PromptInputs(prefix=PrefixBatch.from_stack(stack, index)))
            alone = [model.encode(ids, mask, prompt=PromptInputs(prefix=PrefixBatch.single(p, r))) for p, r in prompts]
            expected = torch.stack([alone[i][row] for row, i in enumerate(index.tolist())])
            assert (mixed - expected).abs()[mask.bool()].max() < 1e-5


def save(model: PTuningModel, directory, name: str, task):
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(std=0.5)
    save_artifact_of(directory, model, task, name, model.backbone, 32, "mean")
    return directory


def test_artifacts_record_their_layers_and_the_pool_mixes_them(tmp_path, tiny_bert_dir):
    from ptuning.tasks import get_task

    task = get_task("sst2")
    paths = {}
    for i, (method, layers) in enumerate([("ptv2", "all"), ("ptv2", "top:1"), ("apt", "0-0"), ("linear-probe", None)]):
        backbone, _, name = backbones.load_backbone(str(tiny_bert_dir))
        options = {} if layers is None else {"prompt_length": 2 + i, "prefix_layers": layers}
        torch.manual_seed(i)
        model = PTuningModel(backbone, method_config(method, **options), task.build_head(32, "mean"))
        paths[f"{method}-{layers}"] = save(model, tmp_path / str(i), name, task)
    assert artifact.read_meta(paths["ptv2-top:1"])["method"]["prefix_layers"] == "1-1"  # resolved, not top:1
    assert artifact.read_meta(paths["apt-0-0"])["method"]["prefix_layers"] == "0-0"
    pool = PromptPool.from_artifact(paths["ptv2-all"])
    for name, path in paths.items():
        pool.load(path, name)
    assert {d["name"]: d["prefix_layers"] for d in pool.describe()}["ptv2-top:1"] == "1-1"
    texts = ["good film", "a very dull and weak plot , the end", "superb cast"]
    rows = [(name, pool.to_example(name, text)) for text in texts for name in paths]  # tasks interleaved
    mixed = pool.predict(rows)
    for name, path in paths.items():  # each alone: the artifact loaded as a model, scored on its own
        model, tokenizer, loaded, meta = artifact.load_artifact(path)
        examples = [loaded.example_from_input(text) for text in texts]
        featurized = loaded.featurize(examples, tokenizer, model.token_budget(meta["max_length"]))
        logits = pipeline.predict_logits(model, featurized.features, loaded.collator(tokenizer), 8)
        alone = loaded.predictions(logits, examples, featurized.alignment)
        got = [m for (n, _), m in zip(rows, mixed, strict=True) if n == name]
        for row, want in zip(got, alone, strict=True):
            assert row["label"] == want["label"]
            assert max(abs(row["scores"][k] - v) for k, v in want["scores"].items()) < 1e-5


def test_a_spec_beyond_the_backbone_stops_the_run_before_anything_is_written(tmp_path, sst2_dir, tiny_bert_dir):
    from ptuning.loop import TrainConfig

    request = pipeline.TrainRequest(
        task="sst2",
        data=str(sst2_dir),
        output=tmp_path / "out",
        model=str(tiny_bert_dir),
        method=method_config("ptv2", prefix_layers="top:3"),
        train=TrainConfig(epochs=1),
        max_length=32,
    )
    with pytest.raises(PTuningError, match="has 2 layers; give K <= 2"):
        pipeline.train(request)
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_older_than_prefix_layers_resumes_at_the_default_only(tmp_path):
    """A checkpoint whose settings predate --prefix-layers ran with every layer prompted."""
    import json

    from safetensors.torch import save_file

    from ptuning import checkpoint

    model = build("bert", layers="all")
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    (tmp_path / "checkpoint").mkdir()
    save_file(trainable, str(tmp_path / "checkpoint" / "trainable.safetensors"))
    old = {"method": "ptv2", "prompt_length": 3, "lr": 0.01}
    (tmp_path / "checkpoint" / "state.json").write_text(json.dumps({"run": old}))
    checkpoint.check_resumable(tmp_path, {**old, "prefix_layers": "all"}, model)
    with pytest.raises(PTuningError, match="--prefix-layers \\(unset\\), not top:2"):
        checkpoint.check_resumable(tmp_path, {**old, "prefix_layers": "top:2"}, model)
