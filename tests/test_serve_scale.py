"""The pool at scale: padding-aware sub-batches (measured cost model), load limits, duplicate names, run-time loads."""

from __future__ import annotations

import threading
import time

import pytest
from test_serve import INPUTS, make_artifact, single_task

from ptuning.errors import PTuningError
from ptuning.serve.plan import CALIBRATION_GRID, CostModel, Unit, plan
from ptuning.serve.pool import DuplicateTask, LoadLimitExceeded, LoadLimits, PromptPool

LONG = 2000  # prompt slots (the most a method allows is 2048): far more than any input of the tiny model (64)


@pytest.fixture(scope="module")
def prompts(tmp_path_factory, tiny_bert_dir):
    root = tmp_path_factory.mktemp("scale")
    return {
        "short": make_artifact(root / "short", tiny_bert_dir, "sst2", "ptv2", 4, 11),
        "other": make_artifact(root / "other", tiny_bert_dir, "sst2", "ptv2", 6, 12),
        "cb": make_artifact(root / "cb", tiny_bert_dir, "cb", "ptv2", 3, 13),
        "long": make_artifact(root / "long", tiny_bert_dir, "sst2", "ptv2", LONG, 14),
    }


def spy_forwards(pool: PromptPool) -> list[tuple[int, int]]:
    """Record ``(rows, prefix slots)`` of every backbone forward the pool runs."""
    calls: list[tuple[int, int]] = []
    real = pool.encoder.forward

    def forward(input_ids, attention_mask, token_type_ids=None, prompt=None):
        slots = prompt.prefix.length if prompt is not None and prompt.prefix is not None else 0
        calls.append((input_ids.shape[0], slots))
        return real(input_ids, attention_mask, token_type_ids, prompt)

    pool.encoder.forward = forward
    return calls


def test_a_long_prompt_no_longer_pads_the_short_ones(prompts):
    """One P=2000 prompt beside P<=6 ones: on main every row of a mixed batch was padded to 2000 slots."""
    pool = PromptPool.from_artifact(prompts["short"], limits=LoadLimits(max_prompt_length=LONG))
    for name, path in prompts.items():
        pool.load(path, name)
    pool.calibrate()  # measured on this machine, with this backbone
    inputs_of = {"short": INPUTS["sst2"] * 4, "other": INPUTS["sst2"] * 4, "cb": INPUTS["cb"] * 4, "long": ["good"]}
    keyed = [(name, i, v) for name, values in inputs_of.items() for i, v in enumerate(values)]
    keyed = keyed[::2] + keyed[1::2]  # interleave tasks
    calls = spy_forwards(pool)
    pool.predict([("short", pool.to_example("short", "good")), ("cb", pool.to_example("cb", INPUTS["cb"][0]))])
    assert calls == [(2, 4)], f"rows of short prompts only are padded to their own longest prompt: {calls}"
    calls.clear()
    got = pool.predict([(name, pool.to_example(name, v)) for name, _, v in keyed])
    long_forwards = [rows for rows, slots in calls if slots == LONG]
    assert long_forwards == [1], f"the long prompt's forward holds other rows: {calls}"
    assert sum(rows for rows, _ in calls) == len(keyed) and all(slots <= 6 for _, slots in calls if slots != LONG)
    expected = {name: single_task(prompts[name], values) for name, values in inputs_of.items()}
    for (name, i, _), prediction in zip(keyed, got, strict=True):
        for label, score in expected[name][i]["scores"].items():
            assert abs(prediction["scores"][label] - score) < 1e-5


def test_the_long_prompt_is_not_loaded_by_default(prompts):
    pool = PromptPool.from_artifact(prompts["short"])
    with pytest.raises(LoadLimitExceeded, match="prompt length 2000 is over the limit of 512"):
        pool.load(prompts["long"])
    with pytest.raises(LoadLimitExceeded, match="over the limit of 1,000"):
        PromptPool.from_artifact(prompts["short"], limits=LoadLimits(max_artifact_bytes=1000)).load(prompts["short"])
    with pytest.raises(PTuningError, match="must be positive"):
        LoadLimits(max_prompt_length=0)
    assert pool.prompts == {}


def test_a_duplicate_name_is_refused_not_replaced(prompts):
    pool = PromptPool.from_artifact(prompts["short"])
    pool.load(prompts["short"], "sentiment")
    with pytest.raises(DuplicateTask, match="'sentiment' is already loaded"):
        pool.load(prompts["other"], "sentiment")
    assert pool.get("sentiment").path == str(prompts["short"])


def test_cost_model_fit_recovers_known_coefficients_and_stays_non_negative():
    truth = CostModel(fixed=2e-3, per_token=3e-5, attention=1e-8, prefix=4e-7)
    points = [(b, n, p, truth.seconds(b, n, p)) for b, n, p in CALIBRATION_GRID]
    fitted = CostModel.fit(points)
    for name in ("fixed", "per_token", "attention", "prefix"):
        assert getattr(fitted, name) == pytest.approx(getattr(truth, name), rel=1e-6)
    assert fitted.fit_error < 1e-6
    noisy = CostModel.fit([(b, n, p, 1e-3 * (1 + 0.01 * (i % 3))) for i, (b, n, p) in enumerate(CALIBRATION_GRID)])
    assert min(noisy.fixed, noisy.per_token, noisy.attention, noisy.prefix) >= 0


def test_plan_splits_only_when_padding_costs_more_than_a_forward():
    cost = CostModel(fixed=5e-3, per_token=1e-5, attention=0.0, prefix=1e-6)
    uniform = [Unit(20, 20)] * 100
    assert sorted(len(b) for b in plan(uniform, cost, 64)) == [36, 64]
    mixed = [Unit(20, 20)] * 30 + [Unit(20, 5000)]
    batches = plan(mixed, cost, 64)
    assert sorted(len(b) for b in batches) == [1, 30] and [30] in batches  # the long prompt's row alone
    slight = [Unit(20, 20)] * 30 + [Unit(20, 24)]  # 4 slots of padding for 30 rows: cheaper than a forward
    assert [len(b) for b in plan(slight, cost, 64)] == [31]
    lengths = [Unit(8, 0)] * 40 + [Unit(300, 0)] * 2  # long inputs split off too
    assert sorted(len(b) for b in plan(lengths, CostModel(5e-3, 1e-5, 1e-7, 0.0), 64)) == [2, 40]
    assert plan([], cost, 64) == []


def test_a_load_at_run_time_reads_its_files_without_holding_the_model(prompts, monkeypatch):
    """While an artifact's files are read and verified, forwards go on; the model lock is taken only to insert."""
    from ptuning import artifact

    pool = PromptPool.from_artifact(prompts["short"])
    pool.load(prompts["short"], "short")
    pool.calibrate(repeats=1)
    reading, release = threading.Event(), threading.Event()
    real = artifact.read_verified

    def slow_read(*args, **kwargs):
        reading.set()
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(artifact, "read_verified", slow_read)
    loader = threading.Thread(target=pool.load, args=(prompts["other"], "other"))
    loader.start()
    assert reading.wait(30)
    started = time.perf_counter()
    pool.predict([("short", pool.to_example("short", "good film"))])  # not blocked by the load in flight
    assert time.perf_counter() - started < 10
    release.set()
    loader.join(30)
    assert set(pool.prompts) == {"short", "other"}
