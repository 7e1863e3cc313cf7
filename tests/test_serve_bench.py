"""The serving benchmark's own pieces: its hostile requests against the app, its report section."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))


def test_every_hostile_request_of_the_benchmark_gets_a_json_4xx(tmp_path, tiny_bert_dir):
    """The 10,000-request run's goal (no 5xx), checked in-process on every kind of request it sends."""
    from fastapi.testclient import TestClient
    from serve_http import ADMIN, HOSTILE
    from test_serve import make_artifact

    from ptuning.serve.pool import PromptPool
    from ptuning.serve.server import create_app
    from ptuning.serve.tokens import Tokens

    path = make_artifact(tmp_path / "cb", tiny_bert_dir, "cb", "ptv2", 3, 1)
    pool = PromptPool.from_artifact(path)
    pool.load(path, "t0")
    with TestClient(create_app(pool, tokens=Tokens(admin=ADMIN))) as client:
        for method, route, body, headers in HOSTILE:
            response = client.request(method, route, content=body, headers=headers)
            assert 400 <= response.status_code < 500, (route, body[:40], response.status_code, response.text[:200])
            assert isinstance(response.json()["error"], str)
        assert {t["name"] for t in client.get("/v1/tasks").json()["tasks"]} == {"t0"}


def result(**changes) -> dict:
    timing = {
        "examples_per_s": 100.0,
        "p50_ms": 600.0,
        "p99_ms": 700.0,
        "batches": 10,
        "cost_model_predicted_ms": 550.0,
    }
    data = {
        "torch": "2.x",
        "threads": 2,
        "date": "2025-01-01",
        "quick": False,
        "batch": 64,
        "inputs": "pairs",
        "input_tokens": {"mean": 80.0, "median": 70, "max": 256},
        "cost_model": {
            "fixed": 2e-3,
            "per_token": 3e-5,
            "attention": 1e-8,
            "prefix": 4e-7,
            "fit_error": 0.05,
            "calibration_s": 1.2,
        },
        "throughput": {
            "tasks_1": timing,
            "tasks_8": timing,
            "tasks_64": {**timing, "examples_per_s": 96.0},
            "plain_backbone": timing,
            "ratio_64_over_1": 0.96,
            "ratio_8_over_1": 1.0,
            "prefix20_time_over_plain": 1.0,
        },
        "anchor": {
            "mixed": {"examples_per_s": 100.0, "batches": 16},
            "per_task": {"examples_per_s": 80.0, "batches": 128},
            "fifo": {"examples_per_s": 50.0, "batches": 900},
            "mixed_over_per_task": 1.25,
            "mixed_over_fifo": 2.0,
            "requests": 1024,
            "window": 64,
            "tasks": 8,
            "memory_mb": {"ours_8_tasks_rss": 700.0, "finetuned_8_models_rss": 1200.0},
        },
        "memory": {
            "P8": {
                "prompts": 1000,
                "prompt_length": 8,
                "backbone_only_mb": 500.0,
                "loaded_mb": 650.0,
                "ratio": 1.3,
                "rss_per_prompt_kb": 150.0,
                "bytes_per_prompt": 151306,
                "load_ms_median": 5.0,
                "load_ms_p99": 9.0,
            },
        },
        "load_pause": {
            "batch_rows": 64,
            "batch_ms_median": 600.0,
            "quiet_max_gap_ms": 650.0,
            "churn_max_gap_ms": 700.0,
            "loads": 50,
            "unloads": 50,
            "load_ms_median": 6.0,
            "worst_pause_in_batches": 0.17,
        },
        "http": {
            "calibration": "measured the batching cost model in 1.0 s",
            "tasks": 8,
            "clean": {"requests": 2000, "clients": 32, "requests_per_s": 50.0, "p50_ms": 600.0, "p99_ms": 1500.0}
            | {"p99_over_p50": 2.5, "statuses": {"200": 2000}, "server_batches": 70, "mean_batch_rows": 28.6}
            | {"mean_batch_ms": 500.0},
            "hostile": {"requests": 10000, "requests_per_s": 70.0, "p50_ms": 400.0, "p99_ms": 900.0}
            | {"statuses": {"200": 6666, "400": 3334}, "malformed_or_hostile": 3334, "five_xx": 0},
            "server_counted_requests": 12064,
        },
    }
    data.update(changes)
    return data


def test_the_serving_section_marks_each_goal_met_or_missed(tmp_path, monkeypatch):
    import json

    import report_runs
    from report_serve import serve

    monkeypatch.setattr(report_runs, "RESULTS", tmp_path)
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "serve.json").write_text(json.dumps(result()))
    text = serve()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    marks = {
        key: row.rstrip(" |").rsplit("| ", 1)[-1]
        for key, row in rows.items()
        if row.endswith(("met |", "**missed** |"))
    }
    assert list(marks.values()) == ["met", "**missed**", "met", "**missed**", "met", "met"]
    assert "1.25×" in text and "2.50 (1500 / 600 ms)" in text and "1,000 prompts (P=8)" in text
    assert "Quick mode" not in text


def test_a_quick_run_is_shown_as_a_smoke_test_until_the_full_run_exists(tmp_path, monkeypatch):
    import json

    import report_runs
    from report_serve import serve

    monkeypatch.setattr(report_runs, "RESULTS", tmp_path)
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "serve-quick.json").write_text(json.dumps(result(quick=True)))
    assert serve().startswith("## Serving many prompts") and "Quick mode: smoke-test sizes" in serve()
    (tmp_path / "cpu" / "serve.json").write_text(json.dumps(result()))
    assert "Quick mode" not in serve()
