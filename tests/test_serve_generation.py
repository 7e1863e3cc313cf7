"""``POST /v1/generate``: rows of different generation prompts decode in one batch, as each does alone."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import save_artifact_of
from gen_fixtures import save_tiny_decoder

from ptuning import artifact, backbones, pipeline
from ptuning.decoding import DecodingConfig
from ptuning.encoders import Encoder
from ptuning.method import method_config
from ptuning.model import PTuningModel
from ptuning.tasks import get_task

E2E = [{"mr": "name good , food bad"}, "name fine , area poor , food dull", {"mr": "area the"}]
DIALOGUE = [{"dialogue": "good movie , bad plot"}, {"dialogue": "the end"}]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny matrices run faster on one thread


def make_generation_artifact(directory, model_dir, task_name: str, method: str, P: int, seed: int):
    """A random (untrained) prompt on the tiny decoder: equality tests need no training."""
    backbone, _, name = backbones.load_backbone(str(model_dir), lm_head=True)
    task = get_task(task_name)
    encoder = Encoder(backbone)
    torch.manual_seed(seed)
    model = PTuningModel(encoder, method_config(method, prompt_length=P), task.head_for(encoder, "last"))
    with torch.no_grad():
        for p in model.method.parameters():
            p.normal_(std=1.0)
    save_artifact_of(directory, model, task, name, backbone, 64, "last")
    return directory


@pytest.fixture(scope="module")
def generation_artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen-artifacts")
    model_dir = save_tiny_decoder(root / "decoder", "llama")
    return {
        "e2e": make_generation_artifact(root / "e2e", model_dir, "e2e", "ptv2", 5, 1),
        "dialogsum": make_generation_artifact(root / "ds", model_dir, "dialogsum", "ptv2", 2, 2),
        "soft": make_generation_artifact(root / "soft", model_dir, "e2e", "prompt-tuning", 3, 3),
    }


def alone(path, inputs, tmp_path, **decoding) -> list[dict]:
    """What ``ptuning generate`` writes for ``inputs`` one at a time (the artifact's own model, no pool)."""
    rows = []
    for i, value in enumerate(inputs):
        source = tmp_path / f"in{i}.jsonl"
        task = get_task(artifact.read_meta(path)["task"]["name"])
        value = value if isinstance(value, dict) else {task.source_column: value}
        source.write_text(json.dumps(value) + "\n")
        pipeline.generate(path, source, tmp_path / f"out{i}.jsonl", {"max_new_tokens": 6, **decoding})
        rows.append(json.loads((tmp_path / f"out{i}.jsonl").read_text()))
    return rows


def test_generate_route_mixes_tasks_in_one_batch_and_equals_each_alone(generation_artifacts, tmp_path):
    from fastapi.testclient import TestClient

    from ptuning.serve.generation import generate_rows
    from ptuning.serve.pool import PromptPool
    from ptuning.serve.server import Limits, create_app

    pool = PromptPool.from_artifact(generation_artifacts["e2e"])
    for name, path in generation_artifacts.items():
        pool.load(path, name)
    rows = [("e2e", e) for e in E2E] + [("dialogsum", d) for d in DIALOGUE] + [("soft", E2E[0])]
    prepared = [pool.prepare(name, value) for name, value in rows]
    mixed = generate_rows(pool, prepared, DecodingConfig(max_new_tokens=6, num_beams=2))
    expected = (
        alone(generation_artifacts["e2e"], E2E, tmp_path, num_beams=2)
        + alone(generation_artifacts["dialogsum"], DIALOGUE, tmp_path, num_beams=2)
        + alone(generation_artifacts["soft"], E2E[:1], tmp_path, num_beams=2)
    )
    assert mixed == expected
    assert mixed[0] != mixed[5]  # the two e2e prompts (deep, input-level) differ: the prompt is used
    with TestClient(create_app(pool, Limits(max_inputs=8))) as client:
        answer = client.post("/v1/generate", json={"task": "e2e", "inputs": E2E, "max_new_tokens": 6, "num_beams": 2})
        assert answer.status_code == 200 and answer.json()["outputs"] == expected[:3]
        bad = client.post("/v1/generate", json={"task": "e2e", "inputs": E2E, "top_p": 3})
        assert bad.status_code == 422 and "top_p" in bad.json()["error"]
        missing = client.post("/v1/generate", json={"task": "nope", "inputs": E2E})
        assert missing.status_code == 404
        wrong = client.post("/v1/generate", json={"task": "e2e", "inputs": [{"dialogue": "x"}]})
        assert wrong.status_code == 422 and "'mr'" in wrong.json()["error"]
        predicted = client.post("/v1/predict", json={"task": "e2e", "inputs": E2E[:1]})  # was a 500
        assert predicted.status_code == 422 and "/v1/generate" in predicted.json()["error"]


def test_the_python_api_generates_for_a_generation_artifact(generation_artifacts, tmp_path):
    """``ptuning.load(path).predict`` decodes (it read the head's logits before, which fails on texts)."""
    import ptuning

    predictor = ptuning.load(generation_artifacts["e2e"])
    got = predictor.predict([{"mr": E2E[0]["mr"]}])
    assert got == alone(generation_artifacts["e2e"], E2E[:1], tmp_path, max_new_tokens=64)
