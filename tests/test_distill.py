"""Distillation from a teacher artifact: the loss, its masks, the teacher cache, and what is refused."""

from __future__ import annotations

import math
import shutil

import fixtures
import pytest
import torch
from conftest import write_cb, write_sst2
from safetensors.torch import load_file
from test_qa import squad_file
from test_settings import run_main
from test_tagging import write_conll
from torch import nn

from ptuning import artifact, distill, pipeline
from ptuning.distill import DistillConfig, distillation_loss, kl_to_teacher
from ptuning.errors import PTuningError
from ptuning.loop import TrainConfig
from ptuning.method import method_config
from ptuning.tasks import get_task


def request(output, model_dir, task, data, method="ptv2", epochs=1, **fields) -> pipeline.TrainRequest:
    return pipeline.TrainRequest(
        task=task,
        data=str(data),
        output=output,
        model=str(model_dir),
        method=method_config(method, strict=False, prompt_length=3),
        train=TrainConfig(epochs=epochs, lr=1e-2 if method != "finetune" else 1e-3, batch_size=4),
        max_length=fields.pop("max_length", 32),
        **fields,
    )


@pytest.fixture(scope="module")
def sst2(tmp_path_factory):
    return write_sst2(tmp_path_factory.mktemp("sst2"), n_train=16, n_dev=8)


@pytest.fixture(scope="module")
def teacher(sst2, tiny_bert_dir, tmp_path_factory):
    """A fine-tuned teacher on the same toy task."""
    out = tmp_path_factory.mktemp("teacher") / "ft"
    pipeline.train(request(out, tiny_bert_dir, "sst2", sst2, method="finetune", epochs=2))
    return out


@pytest.fixture
def caches(monkeypatch):
    """Every TeacherCache a run builds, to count what it computed."""
    made = []
    original = distill.load_teacher

    def recording(*args, **kwargs):
        made.append(original(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(distill, "load_teacher", recording)
    return made


def test_settings_are_checked():
    for alpha in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(PTuningError, match="--distill-alpha must be in"):
            DistillConfig("t", alpha=alpha)
    for temperature in (0, -1, float("nan"), float("inf")):
        with pytest.raises(PTuningError, match="--distill-temperature must be a finite number > 0"):
            DistillConfig("t", temperature=temperature)


def test_kl_is_zero_when_the_student_is_the_teacher_and_positive_otherwise():
    torch.manual_seed(0)
    logits = torch.randn(5, 3)
    assert kl_to_teacher(logits, logits, 2.0).item() == pytest.approx(0.0, abs=1e-7)
    other = torch.randn(5, 3)
    manual = (other.softmax(-1) * (other.log_softmax(-1) - logits.log_softmax(-1))).sum(-1).mean()
    assert kl_to_teacher(logits, other, 1.0).item() == pytest.approx(manual.item(), rel=1e-5) and manual > 0
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0, 1]))
    assert distillation_loss(ce, logits, other, 1.0, 2.0) is ce  # alpha 1: the task loss itself
    mixed = distillation_loss(ce, logits, other, 0.25, 2.0)
    assert mixed.item() == pytest.approx(0.25 * ce.item() + 0.75 * 4 * kl_to_teacher(logits, other, 2.0).item())


def test_token_rows_leave_out_padding_and_ignored_sub_tokens():
    task = get_task("conll03")
    torch.manual_seed(1)
    student, teacher = torch.randn(2, 6, 3, requires_grad=True), torch.randn(2, 6, 3)
    labels = torch.tensor([[-100, 0, 2, -100, 1, -100], [-100, 1, -100, -100, -100, -100]])  # -100: not scored
    ignored = labels == -100
    rows, row_mask, class_mask = task.distillation_rows(student, labels, {})
    assert rows.shape == (12, 3) and row_mask.sum() == 4 and class_mask is None
    kl = kl_to_teacher(rows, task.distillation_rows(teacher, labels, {})[0], 2.0, row_mask, class_mask)
    changed_student = student.detach().masked_fill(ignored[..., None], 50.0)
    changed_teacher = teacher.masked_fill(ignored[..., None], -50.0)
    again = kl_to_teacher(changed_student.flatten(0, 1), changed_teacher.flatten(0, 1), 2.0, row_mask)
    assert again.item() == pytest.approx(kl.item(), rel=1e-6) and kl > 0
    kl.backward()
    assert student.grad[ignored].abs().max() == 0 and student.grad[~ignored].abs().max() > 0


def test_span_rows_are_start_and_end_distributions_over_real_tokens_only():
    task = get_task("squad")
    torch.manual_seed(2)
    student, teacher = torch.randn(2, 5, 2, requires_grad=True), torch.randn(2, 5, 2)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    batch = {"attention_mask": mask}
    rows, row_mask, class_mask = task.distillation_rows(student, torch.zeros(2, 2, dtype=torch.long), batch)
    assert rows.shape == (4, 5) and row_mask is None and class_mask.sum() == 16
    assert torch.equal(rows[1], student[0, :, 1])  # row 1: the first window's end scores
    t_rows = task.distillation_rows(teacher, None, batch)[0]
    kl = kl_to_teacher(rows, t_rows, 1.0, None, class_mask)
    padded = (mask == 0)[..., None].expand(2, 5, 2)
    moved = task.distillation_rows(student.detach().masked_fill(padded, 30.0), None, batch)[0]
    moved_teacher = task.distillation_rows(teacher.masked_fill(padded, -30.0), None, batch)[0]
    assert kl_to_teacher(moved, moved_teacher, 1.0, None, class_mask).item() == pytest.approx(kl.item(), rel=1e-6)
    assert kl_to_teacher(rows, rows, 1.0, None, class_mask).item() == pytest.approx(0.0, abs=1e-7)
    kl.backward()
    assert student.grad[padded].abs().max() == 0 and student.grad[~padded].abs().max() > 0


class ScoreByIds(torch.nn.Module):
    """A stand-in teacher: each choice's score is the sum of its token ids (padded choices masked, as the model)."""

    def forward(self, input_ids, attention_mask, choice_mask=None, **_):
        if input_ids.dim() == 2:  # tokens: (B, L, 2)
            return torch.stack([input_ids.float(), -input_ids.float()], dim=-1)
        scores = (input_ids * attention_mask).sum(-1).float()  # (B, C)
        return scores.masked_fill(~choice_mask.bool(), torch.finfo(scores.dtype).min)


def test_cache_keeps_each_row_at_its_own_size_and_pads_it_to_each_batch():
    cache = distill.TeacherCache(ScoreByIds())
    two = {"input_ids": torch.tensor([[[1, 2], [3, 0]]]), "attention_mask": torch.tensor([[[1, 1], [1, 0]]])}
    three = {"input_ids": torch.tensor([[[1, 1], [2, 2], [4, 4]]]), "attention_mask": torch.ones(1, 3, 2)}
    # example 0 has two choices; in a batch with a three-choice example it is padded to three
    batch = {k: torch.cat([nn.functional.pad(two[k], (0, 0, 0, 1)), three[k]]) for k in two}
    batch["choice_mask"] = torch.tensor([[1, 1, 0], [1, 1, 1]])
    first = cache.logits(torch.tensor([0, 1]), batch)
    lowest = torch.finfo(torch.float32).min
    assert first.tolist() == [[3.0, 3.0, lowest], [2.0, 4.0, 8.0]] and cache.forward_calls == 1
    alone = cache.logits(torch.tensor([0]), {**two, "choice_mask": torch.tensor([[1, 1]])})
    assert alone.tolist() == [[3.0, 3.0]] and cache.forward_calls == 1  # from the cache, at this batch's width
    tokens = {"input_ids": torch.tensor([[5, 6, 0], [7, 0, 0]]), "attention_mask": torch.tensor([[1, 1, 0], [1, 0, 0]])}
    got = cache.logits(torch.tensor([10, 11]), tokens)
    assert [tuple(cache.cache[k].shape) for k in (10, 11)] == [(2, 2), (1, 2)] and got.shape == (2, 3, 2)
    wider = {"input_ids": torch.tensor([[7, 0, 0, 0]]), "attention_mask": torch.tensor([[1, 0, 0, 0]])}
    assert cache.logits(torch.tensor([11]), wider)[0, :, 0].tolist() == [7.0, 0.0, 0.0, 0.0]


def test_alpha_one_trains_exactly_as_without_a_teacher(sst2, teacher, tiny_bert_dir, tmp_path, caches):
    plain = pipeline.train(request(tmp_path / "plain", tiny_bert_dir, "sst2", sst2))
    hard = pipeline.train(
        request(tmp_path / "hard", tiny_bert_dir, "sst2", sst2, distill=DistillConfig(str(teacher), alpha=1.0))
    )
    assert [r["train_loss"] for r in hard["history"]] == [r["train_loss"] for r in plain["history"]]
    a, b = (load_file(str(tmp_path / run / artifact.WEIGHTS)) for run in ("plain", "hard"))
    assert all(torch.equal(a[key], b[key]) for key in ("prefix", "head.classifier.weight"))
    assert caches[0].forward_calls == 0  # nothing to distil: the teacher never ran


def test_teacher_logits_are_computed_once_per_example(sst2, teacher, tiny_bert_dir, tmp_path, caches):
    config = DistillConfig(str(teacher), alpha=0.0, temperature=2.0)
    summary = pipeline.train(request(tmp_path / "soft", tiny_bert_dir, "sst2", sst2, epochs=3, distill=config))
    cache = caches[0]
    assert summary["epochs_run"] == 3
    assert cache.forward_calls == math.ceil(16 / 4)  # the first epoch's batches; later epochs read the cache
    assert sorted(cache.cache) == list(range(16)) and all(v.shape == (2,) for v in cache.cache.values())
    assert not any(p.requires_grad for p in cache.teacher.parameters()) and not cache.teacher.training
    plain = pipeline.train(request(tmp_path / "plain", tiny_bert_dir, "sst2", sst2, epochs=1))
    assert summary["history"][0]["train_loss"] != pytest.approx(plain["history"][0]["train_loss"])  # soft targets
    config_file = (tmp_path / "soft" / "config.yaml").read_text()
    assert f"teacher: {teacher.resolve()}" in config_file and "distill_alpha: 0.0" in config_file


FAMILIES = {
    "copa": lambda d: fixtures.write("copa", d),
    "conll03": lambda d: write_conll(d),
    "squad": lambda d: squad_file((d.mkdir(parents=True) or d) / "dev-v1.1.json", articles=12),
}
OPTIONS = {"squad": {"task_options": {"split_by_article": 0.3, "doc_stride": 6}, "max_length": 24}}


@pytest.mark.parametrize("task", list(FAMILIES))
def test_distillation_runs_for_choice_token_and_span_heads(task, tiny_bert_dir, tmp_path, caches):
    data = FAMILIES[task](tmp_path / "data")
    options = OPTIONS.get(task, {})
    pipeline.train(request(tmp_path / "teacher", tiny_bert_dir, task, data, **options))
    config = DistillConfig(str(tmp_path / "teacher"), alpha=0.5)
    summary = pipeline.train(
        request(tmp_path / "student", tiny_bert_dir, task, data, epochs=2, distill=config, **options)
    )
    assert summary["best"] is not None and all(math.isfinite(r["train_loss"]) for r in summary["history"])
    cache = caches[0]
    assert cache.forward_calls > 0 and len(cache.cache) > 0
    if task != "copa":  # per-token logits are stored without their padding: (real tokens, tags or 2)
        lengths = {v.shape[0] for v in cache.cache.values()}
        assert all(v.dim() == 2 for v in cache.cache.values()) and len(lengths) > 1


def test_refused_teachers_and_settings(sst2, teacher, tiny_bert_dir, tmp_path, monkeypatch, capsys):
    cb = write_cb(tmp_path / "cb")
    with pytest.raises(PTuningError, match=r"trained on sst2 .* does not match this run's cb"):
        pipeline.train(request(tmp_path / "x", tiny_bert_dir, "cb", cb, distill=DistillConfig(str(teacher))))
    stsb = fixtures.write("stsb", tmp_path / "stsb")
    with pytest.raises(PTuningError, match="stsb is a regression task"):
        pipeline.train(request(tmp_path / "x", tiny_bert_dir, "stsb", stsb, distill=DistillConfig(str(teacher))))
    write_sst2(tmp_path / "sst2")  # beside cb/: a mixture's parent folder
    with pytest.raises(PTuningError, match="--teacher applies to a single-task run"):
        pipeline.train(request(tmp_path / "x", tiny_bert_dir, "sst2,cb", tmp_path, distill=DistillConfig(str(teacher))))
    assert not (tmp_path / "x").exists()
    code, _, err = run_main(
        monkeypatch,
        capsys,
        "train",
        "--task",
        "sst2",
        "--data",
        str(sst2),
        "--output",
        str(tmp_path / "x"),
        "--distill-alpha",
        "0.5",
    )
    assert code == 2 and "need --teacher ARTIFACT" in err and len(err.strip().splitlines()) == 1


def test_a_teacher_with_another_vocabulary_is_refused(sst2, tiny_bert_dir, tmp_path):
    """Same weights, another tokenizer: the teacher would read the student's token ids as other words."""
    from transformers import AutoTokenizer, BertTokenizerFast

    other = tmp_path / "other-vocab"
    shutil.copytree(tiny_bert_dir, other)
    vocab = AutoTokenizer.from_pretrained(tiny_bert_dir).get_vocab()
    swapped = {word: len(vocab) - 1 - i for word, i in vocab.items()}
    BertTokenizerFast(vocab=swapped, do_lower_case=True).save_pretrained(other)
    pipeline.train(request(tmp_path / "teacher", other, "sst2", sst2))
    with pytest.raises(PTuningError, match="tokenizer is not this run's"):
        pipeline.train(
            request(tmp_path / "x", tiny_bert_dir, "sst2", sst2, distill=DistillConfig(str(tmp_path / "teacher")))
        )


def test_the_benchmark_harness_passes_init_from_and_the_teacher_on():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import methods

    args = methods.parse_args(
        ["--tasks", "rte", "--init-from", "runs/mtl", "--teacher", "runs/ft", "--distill-alpha", "0.3"]
    )
    assert methods.staged(args) == {"init_from": "runs/mtl", "distill": DistillConfig("runs/ft", 0.3, 2.0)}
    assert methods.staged(methods.parse_args(["--tasks", "rte"])) == {"init_from": None, "distill": None}


def test_distillation_keeps_the_frozen_layers_output(sst2, teacher, tiny_bert_dir, tmp_path, caches):
    """--prefix-layers top:1 with a teacher: the student's cache and the teacher's logits both computed once."""
    from test_activation_cache import same_history

    def run(out, cache: bool) -> dict:
        train = TrainConfig(epochs=2, lr=1e-2, batch_size=4, activation_cache=cache)
        method = method_config("ptv2", prompt_length=3, prefix_layers="top:1")
        config = DistillConfig(str(teacher), alpha=0.5)
        return pipeline.train(
            pipeline.TrainRequest(
                task="sst2",
                data=str(sst2),
                output=out,
                model=str(tiny_bert_dir),
                method=method,
                train=train,
                max_length=32,
                distill=config,
            )
        )

    kept, plain = run(tmp_path / "kept", True), run(tmp_path / "plain", False)
    same_history(kept, plain)
    assert kept["activation_cache"]["computed"] == 16 + 8 and kept["activation_cache"]["reused"] > 0
    assert [cache.forward_calls for cache in caches] == [4, 4]  # the first epoch's batches, in each run
