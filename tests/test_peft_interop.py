"""PEFT prefix-tuning adapters in and out (``import-peft``, ``export-peft``), and ptv2's PEFT conventions.

Every adapter here is made by PEFT itself (``get_peft_model`` + ``save_pretrained``) on tiny backbones, with a
random prefix at PEFT's own scale; the reference outputs are PEFT's forward passes. PEFT's task models refuse
encoders on current transformers, so a sequence- or token-classification adapter's reference runs the adapter's
prefix through PEFT's feature-extraction model (loaded with PEFT's own ``set_peft_model_state_dict``) and its
saved classifier on top, as the task model's forward does.
"""

from __future__ import annotations

import json
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ptuning import artifact, backbones, cli, peft_interop
from ptuning.errors import PTuningError
from ptuning.method import method_config
from ptuning.model import PTuningModel

peft = pytest.importorskip("peft")
from peft import PeftModel, PrefixTuningConfig, TaskType, get_peft_model, set_peft_model_state_dict  # noqa: E402

P = 4
PAIRS = [("the movie was good", "it is great"), ("a dull plot and weak acting but lovely music", "bad")]
TOL = 1e-5


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT: "Token type ids are not supported ..." (that is the point)
        yield


def inputs(model_dir: Path) -> dict:
    """Two sentence pairs of different lengths: padding and segment ids both matter."""
    tokenizer = backbones.load_backbone(str(model_dir))[1]
    batch = tokenizer([a for a, _ in PAIRS], [b for _, b in PAIRS], padding=True, return_tensors="pt")
    assert batch["token_type_ids"].any() and not batch["attention_mask"].all()
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``ptuning ARGS`` in this process: (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["ptuning", *args])
    try:
        cli.main()
        status = 0
    except SystemExit as exc:
        status = exc.code
    out = capsys.readouterr()
    return status, out.out, out.err


def fe_adapter(model_dir: Path, adapter_dir: Path, projection: bool = False):
    """A PEFT feature-extraction prefix on the backbone at ``model_dir``, saved to ``adapter_dir``."""
    from transformers import AutoModel

    torch.manual_seed(3)
    config = PrefixTuningConfig(
        task_type=TaskType.FEATURE_EXTRACTION, num_virtual_tokens=P, prefix_projection=projection
    )
    config.encoder_hidden_size = 16  # the projection's width, when there is one
    wrapped = get_peft_model(AutoModel.from_pretrained(model_dir), config).eval()
    wrapped.save_pretrained(adapter_dir)
    return wrapped


def peft_features(model_dir: Path, adapter_dir: Path, batch: dict):
    """PEFT's feature-extraction forward with the adapter's saved prefix (``set_peft_model_state_dict``)."""
    from transformers import AutoModel

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    fe = PrefixTuningConfig(task_type=TaskType.FEATURE_EXTRACTION, num_virtual_tokens=config["num_virtual_tokens"])
    wrapped = get_peft_model(AutoModel.from_pretrained(model_dir), fe).eval()
    table = load_file(str(adapter_dir / "adapter_model.safetensors"))["prompt_embeddings"]
    set_peft_model_state_dict(wrapped, {"prompt_embeddings": table})
    with torch.no_grad():
        return wrapped(**batch)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask[..., None].float()  # (B, L, 1)
    return (hidden * weights).sum(1) / weights.sum(1)  # (B, H)


def artifact_logits(out: Path, batch: dict) -> torch.Tensor:
    model = artifact.load_artifact(out)[0]
    with torch.no_grad():
        return model(**batch)


def backbone_dir(tmp_path: Path, tiny_bert_dir: Path, family: str, seed: int = 0, **overrides) -> Path:
    """A tiny saved backbone of ``family`` with the tiny BERT's word-level tokenizer."""
    from conftest import tiny_backbone
    from transformers import AutoTokenizer

    directory = tmp_path / f"tiny-{family}"
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    tiny_backbone(family, seed, vocab_size=len(tokenizer), **overrides).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# -- the conventions: ptv2 --shift-positions --drop-token-types is PEFT's computation -----------------------------
@pytest.mark.parametrize("family", ["bert", "roberta", "gpt2", "llama"])
def test_shifted_ptv2_gives_pefts_hidden_states_on_every_family_peft_runs(family):
    from conftest import tiny_backbone
    from transformers import AutoModel

    from ptuning.heads import SequenceClassificationHead

    extra = {"pad_token_id": 0} if family == "roberta" else {}
    backbone = tiny_backbone(family, **extra)
    config = PrefixTuningConfig(task_type=TaskType.FEATURE_EXTRACTION, num_virtual_tokens=P)
    wrapped = get_peft_model(AutoModel.from_config(backbone.config), config).eval()
    wrapped.base_model.load_state_dict(backbone.state_dict())
    table = wrapped.prompt_encoder["default"].embedding.weight.detach()  # (P, layers * 2 * kv * hd), std 1
    ids = torch.randint(3, 100, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    ids[1, 6:] = 0  # padded: RoBERTa numbers real tokens only
    with torch.no_grad():
        theirs = wrapped(input_ids=ids, attention_mask=mask).last_hidden_state

    def ours(**settings) -> torch.Tensor:
        config = method_config("ptv2", prompt_length=P, **settings)
        model = PTuningModel(backbone, config, SequenceClassificationHead(32, 2, "mean")).eval()
        model.method.load_folded({"prefix": peft_interop.table_to_prefix(table, model.encoder.geometry)})
        with torch.no_grad():
            return model.encode(ids, mask)

    real = mask.bool()
    shifted = ours(shift_positions=True, drop_token_types=True)
    assert (shifted - theirs)[real].abs().max() < TOL
    assert (ours() - theirs)[real].abs().max() > 1e-3  # the shift is what makes them equal


def test_dropping_token_types_runs_every_token_as_segment_zero(tiny_bert_dir):
    from ptuning.heads import SequenceClassificationHead

    batch = inputs(tiny_bert_dir)
    backbone = backbones.load_backbone(str(tiny_bert_dir))[0]
    config = method_config("ptv2", prompt_length=P, drop_token_types=True)
    model = PTuningModel(backbone, config, SequenceClassificationHead(32, 2, "cls")).eval()
    with torch.no_grad():
        dropped = model.encode(**batch)
        zeros = model.encode(batch["input_ids"], batch["attention_mask"], torch.zeros_like(batch["token_type_ids"]))
        kept = model.encode(**batch, prompt=replace(model.method.prompt_inputs(), drop_token_types=False))
    assert torch.equal(dropped, zeros)
    assert not torch.allclose(dropped, kept, atol=1e-4)


def test_a_shifted_prefix_takes_p_positions_of_the_budget(tiny_bert_dir):
    from ptuning.heads import SequenceClassificationHead

    backbone = backbones.load_backbone(str(tiny_bert_dir))[0]  # 64 positions

    def budget(shift: bool, max_length: int) -> int:
        config = method_config("ptv2", prompt_length=20, shift_positions=shift)
        return PTuningModel(backbone, config, SequenceClassificationHead(32, 2, "cls")).token_budget(max_length)

    assert budget(False, 64) == 64 and budget(True, 64) == 44
    with pytest.raises(PTuningError, match="leaves 4 input tokens beside the 20-token prompt"):
        budget(True, 24)


def test_train_flags_record_the_conventions_and_the_pool_serves_them(tmp_path, monkeypatch, capsys, tiny_bert_dir):
    """--shift-positions --drop-token-types reach the artifact; the pool gives those rows their own forward."""
    from conftest import train_argv, write_sst2

    from ptuning.serve.pool import PromptPool
    from ptuning.tasks import Example

    data = write_sst2(tmp_path / "sst2", n_train=16, n_dev=8)
    common = ("--prompt-length", "3", "--epochs", "1", "--max-length", "24", "--pooling", "mean", "--lr", "0.05")
    shifted, plain = tmp_path / "shifted", tmp_path / "plain"
    argv = train_argv(data, tiny_bert_dir, shifted, *common, "--shift-positions", "--drop-token-types")
    assert run_cli(monkeypatch, capsys, *argv)[0] == 0
    assert run_cli(monkeypatch, capsys, *train_argv(data, tiny_bert_dir, plain, *common))[0] == 0
    method = artifact.read_meta(shifted)["method"]
    assert method["shift_positions"] is True and method["drop_token_types"] is True
    assert artifact.read_meta(plain)["method"]["shift_positions"] is False

    backbone, tokenizer, _ = backbones.load_backbone(str(tiny_bert_dir))
    pool = PromptPool(backbone, tokenizer)
    pool.load(shifted, "shifted")
    pool.load(plain, "plain")
    texts = ["good movie", "the plot was dull and the acting weak"]
    rows = [(name, Example(texts=(t,))) for t in texts for name in ("shifted", "plain")]
    mixed = pool.predict(rows)
    for (name, example), got in zip(rows, mixed, strict=True):
        model, tok, task, meta = artifact.load_artifact(tmp_path / name)
        feats = task.featurize([example], tok, model.token_budget(meta["max_length"])).features
        batch = task.collator(tok)(feats)
        with torch.no_grad():
            alone = torch.softmax(model(batch["input_ids"], batch["attention_mask"]), -1)[0]
        assert got["scores"] == pytest.approx(dict(zip(task.labels, alone.tolist(), strict=True)), abs=1e-5)


# -- import ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("projection", [False, True])
def test_a_feature_extraction_adapter_imports_with_its_head_file_and_gives_pefts_logits(
    tmp_path, monkeypatch, capsys, tiny_bert_dir, projection
):
    adapter, head_file, out = tmp_path / "adapter", tmp_path / "head.safetensors", tmp_path / "out"
    wrapped = fe_adapter(tiny_bert_dir, adapter, projection)
    assert json.loads((adapter / "adapter_config.json").read_text())["prefix_projection"] is projection
    classifier = torch.nn.Linear(32, 2)
    save_file(classifier.state_dict(), str(head_file))
    batch = inputs(tiny_bert_dir)
    with torch.no_grad():
        hidden = wrapped(**batch).last_hidden_state
        theirs = classifier(mean_pool(hidden, batch["attention_mask"]))

    argv = ("import-peft", str(adapter), "--output", str(out), "--task", "sst2", "--head", str(head_file))
    status, stdout, stderr = run_cli(monkeypatch, capsys, *argv, "--pooling", "mean")
    assert status == 0, stderr
    assert f"imported a {P}-slot prefix (positions shifted by P, no token types)" in stdout
    assert (artifact_logits(out, batch) - theirs).abs().max() < TOL
    meta = artifact.read_meta(out)
    assert meta["method"]["prompt_length"] == P and meta["pooling"] == "mean"
    assert meta["backbone"]["fingerprint"] == backbones.fingerprint(backbones.load_backbone(str(tiny_bert_dir))[0])
    assert meta["imported_from"]["task_type"] == "FEATURE_EXTRACTION"

    unshifted = tmp_path / "unshifted"
    argv = ("import-peft", str(adapter), "--output", str(unshifted), "--task", "sst2", "--head", str(head_file))
    assert run_cli(monkeypatch, capsys, *argv, "--pooling", "mean", "--no-shift-positions")[0] == 0
    assert artifact.read_meta(unshifted)["method"]["shift_positions"] is False
    assert (artifact_logits(unshifted, batch) - theirs).abs().max() > 1e-3


def test_a_prompt_encoder_saved_with_its_projection_is_folded_once(tmp_path, tiny_bert_dir):
    """A state dict holding PEFT's MLP itself (embedding + transform) imports as the table PEFT would compute."""
    adapter = tmp_path / "adapter"
    wrapped = fe_adapter(tiny_bert_dir, adapter, projection=True)
    encoder = wrapped.prompt_encoder["default"]
    with torch.no_grad():
        expected = encoder(torch.arange(P))  # (P, layers * 2 * token_dim)
    state = {f"prompt_encoder.default.{k}": v.contiguous() for k, v in encoder.state_dict().items()}
    save_file(state, str(adapter / "adapter_model.safetensors"))
    table = peft_interop.read_adapter(adapter).table
    assert table.shape == expected.shape and (table - expected).abs().max() < 1e-6


@pytest.mark.parametrize("kind", ["bert-seq", "roberta-seq", "bert-token"])
def test_a_task_adapters_saved_classifier_becomes_the_head(tmp_path, tiny_bert_dir, kind):
    import transformers as hf

    model_dir = tiny_bert_dir
    if kind.startswith("roberta"):
        model_dir = backbone_dir(tmp_path, tiny_bert_dir, "roberta", pad_token_id=0)
    model_class = {
        "bert-seq": hf.BertForSequenceClassification,
        "roberta-seq": hf.RobertaForSequenceClassification,
        "bert-token": hf.BertForTokenClassification,
    }[kind]
    torch.manual_seed(5)
    task_model = model_class.from_pretrained(model_dir, num_labels=3).eval()
    for p in task_model.classifier.parameters():
        torch.nn.init.normal_(p, std=1.0)  # far from the default init, so a wrong head shows
    task_type = TaskType.TOKEN_CLS if kind == "bert-token" else TaskType.SEQ_CLS
    adapter, out = tmp_path / "adapter", tmp_path / "out"
    get_peft_model(task_model, PrefixTuningConfig(task_type=task_type, num_virtual_tokens=P)).save_pretrained(adapter)

    batch = inputs(model_dir)
    features = peft_features(model_dir, adapter, batch)
    classifier = task_model.classifier
    with torch.no_grad():
        if kind == "bert-seq":
            theirs = classifier(features.pooler_output)  # BertForSequenceClassification: pooler, dropout, classifier
        else:
            theirs = classifier(features.last_hidden_state)  # RoBERTa's head reads the first token itself
    task = {"bert-seq": ("cb", None), "roberta-seq": ("text-classification", ["a", "b", "c"])}
    name, labels = task.get(kind, ("token-classification", ["O", "B-X", "I-X"]))
    request = peft_interop.ImportRequest(adapter=adapter, output=out, model=str(model_dir), task=name, labels=labels)
    peft_interop.import_adapter(request)
    ours = artifact_logits(out, batch)
    real = batch["attention_mask"].bool() if kind == "bert-token" else slice(None)
    assert ours.shape == theirs.shape and (ours - theirs)[real].abs().max() < TOL
    if kind != "bert-token":  # the first token through a dense layer and tanh
        assert artifact.read_meta(out)["pooling"] == "pooler"


# -- export ------------------------------------------------------------------------------------------------------
def trained(tmp_path: Path, tiny_bert_dir: Path, name: str, method: str = "ptv2", **settings) -> Path:
    """An SST-2 artifact with a random prompt at PEFT's scale and a random head, as ``train`` saves one."""
    from ptuning.tasks import get_task

    backbone, _, model_name = backbones.load_backbone(str(tiny_bert_dir))
    task = get_task("sst2")
    torch.manual_seed(7)
    config = method_config(method, strict=False, prompt_length=P, **{"prefix_init_std": 1.0, **settings})
    model = PTuningModel(backbone, config, task.build_head(32, "mean")).eval()
    out = tmp_path / name
    fingerprint = backbones.fingerprint(backbone)
    artifact.save_artifact(
        out, model, task=task, backbone_name=model_name, backbone_fingerprint=fingerprint, max_length=24, pooling="mean"
    )
    return out


def test_export_then_import_gives_back_the_same_artifact(tmp_path, tiny_bert_dir):
    source = trained(tmp_path, tiny_bert_dir, "source")
    exported, back = tmp_path / "exported", tmp_path / "back"
    notes = peft_interop.export_artifact(source, exported)
    assert any("numbers the real tokens from P" in n for n in notes)  # trained unshifted: PEFT will differ
    peft_interop.import_adapter(peft_interop.ImportRequest(adapter=exported, output=back))
    before, after = artifact.read_meta(source), artifact.read_meta(back)
    for key in ("method", "task", "pooling", "max_length", "backbone"):
        assert after[key] == before[key], key
    original, imported = (load_file(str(d / artifact.WEIGHTS)) for d in (source, back))
    assert original.keys() == imported.keys()
    assert all(torch.equal(original[k], imported[k]) for k in original)
    batch = inputs(tiny_bert_dir)
    assert torch.equal(artifact_logits(source, batch), artifact_logits(back, batch))


def test_an_exported_adapter_loads_in_peft_and_gives_the_same_outputs(tmp_path, monkeypatch, capsys, tiny_bert_dir):
    from transformers import AutoModel

    source = trained(tmp_path, tiny_bert_dir, "shifted", shift_positions=True, drop_token_types=True)
    exported = tmp_path / "exported"
    status, stdout, stderr = run_cli(monkeypatch, capsys, "export-peft", str(source), str(exported))
    assert status == 0 and "note:" not in stderr and "PeftModel.from_pretrained" in stdout
    loaded = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_bert_dir), exported).eval()
    assert loaded.peft_config["default"].peft_type == peft.PeftType.PREFIX_TUNING
    batch = inputs(tiny_bert_dir)
    model = artifact.load_artifact(source)[0]
    with torch.no_grad():
        theirs = loaded(**batch).last_hidden_state
        ours = model.encode(**batch)
        head = model.head
        assert (theirs - ours)[batch["attention_mask"].bool()].abs().max() < TOL
        peft_logits = head(theirs, batch["attention_mask"])
    assert (peft_logits - artifact_logits(source, batch)).abs().max() < TOL
    head_file = load_file(str(exported / "ptuning_head.safetensors"))
    assert all(torch.equal(head_file[k], v) for k, v in head.state_dict().items())


# -- refusals: one line, status 2 --------------------------------------------------------------------------------
def refused(monkeypatch, capsys, *args: str) -> str:
    status, _, stderr = run_cli(monkeypatch, capsys, *args)
    assert status == 2 and stderr.startswith("error: ") and len(stderr.strip().splitlines()) == 1, stderr
    return stderr


def test_import_refuses_what_it_cannot_rebuild(tmp_path, monkeypatch, capsys, tiny_bert_dir):
    adapter = tmp_path / "adapter"
    fe_adapter(tiny_bert_dir, adapter)
    out = str(tmp_path / "out")

    assert "holds no classifier" in refused(monkeypatch, capsys, "import-peft", str(adapter), "--output", out)
    head_file = tmp_path / "head3.safetensors"
    save_file(torch.nn.Linear(32, 3).state_dict(), str(head_file))
    argv = ("import-peft", str(adapter), "--output", out, "--head", str(head_file))
    assert "has 3 outputs but task sst2 has 2 labels" in refused(monkeypatch, capsys, *argv, "--task", "sst2")
    assert "has 3 outputs but task text-classification has 0" in refused(monkeypatch, capsys, *argv)
    assert "copa is a multiple-choice task" in refused(monkeypatch, capsys, *argv, "--task", "copa")

    config = json.loads((adapter / "adapter_config.json").read_text())
    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "LORA"}))
    message = refused(monkeypatch, capsys, "import-peft", str(lora), "--output", out)
    assert "a LORA adapter; import-peft reads prefix-tuning" in message
    empty = tmp_path / "empty"
    empty.mkdir()
    message = refused(monkeypatch, capsys, "import-peft", str(empty), "--output", out)
    assert "not a PEFT adapter (no adapter_config.json)" in message
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_text(json.dumps(config))
    (pickled / "adapter_model.bin").write_bytes(b"")
    assert "a pickle ptuning never loads" in refused(monkeypatch, capsys, "import-peft", str(pickled), "--output", out)
    assert not Path(out).exists()


def test_import_refuses_another_backbone(tmp_path, monkeypatch, capsys, tiny_bert_dir):
    three_layers = backbone_dir(tmp_path, tiny_bert_dir, "bert", num_hidden_layers=3)
    adapter, head_file = tmp_path / "adapter", tmp_path / "head.safetensors"
    fe_adapter(three_layers, adapter)
    save_file(torch.nn.Linear(32, 2).state_dict(), str(head_file))
    argv = ("import-peft", str(adapter), "--output", str(tmp_path / "out"), "--head", str(head_file), "--task", "sst2")
    message = refused(monkeypatch, capsys, *argv, "--model", str(tiny_bert_dir))
    assert "made for 3 layers x 4 key/value heads (width 32), the backbone has 2 x 4 (width 32)" in message

    exported = tmp_path / "exported"  # same shape, other weights: only an exported adapter's fingerprint can tell
    peft_interop.export_artifact(trained(tmp_path, tiny_bert_dir, "source"), exported)
    other = backbone_dir(tmp_path, tiny_bert_dir, "bert", seed=1)
    argv = ("import-peft", str(exported), "--output", str(tmp_path / "o2"), "--model", str(other))
    message = refused(monkeypatch, capsys, *argv)
    assert "fingerprint" in message and "pass --model PATH" in message


def test_export_refuses_other_methods(tmp_path, monkeypatch, capsys, tiny_bert_dir):
    out = trained(tmp_path, tiny_bert_dir, "pt", method="prompt-tuning")
    message = refused(monkeypatch, capsys, "export-peft", str(out), str(tmp_path / "x"))
    assert "export-peft exports ptv2 artifacts" in message and "this one is prompt-tuning" in message
