"""The server under abuse: hostile bodies get JSON 4xx (counted), management needs a token, docs work offline."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys

import pytest
from test_serve import ADMIN, AUTH, INPUTS

from ptuning.errors import PTuningError
from ptuning.serve.pool import LoadLimits, PromptPool
from ptuning.serve.server import Limits, create_app
from ptuning.serve.tokens import Tokens

PREDICT = "prediction-token-for-tests-0123"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, tiny_bert_dir):
    from test_serve import make_artifact

    root = tmp_path_factory.mktemp("guard")
    return {
        "sst2": make_artifact(root / "sst2", tiny_bert_dir, "sst2", "ptv2", 6, 1),
        "cb": make_artifact(root / "cb", tiny_bert_dir, "cb", "ptv2", 3, 2),
        "long": make_artifact(root / "long", tiny_bert_dir, "sst2", "ptv2", 40, 3),
    }


def client_for(paths, tokens: Tokens, limits: LoadLimits | None = None):
    from fastapi.testclient import TestClient

    pool = PromptPool.from_artifact(paths["sst2"], limits=limits)
    pool.load(paths["sst2"], "sst2")
    pool.load(paths["cb"], "cb")
    return TestClient(create_app(pool, Limits(max_body_bytes=200_000, max_input_chars=500), tokens))


HOSTILE = [
    b"[" * 50_000,  # main: RecursionError, a plain-text 500
    b'{"task": "sst2", "inputs": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
    b'{"task": "sst2", "inputs": [' + b'{"a": ' * 100 + b"1" + b"}" * 100 + b"]}",
    b'{"task": "sst2", "inputs": [NaN]}',
    b'{"task": "sst2", "inputs": [Infinity]}',
    b'{"task": "sst2", "inputs": [' + b"9" * 5000 + b"]}",  # over Python's integer digit limit
    b'{"task": "sst2", "inputs": ["\xff\xfe"]}',
    b"",
    b"null",
    b"12",
    b'{"task": ["sst2"], "inputs": ["x"]}',
    b'{"task": "' + b"x" * 100_000 + b'", "inputs": ["x"]}',
    b'{"task": "sst2", "inputs": [null, true, 1.5, {}]}',
    b'{"task": "sst2", "inputs": [["a", "b", "c"]]}',
    b'{"task": "cb", "inputs": [{"premise": 1, "hypothesis": ["x"]}]}',
    b'{"task": "cb", "inputs": [{"premise": "a"}]}',
    b'{"task": "cb", "inputs": [["a", {"b": "c"}]]}',
    b'{"task": "sst2", "inputs": ["   "]}',
    b'{"task": "__proto__", "inputs": ["x"]}',
]


@pytest.mark.parametrize("body", HOSTILE, ids=lambda b: repr(b[:30]))
def test_hostile_bodies_get_a_json_4xx(guarded, body):
    with client_for(guarded, Tokens(admin=ADMIN)) as client:
        response = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
        assert 400 <= response.status_code < 500, response.text[:300]
        message = response.json()["error"]
        assert "\n" not in message and len(message) < 400
        metrics = client.get("/metrics").text
        assert f'ptuning_requests_total{{path="/v1/predict",status="{response.status_code}"}} 1' in metrics


def test_every_error_path_is_json_and_counted(guarded):
    with client_for(guarded, Tokens(admin=ADMIN)) as client:
        answers = [
            client.get("/nowhere"),
            client.put("/v1/predict"),
            client.delete("/v1/tasks/" + "x" * 300, headers=AUTH),
            client.post("/v1/tasks", content=b"[" * 50_000, headers=AUTH),
            client.post("/v1/tasks", json={"path": "/dev/null\x00"}, headers=AUTH),
            client.post("/v1/tasks", json={"path": "/etc/passwd"}, headers=AUTH),
        ]
        assert [a.status_code for a in answers] == [404, 405, 404, 400, 422, 400]
        assert all(isinstance(a.json()["error"], str) for a in answers)
        counted = sum(
            int(line.rsplit(" ", 1)[1])
            for line in client.get("/metrics").text.splitlines()
            if line.startswith("ptuning_requests_total{") and 'status="4' in line
        )
        assert counted == len(answers)


def test_management_is_off_without_an_admin_token(guarded):
    with client_for(guarded, Tokens()) as client:
        for response in (
            client.post("/v1/tasks", json={"path": str(guarded["long"])}),
            client.delete("/v1/tasks/sst2"),
        ):
            assert response.status_code == 403 and "--admin-token or PTUNING_ADMIN_TOKEN" in response.json()["error"]
        assert {t["name"] for t in client.get("/v1/tasks").json()["tasks"]} == {"sst2", "cb"}
        assert client.post("/v1/predict", json={"task": "sst2", "inputs": ["good"]}).status_code == 200


def test_management_needs_the_admin_token_compared_in_constant_time(guarded, caplog, monkeypatch):
    import hmac

    from ptuning.serve import tokens as token_module

    compared, real = [], hmac.compare_digest
    monkeypatch.setattr(token_module.hmac, "compare_digest", lambda a, b: compared.append(len(b)) or real(a, b))
    load = {"path": str(guarded["long"]), "name": "long"}
    with client_for(guarded, Tokens(admin=ADMIN)) as client, caplog.at_level(logging.WARNING, "ptuning.serve"):
        missing = client.post("/v1/tasks", json=load)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        wrong = client.post("/v1/tasks", json=load, headers={"Authorization": "Bearer " + "x" * len(ADMIN)})
        assert wrong.status_code == 403 and wrong.json() == {"error": "wrong admin token"}
        assert client.delete("/v1/tasks/sst2", headers={"Authorization": "Basic abc"}).status_code == 401
        assert "path" not in client.get("/v1/tasks").json()["tasks"][0]
        assert client.post("/v1/tasks", json=load, headers=AUTH).status_code == 201
        assert "path" in client.get("/v1/tasks", headers=AUTH).json()["tasks"][0]
        assert client.delete("/v1/tasks/long", headers=AUTH).status_code == 200
    assert compared and all(n == len(ADMIN) for n in compared)
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused")]
    assert len(refusals) == 3 and all("from testclient" in r for r in refusals)
    assert not any("x" * len(ADMIN) in r.getMessage() for r in caplog.records), "a presented token was logged"


def test_prediction_takes_its_own_optional_token(guarded):
    with client_for(guarded, Tokens(admin=ADMIN, predict=PREDICT)) as client:
        body = {"task": "sst2", "inputs": ["good"]}
        assert client.post("/v1/predict", json=body).status_code == 401
        assert client.post("/v1/predict", json=body, headers={"Authorization": "Bearer nope"}).status_code == 403
        assert client.post("/v1/predict", json=body, headers={"Authorization": f"Bearer {PREDICT}"}).status_code == 200
        assert client.post("/v1/predict", json=body, headers=AUTH).status_code == 200
    with pytest.raises(PTuningError, match="too short"):
        Tokens(admin="short")


def test_loading_over_a_limit_is_refused_with_413(guarded):
    with client_for(guarded, Tokens(admin=ADMIN), LoadLimits(max_prompt_length=32)) as client:
        response = client.post("/v1/tasks", json={"path": str(guarded["long"])}, headers=AUTH)
        assert response.status_code == 413 and "prompt length 40 is over the limit of 32" in response.json()["error"]
        assert "long" not in {t["name"] for t in client.get("/v1/tasks").json()["tasks"]}


def test_docs_are_served_without_any_external_url(guarded):
    with client_for(guarded, Tokens()) as client:
        for page in ("/docs", "/redoc"):
            html = client.get(page).text
            assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", html), f"{page} loads from outside: {html}"
            assets = re.findall(r"""(?:src|href)=["']?(/[^"' >]+)""", html)
            assert any(a.endswith(".js") for a in assets), html
            for asset in assets:
                response = client.get(asset)
                assert response.status_code == 200 and len(response.content) > 1000, asset
        assert "/v1/predict" in client.get("/openapi.json").json()["paths"]


def test_serve_refuses_a_task_name_given_twice(guarded):
    """``serve out/sst2 sst2=out/cb``: main served the second under the first's name and dropped the first."""
    result = subprocess.run(
        [sys.executable, "-m", "ptuning.cli", "serve", str(guarded["sst2"]), f"sst2={guarded['cb']}", "--port", "0"],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: task name 'sst2' is given twice ({guarded['sst2']} and {guarded['cb']}); name them apart: NAME=PATH"
    ]


def test_inputs_are_validated_before_they_reach_the_model(guarded):
    """A row the task cannot read never joins a batch: the other requests of that batch are untouched."""
    with client_for(guarded, Tokens()) as client:
        pool = client.app.state.pool
        seen = []
        real = pool.predict_prepared
        pool.predict_prepared = lambda rows: seen.append(len(rows)) or real(rows)
        bad = client.post("/v1/predict", json={"task": "cb", "inputs": [INPUTS["cb"][0], {"premise": 1}]})
        assert bad.status_code == 422 and bad.json()["error"].startswith("input 1:")
        assert seen == []
        assert client.post("/v1/predict", json={"task": "cb", "inputs": INPUTS["cb"]}).status_code == 200
        assert seen == [2]
        assert json.loads(client.get("/healthz").text) == {"status": "ok", "tasks": 2}
