"""The worker's request headers (deadline, correlation id), chat requests and slots,
through its real app and the torch backend on the tiny model."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rbee_worker.app import create_app
from rbee_worker.backends.torch_backend import TorchBackend
from rbee_worker.loading import BackendHolder
from tests.test_worker_sampling import CHAT_TEMPLATE
from tests.test_worker_server import events_of, kill_group, spawn_worker, wait_until_healthy


def parse(text: str) -> list[Any]:
    return [
        line[6:] if line == "data: [DONE]" else json.loads(line[6:])
        for line in text.split("\n")
        if line.startswith("data: ")
    ]


@pytest.fixture(scope="module")
def chat_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model_dir = Path(shutil.copytree(tiny_model_dir, tmp_path_factory.mktemp("m") / "chat"))
    (model_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return model_dir


async def client_for(model_dir: Path, slots: int = 1) -> AsyncIterator[httpx.AsyncClient]:
    holder = BackendHolder(TorchBackend(model_dir, "cpu"))
    holder.load()
    transport = httpx.ASGITransport(app=create_app(holder, slots_total=slots))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        yield client


@pytest.fixture
async def plain(tiny_model_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for client in client_for(tiny_model_dir):
        yield client


@pytest.fixture
async def chat(chat_model: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for client in client_for(chat_model):
        yield client


def deadline_in(seconds: float) -> str:
    return str(int((time.time() + seconds) * 1000))


async def test_a_deadline_already_past_is_refused(plain: httpx.AsyncClient) -> None:
    response = await plain.post(
        "/v1/inference",
        json={"job_id": "late", "prompt": "hi"},
        headers={"x-request-deadline": deadline_in(-1), "x-correlation-id": "cid-late"},
    )
    assert response.status_code == 504
    error = response.json()["error"]
    assert (error["code"], error["correlation_id"]) == ("REQUEST_TIMEOUT", "cid-late")


async def test_a_deadline_that_passes_mid_stream_stops_generation(
    plain: httpx.AsyncClient,
) -> None:
    body = {"job_id": "slow", "prompt": "hi", "max_tokens": 2048, "temperature": 0}
    response = await plain.post(
        "/v1/inference", json=body, headers={"x-request-deadline": deadline_in(0.2)}
    )
    events = parse(response.text)
    assert events[-1] == "[DONE]"
    assert events[-2]["type"] == "error" and events[-2]["code"] == "REQUEST_TIMEOUT"
    tokens = [e for e in events if isinstance(e, dict) and e["type"] == "token"]
    assert 0 < len(tokens) < 2048


async def test_a_malformed_deadline_is_a_field_error(plain: httpx.AsyncClient) -> None:
    response = await plain.post(
        "/v1/inference",
        json={"job_id": "x", "prompt": "hi"},
        headers={"x-request-deadline": "soon"},
    )
    assert response.status_code == 400
    (field,) = response.json()["error"]["details"]["fields"]
    assert field["field"] == "X-Request-Deadline"


async def test_the_correlation_id_is_in_the_job_log_lines(
    plain: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rbee_worker")
    response = await plain.post(
        "/v1/inference",
        json={"job_id": "traced", "prompt": "hi", "max_tokens": 3},
        headers={"x-correlation-id": "abc123def"},
    )
    assert parse(response.text)[-2]["type"] == "end"
    job_lines = [r.getMessage() for r in caplog.records if "job traced" in r.getMessage()]
    assert len(job_lines) == 2  # started, finished
    assert all("cid=abc123def" in line for line in job_lines)


async def test_chat_messages_go_through_the_template(chat: httpx.AsyncClient) -> None:
    messages = [{"role": "user", "content": "Hello"}]
    body = {"job_id": "c1", "messages": messages, "max_tokens": 8, "temperature": 0}
    via_chat = parse((await chat.post("/v1/inference", json=body)).text)
    rendered = "<s><|user|>Hello\n<|assistant|>"
    body = {"job_id": "c2", "prompt": rendered, "max_tokens": 8, "temperature": 0}
    via_prompt = parse((await chat.post("/v1/inference", json=body)).text)
    assert via_chat[-2]["type"] == "end"
    assert via_chat[1:-2] == via_prompt[1:-2]  # the same tokens
    usage, expected = via_chat[-2]["usage"], via_prompt[-2]["usage"]
    assert usage["prompt_tokens"] == expected["prompt_tokens"] > 5


async def test_chat_on_a_model_without_a_template_is_a_clear_400(
    plain: httpx.AsyncClient,
) -> None:
    body = {"job_id": "c3", "messages": [{"role": "user", "content": "Hello"}]}
    response = await plain.post("/v1/inference", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "INVALID_REQUEST"
    (field,) = error["details"]["fields"]
    assert (field["field"], field["constraint"]) == ("messages", "chat_template")
    assert "has no chat template" in field["message"]


def test_a_worker_with_two_slots_runs_two_jobs_and_refuses_a_third(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    worker = spawn_worker(tiny_model_dir, tmp_path, "w-two", "--slots", "2")
    try:
        with httpx.Client(base_url=worker.url, timeout=10) as client:
            wait_until_healthy(client)
            long = {"prompt": "Hi", "max_tokens": 2048, "temperature": 0}
            with (
                client.stream("POST", "/v1/inference", json={"job_id": "a", **long}) as a,
                client.stream("POST", "/v1/inference", json={"job_id": "b", **long}) as b,
            ):
                first_a, first_b = events_of(a), events_of(b)
                next(first_a), next(first_b)
                assert next(first_a)["type"] == next(first_b)["type"] == "token"
                third = client.post("/v1/inference", json={"job_id": "c", "prompt": "Hi"})
                assert third.status_code == 503
                assert third.json()["error"]["details"] == {"slots_total": 2, "slots_busy": 2}
                ready = client.get("/v1/ready").json()
                assert (ready["slots_total"], ready["slots_busy"]) == (2, 2)
                client.delete("/v1/inference/a")
                client.delete("/v1/inference/b")
    finally:
        kill_group(worker)
