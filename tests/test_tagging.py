"""Sequence labelling: CoNLL readers, tag schemes, windows (no silent truncation), metrics, SRL."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import FAMILIES, WORDS, tiny_backbone, train_tiny

from ptuning import artifact, pipeline
from ptuning.errors import DataError
from ptuning.loop import TrainConfig
from ptuning.method import method_config
from ptuning.model import PTuningModel
from ptuning.tasks import get_task, load_records, schemes
from ptuning.tasks.tagging import brackets_to_bio

IOB1_DOC = """-DOCSTART- -X- -X- O

the DT B-NP O
good JJ I-NP I-PER
cast NN I-NP I-PER
bad JJ I-NP B-PER
film NN I-NP I-LOC
. . O O

plot NN B-NP I-ORG
was VB B-VP O
dull JJ B-ADJP I-MISC
"""


def write_conll(directory, text=IOB1_DOC, repeat: int = 6):
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("train.txt", "dev.txt", "test.txt"):
        (directory / name).write_text(text * (repeat if name == "train.txt" else 1))
    return directory


def train_conll(tmp_path, model_dir, method: str, epochs: int, **request):
    """Train on the toy CoNLL file with max length 12, which forces windows; return (data, out, summary)."""
    data = write_conll(tmp_path / "conll")
    out = tmp_path / "out"
    summary = pipeline.train(
        pipeline.TrainRequest(
            task="conll03",
            data=str(data),
            output=out,
            model=str(model_dir),
            method=method_config(method, strict=False, prompt_length=3),
            train=TrainConfig(epochs=epochs, lr=1e-2, batch_size=4),
            max_length=12,
            **request,
        )
    )
    return data, out, summary


def test_schemes_round_trip():
    iob2 = ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG", "I-ORG"]
    for scheme, tags in {
        "iob1": ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG", "I-ORG"],
        "bioes": ["B-PER", "E-PER", "S-PER", "O", "S-LOC", "B-ORG", "E-ORG"],
        "bilou": ["B-PER", "L-PER", "U-PER", "O", "U-LOC", "B-ORG", "L-ORG"],
        "iob2": iob2,
    }.items():
        assert schemes.detect([tags]) == scheme
        assert schemes.to_iob2(tags, scheme) == iob2
        assert schemes.from_iob2(iob2, scheme) == tags
    assert schemes.repair(["O", "I-PER", "I-LOC", "B-ORG", "I-ORG"]) == ["O", "B-PER", "B-LOC", "B-ORG", "I-ORG"]


def test_reader_skips_docstart_and_normalises_iob1(tmp_path):
    task = get_task("conll03")
    examples = task.records_to_examples(load_records(task.files, write_conll(tmp_path), "validation"), labelled=True)
    assert [len(e.texts) for e in examples] == [6, 3]
    assert examples[0].label == ["O", "B-PER", "I-PER", "B-PER", "B-LOC", "O"]
    assert examples[0].extra["scheme"] == "iob1" and examples[0].extra["lines"][0] == 3


def test_bad_conll_lines_name_file_and_line(tmp_path):
    task = get_task("conll03")
    (tmp_path / "dev.txt").write_text("good B-PER\nfilm\n")
    with pytest.raises(DataError, match=r"dev.txt:2: expected at least"):
        task.records_to_examples(load_records(task.files, tmp_path, "validation"), labelled=True)
    (tmp_path / "dev.txt").write_text("good B-CITY\n")
    with pytest.raises(DataError, match=r"dev.txt:1: unknown tag 'B-CITY'"):
        task.records_to_examples(load_records(task.files, tmp_path, "validation"), labelled=True)


def _tokenizer(tiny_bert_dir):
    from ptuning.backbones import load_backbone

    return load_backbone(str(tiny_bert_dir))[1]


def test_every_word_gets_exactly_one_prediction(tiny_bert_dir):
    """No silent truncation: long sentences are windowed and each word is owned by one window."""
    task = get_task("token-classification").with_options(labels=["O", "B-X", "I-X"])
    tokenizer = _tokenizer(tiny_bert_dir)
    rng = random.Random(0)
    from ptuning.tasks.base import Example

    for n in [1, 5, 29, 30, 31, 64, 200, 513]:
        words = [rng.choice(WORDS) for _ in range(n)]
        example = Example(tuple(words), ["O"] * n, extra={"scheme": "iob2", "lines": None, "predicate": None})
        featurized = task.featurize([example], tokenizer, max_length=16)
        features, (windows,) = featurized.features, featurized.alignment
        assert all(len(f["input_ids"]) <= 16 for f in features)
        owned = sorted(word for _, positions in windows for _, word in positions)
        assert owned == list(range(n))
        logits = torch.zeros(len(features), 16, 3)
        assert len(task.decode(logits, example, windows)) == n


def test_entity_metrics_match_conlleval_by_hand(tiny_bert_dir):
    """Gold: [PER good cast] [PER bad] [LOC film]; predicted: boundary error on the first, the rest right,
    plus a spurious ORG. conlleval: precision 2/4, recall 2/3, F1 = 4/7."""
    task = get_task("conll03")
    tokenizer = _tokenizer(tiny_bert_dir)
    from ptuning.tasks.base import Example

    words = ["the", "good", "cast", "bad", "film", "."]
    gold = ["O", "B-PER", "I-PER", "B-PER", "B-LOC", "O"]
    predicted = ["B-ORG", "B-PER", "O", "B-PER", "B-LOC", "O"]
    example = Example(tuple(words), gold, extra={"scheme": "iob2", "lines": None, "predicate": None})
    featurized = task.featurize([example], tokenizer, 32)
    logits = torch.full((1, len(featurized.features[0]["input_ids"]), len(task.labels)), -5.0)
    for pos, word in featurized.alignment[0][0][1]:
        logits[0, pos, task.labels.index(predicted[word])] = 5.0
    scores = task.evaluate(logits, [example], featurized.alignment)
    assert scores["precision"] == pytest.approx(2 / 4)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert scores["f1_LOC"] == pytest.approx(1.0) and scores["f1_ORG"] == 0.0


@pytest.mark.parametrize("method", ["ptv2", "prompt-tuning", "ptv1", "finetune", "linear-probe"])
def test_train_eval_predict_conll(tmp_path, tiny_bert_dir, method):
    data, out, summary = train_conll(tmp_path, tiny_bert_dir, method, epochs=1)
    assert {"f1", "precision", "recall"} <= set(summary["best"])
    test = pipeline.evaluate(out, str(data), split="test")
    assert test["f1"] == pytest.approx(summary["best"]["f1"])
    written = tmp_path / "pred.txt"
    pipeline.predict(out, data / "test.txt", written)
    source, result = (data / "test.txt").read_text().splitlines(), written.read_text().splitlines()
    assert len(source) == len(result)
    for before, after in zip(source, result, strict=True):
        if not before.strip() or before.startswith("-DOCSTART-"):
            assert after == before
        else:
            assert after.startswith(before.rstrip() + " ") and after.split()[-1][0] in "OBI"


SRL_DOC = """the - (A0* *
cast - *) *
hit hit (V*) *
the - (A1* *
film - *) (A0*
that - * *)
ended end * (V*)
"""


def test_srl_reader_one_instance_per_predicate_and_v_excluded(tmp_path, tiny_bert_dir):
    assert brackets_to_bio(["(A0*", "*)", "(V*)", "(A1*", "*)", "*", "*"]) == [
        "B-A0",
        "I-A0",
        "B-V",
        "B-A1",
        "I-A1",
        "O",
        "O",
    ]
    data = tmp_path / "srl"
    data.mkdir()
    for name in ("train.txt", "dev.txt"):
        (data / name).write_text(SRL_DOC + "\n" + SRL_DOC)
    task = get_task("conll05")
    examples = task.records_to_examples(load_records(task.files, data, "validation"), labelled=True)
    assert len(examples) == 4 and [e.extra["predicate"] for e in examples[:2]] == [2, 6]
    summary = pipeline.train(
        pipeline.TrainRequest(
            task="conll05",
            data=str(data),
            output=tmp_path / "out",
            model=str(tiny_bert_dir),
            method=method_config("ptv2", prompt_length=3),
            train=TrainConfig(epochs=1, batch_size=2),
            max_length=32,
        )
    )
    assert "f1_V" not in summary["best"] and "f1_A0" in summary["best"]


@pytest.mark.parametrize("family", FAMILIES)
def test_token_head_on_every_backbone_family(family, tiny_bert_dir, tmp_path):
    task = get_task("conll03")
    tokenizer = _tokenizer(tiny_bert_dir)
    examples = task.records_to_examples(load_records(task.files, write_conll(tmp_path), "validation"), labelled=True)
    batch = task.collator(tokenizer)(task.featurize(examples, tokenizer, 8).features)
    labels = batch.pop("labels")
    if family in ("gpt2", "llama", "qwen2", "modernbert"):
        batch.pop("token_type_ids", None)
    model = PTuningModel(tiny_backbone(family), method_config("ptv2", prompt_length=2), task.build_head(32, "cls"))
    logits = model(**batch)
    assert logits.shape[:2] == labels.shape
    task.loss(logits, labels).backward()
    assert model.method.prefix_encoder.embedding.weight.grad.abs().sum() > 0


def test_pool_mixes_tagging_with_classification(tmp_path, tiny_bert_dir, sst2_dir):
    from ptuning.serve.pool import PromptPool

    data = write_conll(tmp_path / "conll")
    for task, source in (("conll03", data), ("sst2", sst2_dir)):
        P = 2 if task == "sst2" else 4
        train_tiny(task, source, tmp_path / f"out-{task}", tiny_bert_dir, prompt_length=P, max_length=10)
    pool = PromptPool.from_artifact(tmp_path / "out-conll03")
    pool.load(tmp_path / "out-conll03", "ner")
    pool.load(tmp_path / "out-sst2", "sentiment")
    sentence = ["the", "good", "cast", "and", "the", "bad", "film", "the", "plot", "was", "dull", "."] * 2
    rows = [("ner", pool.to_example("ner", sentence)), ("sentiment", pool.to_example("sentiment", "good film"))]
    mixed = pool.predict(rows)
    assert len(mixed[0]["tags"]) == len(sentence)  # windows (max length 10) reassembled
    model, tokenizer, task, meta = artifact.load_artifact(tmp_path / "out-conll03")
    example = task.example_from_input(sentence)
    featurized = task.featurize([example], tokenizer, meta["max_length"])
    logits = pipeline.predict_logits(model, featurized.features, task.collator(tokenizer), 8)
    alone = task.predictions(logits, [example], featurized.alignment)[0]
    assert mixed[0]["tags"] == alone["tags"]
    assert mixed[1]["label"] in ("0", "1")


LABELS = ("O", "B-A", "I-A", "B-B", "I-B")


def _valid(tags: list[str]) -> bool:
    return schemes.repair(tags) == tags


def _path_score(start, trans, end, emissions, seq) -> float:
    """Score of one tag path, written out term by term: emissions ``(N, T)``."""
    total = start[seq[0]] + emissions[0, seq[0]] + end[seq[-1]]
    for i in range(1, len(seq)):
        total = total + trans[seq[i - 1], seq[i]] + emissions[i, seq[i]]
    return total


def test_crf_viterbi_is_the_best_valid_path_and_never_invalid():
    import itertools

    from ptuning.crf import CRF

    torch.manual_seed(0)
    crf = CRF(LABELS)
    with torch.no_grad():
        crf.transitions.normal_()
        crf.start.normal_()
        crf.end.normal_()
    for _ in range(30):
        emissions = torch.randn(1, 4, len(LABELS)) * 3
        mask = torch.tensor([[True, True, False, True]])  # position 2 is not a word start
        path = crf.viterbi(emissions, mask)[0].tolist()
        assert path[2] == -1
        tags = [LABELS[i] for i in path if i >= 0]
        assert _valid(tags)
        with torch.no_grad():
            start, trans = crf._scores()
            em = emissions[0, [0, 1, 3]]
            paths = list(itertools.product(range(len(LABELS)), repeat=3))
            best = max(paths, key=lambda seq: float(_path_score(start, trans, crf.end, em, seq)))
        assert [LABELS[i] for i in best] == tags


def test_crf_likelihood_matches_brute_force():
    import itertools

    from ptuning.crf import CRF

    torch.manual_seed(1)
    crf = CRF(LABELS)
    emissions = torch.randn(1, 3, len(LABELS))
    tags = torch.tensor([[1, 2, 0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    start, trans = crf._scores()
    scores = [_path_score(start, trans, crf.end, emissions[0], s) for s in itertools.product(range(5), repeat=3)]
    log_z = torch.logsumexp(torch.stack(scores), 0)
    gold = _path_score(start, trans, crf.end, emissions[0], [1, 2, 0])
    assert crf.nll(emissions, tags, mask).item() == pytest.approx((log_z - gold).item(), abs=1e-4)


def test_train_with_crf_and_predict(tmp_path, tiny_bert_dir):
    data, out, summary = train_conll(tmp_path, tiny_bert_dir, "ptv2", epochs=2, task_options={"crf": True})
    assert summary["history"][-1]["train_loss"] > 0
    model, _, task, meta = artifact.load_artifact(out)
    assert meta["task"]["crf"] and task.crf and hasattr(model.head, "crf")  # --crf reaches the head and the artifact
    assert pipeline.evaluate(out, str(data))["f1"] == pytest.approx(summary["best"]["f1"])
    pipeline.predict(out, data / "test.txt", tmp_path / "pred.txt")
    predicted = [
        line.split()[-1]
        for line in (tmp_path / "pred.txt").read_text().splitlines()
        if line.strip() and not line.startswith("-DOCSTART-")
    ]
    assert len(predicted) == 9


def test_crf_flag_is_refused_for_classification(tmp_path, sst2_dir, tiny_bert_dir):
    from ptuning.errors import PTuningError

    with pytest.raises(PTuningError, match="--crf applies to tagging"):
        pipeline.train(
            pipeline.TrainRequest(
                task="sst2",
                data=str(sst2_dir),
                output=tmp_path / "o",
                model=str(tiny_bert_dir),
                task_options={"crf": True},
            )
        )


def test_hub_rows_read_like_conll_columns(monkeypatch):
    """A hub dataset (conll2003: `tokens` + `ner_tags`, class ids mapped to names) gives the same examples."""
    from ptuning.tasks import base
    from ptuning.tasks.readers import Record

    row = {"tokens": ["EU", "rejects", "German", "call"], "ner_tags": ["B-ORG", "O", "B-MISC", "O"]}
    rows = [Record(row, "hub", 1)]
    monkeypatch.setattr(base, "read_hf", lambda dataset, config, split: rows)
    task = get_task("conll03")
    examples = task.records_to_examples(load_records(task.files, "conll2003", "train"), labelled=True)
    assert examples[0].texts == ("EU", "rejects", "German", "call")
    assert examples[0].label == ["B-ORG", "O", "B-MISC", "O"]
    bad = [Record({"tokens": ["a", "b"], "ner_tags": ["O"]}, "hub", 7)]
    with pytest.raises(DataError, match="hub:7: a hub tagging row needs `tokens` and `ner_tags`"):
        task.records_to_examples(bad, labelled=True)


def test_read_hf_maps_lists_of_class_ids_to_tag_names(monkeypatch):
    datasets = pytest.importorskip("datasets")
    from ptuning.tasks.readers import read_hf

    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=["O", "B-PER", "I-PER"])),
        }
    )
    local = datasets.Dataset.from_dict({"tokens": [["Ada", "Lovelace", "wrote"]], "ner_tags": [[1, 2, 0]]}, features)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: local)
    records = read_hf("conll2003", None, "train")
    assert records[0].fields["ner_tags"] == ["B-PER", "I-PER", "O"]
