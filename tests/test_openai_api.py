"""The OpenAI-compatible surface, driven by the official `openai` client against a
real queen, a real sshd and workers on the tiny model (with a chat template)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.sshd import SshServer
from tests.test_worker_sampling import CHAT_TEMPLATE

HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def chat_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model_dir = Path(shutil.copytree(tiny_model_dir, tmp_path_factory.mktemp("m") / "tiny-chat"))
    (model_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return model_dir


@pytest.fixture(scope="module")
def queen(
    sshd: SshServer,
    chat_model: Path,
    tiny_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[QueenProcess]:
    root = tmp_path_factory.mktemp("openai")
    home = root / "home"
    home.mkdir()
    q = start_queen(home)
    try:
        with q.client() as c:
            body = sshd.node_body("n1", root / "install", accept_new_host_key=True)
            assert c.post("/v2/registry/beehives/add", json=body).status_code == 201
            for name, path in (("tiny", chat_model), ("plain", tiny_model_dir)):
                entry = {"name": name, "model_ref": f"file:{path}", "nodes": ["n1"]}
                r = c.post("/v2/registry/models/add", json=entry)
                assert r.status_code == 201, r.text
        yield q
    finally:
        stop_queen(q)


@pytest.fixture
def client(queen: QueenProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{queen.url}/v1", api_key=queen.token, max_retries=0) as c:
        yield c


def test_models_lists_the_catalog(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert sorted(m.id for m in models.data) == ["plain", "tiny"]
    assert all(m.object == "model" and m.owned_by == "rbee" for m in models.data)


def test_chat_completion_loads_on_demand_and_reports_usage(
    client: openai.OpenAI, queen: QueenProcess
) -> None:
    reply = client.chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=8, temperature=0
    )
    (choice,) = reply.choices
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 8
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 8 > 8
    assert reply.model == "tiny" and reply.id.startswith("chatcmpl-")
    with queen.client() as c:
        workers = c.get("/v2/workers/list").json()["workers"]
    assert [(w["node"], w["state"]) for w in workers] == [("n1", "idle")]


def test_streamed_chat_is_the_same_text_as_the_whole_answer(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=12, temperature=0
    )
    stream = client.chat.completions.create(
        model="tiny",
        messages=HELLO,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 12


def test_completions_with_a_stop_sequence(client: openai.OpenAI) -> None:
    full = client.completions.create(model="tiny", prompt="The bee", max_tokens=24, temperature=0)
    text = full.choices[0].text
    assert full.choices[0].finish_reason == "length" and len(text) > 12
    stop = text[6:9]
    cut = client.completions.create(
        model="tiny", prompt="The bee", max_tokens=24, temperature=0, stop=[stop]
    )
    assert cut.choices[0].text == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = client.completions.create(
        model="tiny", prompt="The bee", max_tokens=24, temperature=0, stop=stop, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == cut.choices[0].text


def test_errors_have_openais_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=HELLO)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="tiny", messages=HELLO, temperature=5)
    body = bad.value.body
    assert isinstance(body, dict)
    assert (body["type"], body["param"], body["code"]) == (
        "invalid_request_error",
        "temperature",
        "invalid_request",
    )
    with pytest.raises(openai.BadRequestError, match="has no chat template"):
        client.chat.completions.create(model="plain", messages=HELLO, max_tokens=2)


def test_the_correlation_id_reaches_the_queen_and_worker_logs(
    client: openai.OpenAI, queen: QueenProcess
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="tiny",
        messages=HELLO,
        max_tokens=2,
        extra_headers={"X-Correlation-Id": "trace-me-42"},
    )
    assert raw.headers["x-correlation-id"] == "trace-me-42"
    logs = list((queen.home.parent / "install").rglob("run/*.log"))
    assert any("job" in p.read_text() and "cid=trace-me-42" in p.read_text() for p in logs)
    assert "[trace-me-42]" in queen.log


def test_a_deadline_cuts_a_long_stream_with_request_timeout(queen: QueenProcess) -> None:
    deadline = str(int((time.time() + 0.5) * 1000))
    body = {"model": "tiny", "prompt": "Hi", "max_tokens": 2048, "temperature": 0}
    headers = {"Authorization": f"Bearer {queen.token}", "X-Request-Deadline": deadline}
    with httpx.Client(base_url=queen.url, timeout=60, headers=headers) as c:
        events = []
        with c.stream("POST", "/v2/tasks", json=body) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    events.append(json.loads(line[6:]))
    assert events[-1]["type"] == "error" and events[-1]["code"] == "REQUEST_TIMEOUT"
    assert 0 < sum(e["type"] == "token" for e in events) < 2048


def test_a_past_deadline_is_refused_on_every_surface(
    client: openai.OpenAI, queen: QueenProcess
) -> None:
    past = {"X-Request-Deadline": str(int((time.time() - 1) * 1000))}
    with pytest.raises(openai.APIStatusError) as late:
        client.chat.completions.create(model="tiny", messages=HELLO, extra_headers=past)
    assert late.value.status_code == 504 and late.value.code == "request_timeout"
    with queen.client() as c:
        r = c.get("/v2/workers/list", headers=past)
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "REQUEST_TIMEOUT"
