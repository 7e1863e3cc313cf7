"""``--optimizer cma``: Black-Box Tuning's forward-only prompt search, and the server's scoring route."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from conftest import tiny_backbone

from ptuning import artifact, backbones, pipeline
from ptuning.errors import PTuningError
from ptuning.heads import SequenceClassificationHead
from ptuning.loop import TrainConfig
from ptuning.method import method_config
from ptuning.model import PTuningModel
from ptuning.search import CmaUpdate, SearchSpace, candidate_loss

pytest.importorskip("cma")


def tiny_model(method: str = "ptv2") -> PTuningModel:
    torch.manual_seed(0)
    head = SequenceClassificationHead(32, 2, "mean")
    return PTuningModel(tiny_backbone("bert"), method_config(method, prompt_length=4), head)


def toy_batch(n: int = 32):
    """Label 1 iff the input holds token 7: learnable by a prompt and a head, not by chance."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 128, (n, 10), generator=generator)
    labels = torch.arange(n) % 2
    ids[labels == 1, 3] = 7
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def test_search_space_starts_at_theta0_and_moves_each_block_at_its_scale():
    model = tiny_model()
    start = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    space = SearchSpace.for_model(model, dim=200, sigma=0.5, seed=1)
    assert space.size == sum(p.numel() for p in start)  # the prefix table and the head, nothing else
    space.set(torch.randn(200, generator=torch.Generator().manual_seed(2)).numpy() * 0.5)  # z ~ N(0, sigma^2)
    prefix, weight, bias = [p.detach() for p in model.parameters() if p.requires_grad]
    assert (prefix - start[0]).std().item() == pytest.approx(model.method.search_scale(), rel=0.15)  # 1.0
    assert (weight - start[1]).std().item() == pytest.approx(1 / math.sqrt(32), rel=0.15)
    space.set([0.0] * 200)
    assert all(torch.equal(p, s) for p, s in zip([prefix, weight, bias], start, strict=True))


@pytest.mark.parametrize("method", ["ptv2", "prompt-tuning"])
def test_cma_decreases_the_training_loss_with_forward_passes_only(method):
    from accelerate import Accelerator

    model = tiny_model(method)
    config = TrainConfig(optimizer="cma", cma_dim=40, cma_popsize=8, cma_sigma=1.0, seed=0)
    update = CmaUpdate(model, config, n_features=32)
    accelerator = Accelerator(cpu=True)
    prepared = update.prepare(accelerator, model)
    batch = toy_batch()
    labels = batch.pop("labels")
    loss_fn = torch.nn.functional.cross_entropy
    before = float(candidate_loss(prepared, update.space, [0.0] * 40, batch, labels, loss_fn))
    update.space.set(update.strategy.mean)
    start = [p.detach().clone() for p in update.space.params]
    for _ in range(12):
        update.step(accelerator, prepared, model, dict(batch), labels, loss_fn)
    after = float(candidate_loss(prepared, update.space, update.strategy.mean, batch, labels, loss_fn))
    assert after < 0.95 * before, (before, after)  # measured: ptv2 0.75 -> 0.62, prompt-tuning 0.76 -> 0.68
    assert all(p.grad is None for p in model.parameters())  # no backward pass ever ran
    assert any(not torch.equal(p, s) for p, s in zip(update.space.params, start, strict=True))
    assert all(not p.requires_grad or p.dtype == torch.float32 for p in model.parameters())


def cma_request(data, out, model_dir, method="ptv2", **train_kw):
    return pipeline.TrainRequest(
        task="sst2",
        data=str(data),
        output=out,
        model=str(model_dir),
        method=method_config(method, strict=False, prompt_length=4),
        train=TrainConfig(
            **{"epochs": 2, "batch_size": 16, "optimizer": "cma", "cma_dim": 20, "cma_popsize": 4, **train_kw}
        ),
        max_length=32,
        pooling="mean",
    )


def test_cma_run_saves_an_artifact_that_loads(tmp_path, sst2_dir, tiny_bert_dir):
    out = tmp_path / "cma"
    summary = pipeline.train(cma_request(sst2_dir, out, tiny_bert_dir))
    assert summary["stopped_by"] == "epochs" and summary["steps"] == 2 * 4  # 64 examples, batch 16
    assert summary["config"]["optimizer"] == "cma" and summary["config"]["lr"] is None
    assert not (out / "checkpoint").exists()  # CMA-ES's state is not checkpointed
    assert yaml.safe_load((out / "config.yaml").read_text())["lr"] is None  # --config config.yaml is accepted
    evaluated = pipeline.evaluate(out, str(sst2_dir))
    assert evaluated["accuracy"] == pytest.approx(summary["best"]["accuracy"])
    assert json.loads((out / "ptuning.json").read_text())["method"]["method"] == "ptv2"


def test_cma_with_top_layers_prompts_runs_candidates_from_the_activation_cache(tmp_path, sst2_dir, tiny_bert_dir):
    """--prefix-layers top:1 on a 2-layer BERT: after the first pass, every candidate runs the top layer only."""
    request = cma_request(sst2_dir, tmp_path / "top", tiny_bert_dir)
    request.method = method_config("ptv2", prompt_length=4, prefix_layers="top:1")
    summary = pipeline.train(request)
    cache = summary["activation_cache"]
    assert cache["used"] and cache["layers_cached"] == 1
    assert cache["reused"] > cache["computed"]  # 4 candidates per batch (and evaluations) read what one pass kept
    assert pipeline.evaluate(tmp_path / "top", str(sst2_dir))["accuracy"] == pytest.approx(summary["best"]["accuracy"])


def test_cma_refusals_are_one_line_errors(tmp_path, sst2_dir, tiny_bert_dir, monkeypatch):
    with pytest.raises(PTuningError, match="--method finetune declares none"):
        pipeline.train(cma_request(sst2_dir, tmp_path / "ft", tiny_bert_dir, method="finetune"))
    assert not (tmp_path / "ft").exists()
    for flag, settings in (("--lr", {"lr": 0.1}), ("--resume", {"resume": True}), ("--grad-accum", {"grad_accum": 2})):
        with pytest.raises(PTuningError, match=f"{flag} does not apply to --optimizer cma"):
            TrainConfig(optimizer="cma", **settings)
    with pytest.raises(PTuningError, match="--cma-popsize must be at least 2"):
        TrainConfig(optimizer="cma", cma_popsize=1)
    monkeypatch.setitem(__import__("sys").modules, "cma", None)  # as if it were not installed
    with pytest.raises(PTuningError, match="needs the cma package"):
        pipeline.train(cma_request(sst2_dir, tmp_path / "nocma", tiny_bert_dir))


@pytest.fixture
def scored(tmp_path, tiny_bert_dir):
    """A server with the scoring route over one ptv2 artifact (random prompt and head), and the artifact."""
    from fastapi.testclient import TestClient

    from ptuning.serve.pool import PromptPool
    from ptuning.serve.server import create_app
    from ptuning.serve.tokens import Tokens
    from ptuning.tasks import get_task

    backbone, _, name = backbones.load_backbone(str(tiny_bert_dir))
    torch.manual_seed(5)
    model = PTuningModel(backbone, method_config("ptv2", prompt_length=3), get_task("sst2").build_head(32, "mean"))
    out = tmp_path / "sst2"
    artifact.save_artifact(
        out, model, task=get_task("sst2"), backbone_name=name, backbone_fingerprint=backbones.fingerprint(backbone),
        max_length=32, pooling="mean",
    )  # fmt: skip
    pool = PromptPool.from_artifact(out)
    pool.load(out, "sst2")
    local = TestClient(create_app(pool, scoring=True), client=("127.0.0.1", 40000))
    remote = TestClient(create_app(pool, scoring=True))  # starlette's default client host is not loopback
    off = TestClient(create_app(pool), client=("127.0.0.1", 40000))
    admin = TestClient(create_app(pool, tokens=Tokens(admin="a" * 16), scoring=True))  # any host, with the token
    return local, remote, off, admin, out


def test_score_route_gives_the_local_loss_of_a_candidate(scored):
    local, remote, off, admin, out = scored
    inputs, labels = ["good film", "a dull and weak plot", "superb cast"], ["1", "0", "1"]
    z = torch.randn(16, generator=torch.Generator().manual_seed(3)).tolist()
    body = {"task": "sst2", "inputs": inputs, "labels": labels, "z": z, "dim": 16, "sigma": 0.5, "seed": 7}
    answer = local.post("/v1/score", json=body)
    assert answer.status_code == 200, answer.text
    model, tokenizer, task, meta = artifact.load_artifact(out)  # the same computation, without the server
    space = SearchSpace.for_model(model, dim=16, sigma=0.5, seed=7)
    examples = [task.example_from_input(v) for v in inputs]
    for example, label in zip(examples, labels, strict=True):
        example.label = label
    batch = task.collator(tokenizer)(task.featurize(examples, tokenizer, 32).features)
    expected = candidate_loss(model.eval(), space, z, batch, batch.pop("labels"), task.loss)
    assert answer.json()["loss"] == pytest.approx(float(expected), abs=1e-5)
    unmoved = local.post("/v1/score", json={**body, "z": None}).json()["loss"]
    assert unmoved != pytest.approx(answer.json()["loss"])  # z moves the prompt and head
    assert remote.post("/v1/score", json=body).status_code == 403
    assert off.post("/v1/score", json=body).status_code == 404
    assert admin.post("/v1/score", json=body).status_code == 401  # the server has an admin token: it is needed
    with_token = admin.post("/v1/score", json=body, headers={"Authorization": "Bearer " + "a" * 16})
    assert with_token.status_code == 200 and with_token.json()["loss"] == pytest.approx(answer.json()["loss"])
    for bad, status in (({"z": z[:3]}, 422), ({"labels": ["1"]}, 422), ({"task": "nope"}, 404), ({"sigma": -1}, 422)):
        answer = local.post("/v1/score", json={**body, **bad})
        assert answer.status_code == status and "error" in answer.json(), (bad, answer.text)
    assert local.post("/v1/score", json={**body, "labels": ["1", "0", "maybe"]}).status_code == 422


def test_search_vs_gradient_commands_are_valid_ptuning_train_commands(tmp_path, monkeypatch):
    """The harness's two command lines parse as `ptuning train` options and build a valid request each."""
    import argparse
    from pathlib import Path

    import typer

    from ptuning.cli import app
    from ptuning.runfile import request_from_options

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import search_vs_gradient as harness

    args = argparse.Namespace(data_root=tmp_path, minutes=2.0, lr=1e-2, cma_dim=500, cma_popsize=20, cma_batch_size=32)
    command = typer.main.get_command(app).commands["train"]
    for task in harness.TASKS:
        for method in harness.METHODS:
            argv = harness.command(task, method, 1, args, tmp_path / method)[4:]  # after python -m ptuning.cli train
            context = command.make_context("train", list(argv))
            request = request_from_options({**context.params, "output": Path(context.params["output"])})
            assert request.task == task and request.train.max_minutes == 2.0 and request.method.prompt_length == 20
            assert request.train.optimizer == ("cma" if method.endswith("cma") else "adamw")
