"""The activation cache: the frozen bottom layers run once per input, with results equal to running them every time."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FAMILIES, write_cb
from test_partial_depth import batch, build
from test_tagging import write_conll

from ptuning import pipeline
from ptuning.activations import UNITS_KEY, ActivationCache, cache_key, units_of, with_units
from ptuning.errors import PTuningError
from ptuning.loop import TrainConfig
from ptuning.method import method_config
from ptuning.tasks.base import pad_collate

LABELS = torch.tensor([0, 1, 2])


def lengths_of(mask: torch.Tensor) -> torch.Tensor:
    return mask.sum(dim=1)


def step(model, ids, mask, units=None, seed: int = 5):
    """Logits and the prompt's gradient of one training step; the same seed draws the same (upper) dropout."""
    model.zero_grad()
    torch.manual_seed(seed)
    logits = model(ids, mask, activation_units=units)
    torch.nn.functional.cross_entropy(logits, LABELS).backward()
    return logits.detach(), model.method.prefix_encoder.embedding.weight.grad.clone()


def fresh_cache(depth: int, mask: torch.Tensor, **kw) -> ActivationCache:
    return ActivationCache(depth=depth, lengths=lengths_of(mask), hidden_size=32, key="k", budget_bytes=1 << 30, **kw)


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_and_prefix_gradients_with_the_cache_equal_those_without(family):
    """Training mode, backbone dropout on in the prompted layers: the first (keeping) pass and a later (kept) pass
    both give the logits and prefix gradients of the plain pass, to 1e-5."""
    model = build(family, layers="top:2").train()
    ids, mask = batch()
    ids[1, -3:] = 0  # padding tokens, as the collate pads
    plain_logits, plain_grad = step(model, ids, mask)
    model.activations = fresh_cache(2, mask)
    units = torch.tensor([0, 1, 2])
    for expected_reused in (0, 3):
        logits, grad = step(model, ids, mask, units)
        assert model.activations.reused == expected_reused
        assert (logits - plain_logits).abs().max() < 1e-5
        assert (grad - plain_grad).abs().max() < 1e-5
    with torch.no_grad():  # evaluation passes read it too
        assert (model.eval()(ids, mask, activation_units=units) - model(ids, mask)).abs().max() < 1e-5


@pytest.mark.parametrize("family", ["bert", "llama"])
@pytest.mark.parametrize("setting", ["gradient-checkpointing", "bf16-autocast"])
def test_checkpointing_and_autocast_give_the_same_steps_with_the_cache(family, setting):
    """Checkpointing replays a block with the kept states it was given; autocast keeps them in the dtype they had."""
    model = build(family, layers="top:2").train()
    if setting == "gradient-checkpointing":
        model.enable_gradient_checkpointing()
    ids, mask = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=setting == "bf16-autocast"):
        plain_logits, plain_grad = step(model, ids, mask)
        model.activations = fresh_cache(2, mask)
        for _ in range(2):
            logits, grad = step(model, ids, mask, torch.tensor([0, 1, 2]))
            assert (logits - plain_logits).abs().max() < 1e-5 and (grad - plain_grad).abs().max() < 1e-5
    assert model.activations.reused == 3


def test_apt_gates_read_the_same_states_from_the_cache():
    model = build("bert", method="apt", layers="top:2").train()
    ids, mask = batch()
    plain_logits, plain_grad = step(model, ids, mask)
    model.activations = fresh_cache(2, mask)
    for _ in range(2):
        logits, grad = step(model, ids, mask, torch.tensor([0, 1, 2]))
        assert (logits - plain_logits).abs().max() < 1e-5 and (grad - plain_grad).abs().max() < 1e-5


@pytest.mark.parametrize("family", ["bert", "deberta-v2", "llama"])
def test_a_kept_pass_runs_only_the_prompted_layers(family):
    model = build(family, layers="top:1").train()
    ran = []
    for i, block in enumerate(model.encoder.injector.layer_blocks(model.backbone)):
        attention = next(m for m in block.modules() if m is not block and "Attention" in type(m).__name__)
        attention.register_forward_hook(lambda module, args, out, i=i: ran.append(i))
    ids, mask = batch()
    model.activations = fresh_cache(3, mask)
    step(model, ids, mask, torch.tensor([0, 1, 2]))
    assert sorted(set(ran)) == [0, 1, 2, 3]
    ran.clear()
    step(model, ids, mask, torch.tensor([0, 1, 2]))
    assert sorted(set(ran)) == [3]


def test_units_number_features_and_choices_and_batch_with_them():
    features = [
        {"input_ids": [1, 2, 3], "attention_mask": [1, 1, 1], "labels": 0},
        {"input_ids": [[1, 2], [1, 2, 3, 4]], "attention_mask": [[1, 1], [1, 1, 1, 1]], "labels": 1},
        {"input_ids": [[5, 6, 7]], "attention_mask": [[1, 1, 1]], "labels": 0},
    ]
    numbered, units = units_of(features, first=10)
    assert [f[UNITS_KEY] for f in numbered] == [10, [11, 12], [13]]
    assert [u["input_ids"] for u in units] == [[1, 2, 3], [1, 2], [1, 2, 3, 4], [5, 6, 7]]
    assert UNITS_KEY not in features[0]  # the given features are not changed

    class Tok:
        pad_token_id = 0

    collate = with_units(pad_collate(Tok()))
    batch_ = collate(numbered[1:])
    assert batch_[UNITS_KEY].tolist() == [[11, 12], [13, 13]]  # a missing choice repeats the first, as the ids do
    assert batch_["input_ids"][1, 1].tolist() == batch_["input_ids"][1, 0].tolist()


def test_the_key_changes_with_backbone_max_length_and_data():
    units = [{"input_ids": [1, 2, 3], "attention_mask": [1, 1, 1]}]
    base = {"backbone": "abc", "layers": 2, "max_length": 128}
    key = cache_key(units, **base)
    assert key == cache_key([dict(u) for u in units], **base)
    assert key != cache_key(units, **{**base, "backbone": "abd"})
    assert key != cache_key(units, **{**base, "max_length": 64})
    assert key != cache_key(units, **{**base, "layers": 3})
    assert key != cache_key([{"input_ids": [1, 2, 4], "attention_mask": [1, 1, 1]}], **base)
    assert key != cache_key([{"input_ids": [1, 2, 3], "attention_mask": [1, 1, 0]}], **base)


def test_a_memory_mapped_cache_is_rechecked_before_reuse_and_rebuilt_when_stale(tmp_path):
    model = build("bert", layers="top:2").eval()
    ids, mask = batch()
    units = torch.tensor([0, 1, 2])
    tokens = [
        {"input_ids": r[m.bool()].tolist(), "attention_mask": m[m.bool()].tolist()}
        for r, m in zip(ids, mask, strict=True)
    ]

    def cache(key: str = "k") -> ActivationCache:
        made = ActivationCache(
            depth=2,
            lengths=lengths_of(mask),
            hidden_size=32,
            key=key,
            budget_bytes=0,
            directory=tmp_path,
            tokens=tokens,
        )
        made.reopen(model.encoder)
        return made

    first = cache()
    assert first.on_disk and first.note == "built from scratch"
    with torch.no_grad():
        expected = model(ids, mask, activation_units=None)
        model.activations = first
        model(ids, mask, activation_units=units)
    first.persist()
    data = tmp_path / "k.p0.bin"
    assert data.is_file() and json.loads((tmp_path / "k.p0.json").read_text())["filled"] == [0, 1, 2]

    second = cache()
    assert "re-checked and reused" in second.note and bool(second.filled.all())
    model.activations = second
    with torch.no_grad():
        assert (model(ids, mask, activation_units=units) - expected).abs().max() < 1e-5
    assert second.reused == 3 and second.computed == 0

    stored = torch.from_file(str(data), shared=True, size=second.storage.numel(), dtype=torch.float32)
    stored.mul_(1.5)  # the file no longer holds what the layers compute
    del stored
    third = cache()
    assert third.note.startswith("rebuilt") and not third.filled.any()
    assert not (tmp_path / "k.p0.json").exists()  # no manifest describes a file being rewritten

    (tmp_path / "k.p1.bin").write_bytes(b"")  # another data-parallel process's file: never touched by process 0
    cache("other")  # another backbone, max length or data: the old key's files go
    assert not data.exists() and (tmp_path / "k.p1.bin").exists()


def train(data, out, model_dir, task: str = "cb", layers: str = "top:1", cache: bool = True, **kw):
    options = {"epochs": 3, "lr": 1e-2, "batch_size": 4, "seed": 7, "activation_cache": cache}
    options.update({k: kw.pop(k) for k in list(kw) if k in TrainConfig.__dataclass_fields__})
    kw.setdefault("max_length", 32)
    return pipeline.train(
        pipeline.TrainRequest(
            task=task,
            data=str(data),
            output=out,
            model=str(model_dir),
            method=method_config("ptv2", prompt_length=3, prefix_layers=layers),
            train=TrainConfig(**options),
            **kw,
        )
    )


def same_history(a: dict, b: dict) -> None:
    assert len(a["history"]) == len(b["history"])
    for x, y in zip(a["history"], b["history"], strict=True):
        for key, value in x.items():
            if key not in ("elapsed_s", "train_s", "eval_s"):  # times differ: that is the point
                assert abs(value - y[key]) < 1e-5, key


def test_a_cb_like_run_with_the_cache_equals_the_run_without(tmp_path, tiny_bert_dir, capsys):
    data = write_cb(tmp_path / "cb")
    kept = train(data, tmp_path / "kept", tiny_bert_dir)
    assert "activation cache: on, layers 0-0 of 2 run once per input" in capsys.readouterr().out
    plain = train(data, tmp_path / "plain", tiny_bert_dir, cache=False)
    assert "activation cache: off (turned off by --no-activation-cache)" in capsys.readouterr().out
    mapped = train(data, tmp_path / "mapped", tiny_bert_dir, activation_cache_mb=0.0)
    same_history(kept, plain)
    same_history(mapped, plain)
    units = 24 + 12  # training and evaluation examples: each computed once, then reused every pass
    assert kept["activation_cache"] == {
        "used": True,
        "layers_cached": 1,
        "storage": "memory",
        "units": units,
        "computed": units,
        "reused": 2 * units,  # epochs 2 and 3, and the evaluations after them
    }
    assert mapped["activation_cache"]["storage"] == "memory-mapped"
    assert list((tmp_path / "mapped" / "activation-cache").glob("*.bin"))
    assert plain["activation_cache"]["used"] is False


def test_windows_and_group_by_length_give_the_same_run_with_and_without_the_cache(tmp_path, tiny_bert_dir):
    data = write_conll(tmp_path / "conll")
    common = {"task": "conll03", "max_length": 12, "group_by_length": True, "epochs": 2}
    kept = train(data, tmp_path / "kept", tiny_bert_dir, **common)
    plain = train(data, tmp_path / "plain", tiny_bert_dir, cache=False, **common)
    same_history(kept, plain)
    assert kept["activation_cache"]["reused"] > 0


def test_a_resumed_run_rechecks_its_memory_mapped_cache(tmp_path, tiny_bert_dir, capsys):
    data = write_cb(tmp_path / "cb")
    straight = train(data, tmp_path / "straight", tiny_bert_dir, activation_cache_mb=0.0)
    out = tmp_path / "resumed"
    train(data, out, tiny_bert_dir, activation_cache_mb=0.0, stop_after_steps=6 + 2)  # into epoch 2
    capsys.readouterr()
    resumed = train(data, out, tiny_bert_dir, activation_cache_mb=0.0, resume=True)
    assert "kept units re-checked and reused" in capsys.readouterr().out
    assert resumed["history"][-1]["accuracy"] == straight["history"][-1]["accuracy"]
    assert abs(resumed["history"][-1]["train_loss"] - straight["history"][-1]["train_loss"]) < 1e-5


@pytest.mark.parametrize(
    "layers,options,reason",
    [
        ("all", {}, "nothing to keep: the prompt reaches layer 0"),
        ("top:1", {"perturb": "noise"}, "changes what enters its frozen layers"),
    ],
)
def test_the_log_says_why_the_cache_is_off(tmp_path, tiny_bert_dir, capsys, layers, options, reason):
    data = write_cb(tmp_path / "cb")
    request = pipeline.TrainRequest(
        task="cb",
        data=str(data),
        output=tmp_path / "out",
        model=str(tiny_bert_dir),
        method=method_config("ptv2", prompt_length=3, prefix_layers=layers, **options),
        train=TrainConfig(epochs=1, batch_size=8),
        max_length=32,
    )
    summary = pipeline.train(request)
    assert reason in capsys.readouterr().out and summary["activation_cache"]["used"] is False


def test_the_budget_must_be_a_size():
    with pytest.raises(PTuningError, match="--activation-cache-mb"):
        TrainConfig(activation_cache_mb=-1.0)
    with pytest.raises(PTuningError, match="--activation-cache-mb"):
        TrainConfig(activation_cache_mb=float("nan"))
