"""Tiny decoders with their own word-level tokenizer, and toy generation data in the official formats."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import torch
from conftest import WORDS, tiny_config

VOCAB = ["<pad>", "<unk>", "<s>", "</s>", *WORDS, ",", ".", "name", "food", "area"]


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    model = models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>")
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


def tiny_decoder(family: str, seed: int = 0, **overrides):
    """A random causal LM (tied embeddings) whose greedy outputs vary with its input: a larger init scale."""
    from transformers import AutoModelForCausalLM

    ids = {"pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3}
    config = tiny_config(
        family,
        vocab_size=len(VOCAB),
        max_position_embeddings=256,
        tie_word_embeddings=True,
        initializer_range=0.3,
        **ids,
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


def save_tiny_decoder(directory: Path, family: str = "llama") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    tiny_decoder(family).save_pretrained(directory)
    tiny_tokenizer().save_pretrained(directory)
    return directory


def _pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """Sources of three words; the target repeats them and ends with a full stop (learnable by copying)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = rng.sample(WORDS[:10], 3)
        rows.append((f"name {words[0]} , food {words[1]} , area {words[2]}", f"the {' '.join(words)} ."))
    return rows


def write_e2e(directory: Path, n_train: int = 24, n_dev: int = 6) -> Path:
    """E2E's CSV layout (``mr``, ``ref``); dev and test repeat each MR on two rows (two references)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, n, seed, refs in (
        ("trainset.csv", n_train, 1, 1),
        ("devset.csv", n_dev, 2, 2),
        ("testset_w_refs.csv", 4, 3, 2),
    ):
        with (directory / name).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
            writer.writerow(["mr", "ref"])
            for mr, ref in _pairs(n, seed):
                for r in range(refs):
                    writer.writerow([mr, ref if r == 0 else f"{ref} good"])
    return directory


def write_dialogsum(directory: Path, n_dev: int = 60, n_test: int = 4) -> Path:
    """DialogSum's JSONL layout: dev ``summary``, test ``summary1..3``."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "dialogsum.dev.jsonl").open("w") as handle:
        for i, (source, target) in enumerate(_pairs(n_dev, 4)):
            handle.write(json.dumps({"fname": f"dev_{i}", "dialogue": source, "summary": target, "topic": "x"}) + "\n")
    with (directory / "dialogsum.test.jsonl").open("w") as handle:
        for i, (source, target) in enumerate(_pairs(n_test, 5)):
            row = {
                "fname": f"test_{i}",
                "dialogue": source,
                "summary1": target,
                "summary2": "the end .",
                "summary3": "a",
            }
            handle.write(json.dumps(row) + "\n")
    return directory
