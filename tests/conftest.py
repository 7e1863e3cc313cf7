"""Shared fixtures: tiny random backbones of every family, a tiny saved BERT with
its own tokenizer, and small data sets we write ourselves in the official formats."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

WORDS = (
    "good great fine lovely superb bad awful poor dull weak the a movie film plot cast was is very quite "
    "and but it this that story acting music scene end"
).split()

FAMILIES = {
    "bert": {},
    "roberta": {},
    "xlm-roberta": {},
    "electra": {},
    "deberta-v2": {
        "relative_attention": True,
        "pos_att_type": ["p2c", "c2p"],
        "position_buckets": 16,
        "max_relative_positions": 32,
    },
    "modernbert": {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "cls_token_id": 1, "sep_token_id": 2},
    "gpt2": {},
    "llama": {"num_key_value_heads": 2},
    "qwen2": {"num_key_value_heads": 2},
}


def train_argv(data, model_dir, output, *extra: str) -> list[str]:
    """``ptuning train`` arguments for the SST-2-format toy data on a tiny model."""
    return ["train", "--task", "sst2", "--data", str(data), "--model", str(model_dir), "--output", str(output), *extra]


def save_artifact_of(directory, model, task, name: str, backbone, max_length: int = 32, pooling: str = "mean"):
    """``model`` saved as an artifact of ``task`` on ``backbone`` (recorded as ``name``): random test artifacts."""
    from ptuning import artifact, backbones

    fingerprint = backbones.fingerprint(backbone)
    artifact.save_artifact(
        directory, model, task=task, backbone_name=name, backbone_fingerprint=fingerprint, max_length=max_length,
        pooling=pooling,
    )  # fmt: skip
    return directory


def cli_in_process(*args: str):
    """``ptuning ARGS`` through the real entry point (``cli.main``: one-line errors, exit codes), in this process.

    A subprocess pays ~5 s of imports on this machine; tests that check the process itself (signals, launchers,
    what transformers prints at import) keep using one. Returns a ``CompletedProcess`` like ``subprocess.run``.
    """
    import contextlib
    import io
    import subprocess
    import sys

    from ptuning import cli

    out, err, argv = io.StringIO(), io.StringIO(), sys.argv
    code = 0
    sys.argv = ["ptuning", *map(str, args)]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    return subprocess.CompletedProcess(["ptuning", *args], code, out.getvalue(), err.getvalue())


def train_tiny(
    task: str,
    data,
    output,
    model_dir,
    *,
    method: str = "ptv2",
    prompt_length: int = 3,
    epochs: int = 1,
    lr: float | None = None,
    **request_kw,
) -> dict:
    """Train on a tiny model (batch 4): an artifact to serve or score in a test."""
    from ptuning import pipeline
    from ptuning.loop import TrainConfig
    from ptuning.method import method_config

    return pipeline.train(
        pipeline.TrainRequest(
            task=task,
            data=str(data),
            output=output,
            model=str(model_dir),
            method=method_config(method, strict=False, prompt_length=prompt_length),
            train=TrainConfig(epochs=epochs, lr=lr, batch_size=4),
            **request_kw,
        )
    )


def tiny_config(family: str, **overrides):
    from transformers import AutoConfig

    size = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
    if family == "gpt2":
        size = {"n_embd": 32, "n_layer": 2, "n_head": 4}
    kwargs = {**size, "vocab_size": 128, "max_position_embeddings": 64, **FAMILIES[family], **overrides}
    if family == "gpt2":
        kwargs["n_positions"] = kwargs.pop("max_position_embeddings")
    return AutoConfig.for_model(family, **kwargs)


def tiny_backbone(family: str, seed: int = 0, **overrides):
    from transformers import AutoModel

    torch.manual_seed(seed)
    model = AutoModel.from_config(tiny_config(family, **overrides))
    return model.eval()


@pytest.fixture
def one_thread():
    """Tiny matrices: one thread is faster, and much faster on a busy machine (``pytestmark`` of a module)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A saved 2-layer BERT with a word-level vocabulary: a stand-in for a real checkpoint."""
    from transformers import AutoModel, BertConfig, BertTokenizerFast

    directory = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, ",", "."]
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)}, do_lower_case=True)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _sentences(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    positive, negative = WORDS[:5], WORDS[5:10]
    filler = WORDS[10:]
    rows = []
    for i in range(n):
        label = i % 2
        key = rng.choice(positive if label else negative)
        words = rng.sample(filler, 4) + [key]
        rng.shuffle(words)
        rows.append((" ".join(words), str(label)))
    return rows


def write_sst2(directory: Path, n_train: int = 64, n_dev: int = 32) -> Path:
    """A GLUE SST-2-format toy set: the label is carried by one sentiment word."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train.tsv", n_train, 1), ("dev.tsv", n_dev, 2)):
        lines = ["sentence\tlabel"] + [f"{s}\t{label}" for s, label in _sentences(n, seed)]
        (directory / name).write_text("\n".join(lines) + "\n")
    return directory


def write_cb(directory: Path) -> Path:
    """A SuperGLUE CB-format toy set (our own sentences)."""
    directory.mkdir(parents=True, exist_ok=True)
    labels = ["entailment", "contradiction", "neutral"]
    for name, n in (("train.jsonl", 24), ("val.jsonl", 12)):
        with (directory / name).open("w") as handle:
            for i in range(n):
                row = {
                    "premise": f"the movie was {WORDS[i % 10]}",
                    "hypothesis": "the plot is good",
                    "label": labels[i % 3],
                    "idx": i,
                }
                handle.write(json.dumps(row) + "\n")
    return directory


@pytest.fixture
def sst2_dir(tmp_path) -> Path:
    return write_sst2(tmp_path / "sst2")


@pytest.fixture
def cb_dir(tmp_path) -> Path:
    return write_cb(tmp_path / "cb")
