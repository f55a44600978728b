"""The worker as its owner sees it: a real process on a loopback port, real HTTP.

One worker serves most tests (loading torch costs seconds); the lifecycle tests
start their own, because they watch it load and stop it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

LONG = 2048  # more tokens than any test waits for: such jobs end by cancel


@dataclass
class WorkerProc:
    proc: subprocess.Popen[bytes]
    url: str
    state_file: Path
    log_file: Path

    def log(self) -> str:
        return self.log_file.read_text()


def spawn_worker(model_dir: Path, run_dir: Path, worker_id: str, *extra: str) -> WorkerProc:
    state_file = run_dir / f"{worker_id}.state.json"
    log_file = run_dir / f"{worker_id}.log"
    argv = [sys.executable, "-m", "rbee_worker", "--worker-id", worker_id]
    argv += ["--model", str(model_dir), "--backend", "torch", "--device", "cpu"]
    argv += ["--host", "127.0.0.1", "--port", "0", "--state-file", str(state_file), *extra]
    with log_file.open("wb") as log:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            start_new_session=True,  # so the whole group can be checked and killed
        )
    deadline = time.monotonic() + 15
    while not state_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"worker never wrote its state file:\n{log_file.read_text()}")
        time.sleep(0.01)
    state = json.loads(state_file.read_text())
    return WorkerProc(proc, f"http://127.0.0.1:{state['port']}", state_file, log_file)


def kill_group(worker: WorkerProc) -> None:
    try:
        os.killpg(worker.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    worker.proc.wait(timeout=10)


def wait_until_healthy(client: httpx.Client, timeout: float = 30.0) -> list[int]:
    """Poll /health until 200; returns every status seen."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.append(client.get("/health").status_code)
        if seen[-1] != 503:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"worker still loading after {timeout}s")


def events_of(response: httpx.Response) -> Iterator[Any]:
    """The stream's events: dicts, then the string '[DONE]'."""
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            yield data if data == "[DONE]" else json.loads(data)
        else:
            assert line == "", f"unexpected line in the stream: {line!r}"


def infer(client: httpx.Client, **body: Any) -> list[Any]:
    with client.stream("POST", "/v1/inference", json=body) as response:
        assert response.status_code == 200, response.read()
        return list(events_of(response))


def text_of(events: list[Any]) -> str:
    return "".join(e["t"] for e in events if isinstance(e, dict) and e["type"] == "token")


def end_of(events: list[Any]) -> dict[str, Any]:
    assert events[-1] == "[DONE]"
    assert events[-2]["type"] == "end", events[-2]
    return dict(events[-2])


def wait_idle(client: httpx.Client, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/v1/ready").json()["slots_busy"]:
        assert time.monotonic() < deadline, "the slot was never freed"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def worker(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProc]:
    proc = spawn_worker(tiny_model_dir, tmp_path_factory.mktemp("worker"), "w-shared")
    try:
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            wait_until_healthy(client)
        yield proc
    finally:
        kill_group(proc)


@pytest.fixture
def client(worker: WorkerProc) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=worker.url, timeout=10) as client:
        wait_idle(client)
        yield client
        wait_idle(client)  # no test may leave a job running for the next one


# --- the stream -------------------------------------------------------------------


def test_stream_has_started_tokens_end_done_in_order(
    client: httpx.Client, tiny_model_dir: Path
) -> None:
    with client.stream(
        "POST",
        "/v1/inference",
        # Greedy: the tiny model never ends at EOS then, so the run is exactly
        # 16 tokens (sampled at the default temperature it sometimes met EOS).
        json={"job_id": "order-1", "prompt": "Hello", "max_tokens": 16, "temperature": 0},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(events_of(response))

    assert events[0] == {"type": "started", "job_id": "order-1", "model": tiny_model_dir.name}
    tokens = events[1:-2]
    assert tokens and all(e["type"] == "token" for e in tokens)
    assert [e["i"] for e in tokens] == list(range(len(tokens)))
    assert all(isinstance(e["t"], str) and e["t"] for e in tokens)
    end = end_of(events)
    assert set(end) == {"type", "tokens_out", "decode_time_ms", "stop_reason", "usage"}
    assert end["stop_reason"] == "MAX_TOKENS"
    assert end["tokens_out"] == 16
    usage = end["usage"]
    assert usage["completion_tokens"] == 16 and usage["prompt_tokens"] >= 1
    assert usage["total_tokens"] == usage["prompt_tokens"] + 16
    assert 0 <= usage["time_to_first_token_ms"] <= end["decode_time_ms"] + 1000
    assert usage["tokens_per_second"] > 0
    # Pieces that end inside a UTF-8 character are merged with the next one.
    assert len(tokens) <= 16
    assert isinstance(end["decode_time_ms"], int) and end["decode_time_ms"] >= 0


def test_default_max_tokens_is_20(client: httpx.Client) -> None:
    events = infer(client, job_id="default-1", prompt="Hello", temperature=0)
    assert end_of(events)["tokens_out"] == 20


def test_tokens_arrive_while_the_model_still_generates(client: httpx.Client) -> None:
    body = {"job_id": "timing-1", "prompt": "The bee", "max_tokens": 600, "temperature": 0}
    start = time.monotonic()
    arrivals: list[tuple[float, str]] = []
    with client.stream("POST", "/v1/inference", json=body) as response:
        for event in events_of(response):
            kind = event if event == "[DONE]" else event["type"]
            arrivals.append((time.monotonic() - start, kind))
    first_token = next(t for t, kind in arrivals if kind == "token")
    end = next(t for t, kind in arrivals if kind == "end")
    # Buffered output would arrive all at once, right before the end.
    assert first_token < end / 3, arrivals[:3]


def test_delete_cancels_the_running_job(client: httpx.Client) -> None:
    body = {"job_id": "cancel-1", "prompt": "Once upon", "max_tokens": LONG, "temperature": 0}
    with client.stream("POST", "/v1/inference", json=body) as response:
        events = events_of(response)
        assert next(events)["type"] == "started"
        assert next(events)["type"] == "token"
        # The first token arrived while generation was still going: the cancel lands.
        assert client.delete("/v1/inference/cancel-1").status_code == 204
        rest = list(events)
    end = end_of(rest)
    assert end["stop_reason"] == "CANCELLED"
    assert end["tokens_out"] < LONG


def test_delete_is_idempotent_and_ignores_unknown_jobs(client: httpx.Client) -> None:
    assert client.delete("/v1/inference/never-started").status_code == 204
    assert client.delete("/v1/inference/never-started").status_code == 204
    # A cancel for another job id leaves a running job alone.
    body = {"job_id": "other-1", "prompt": "Hi", "max_tokens": 200, "temperature": 0}
    with client.stream("POST", "/v1/inference", json=body) as response:
        events = events_of(response)
        next(events)
        assert client.delete("/v1/inference/not-other-1").status_code == 204
        rest = list(events)
    assert end_of(rest)["stop_reason"] == "MAX_TOKENS"


def test_client_disconnect_stops_the_job_and_frees_the_slot(
    client: httpx.Client, worker: WorkerProc
) -> None:
    body = {"job_id": "gone-1", "prompt": "The queen", "max_tokens": LONG, "temperature": 0}
    with httpx.Client(base_url=worker.url, timeout=10) as other:
        with other.stream("POST", "/v1/inference", json=body) as response:
            events = events_of(response)
            next(events)
            next(events)
        # Leaving the block closes the connection mid-stream.
    wait_idle(client, timeout=3)
    deadline = time.monotonic() + 3
    while "job gone-1 cid=- finished: stop_reason=CANCELLED" not in worker.log():
        assert time.monotonic() < deadline, worker.log()[-2000:]
        time.sleep(0.02)
    events = infer(client, job_id="after-gone", prompt="Hi", max_tokens=3)
    assert end_of(events)["tokens_out"] == 3


# --- sampling ----------------------------------------------------------------------


def test_greedy_is_deterministic(client: httpx.Client) -> None:
    body = {"prompt": "The weather today", "max_tokens": 40, "temperature": 0}
    first = infer(client, job_id="greedy-1", **body)
    second = infer(client, job_id="greedy-2", **body)
    assert text_of(first) and text_of(first) == text_of(second)


def test_same_seed_same_text_and_other_seeds_differ(client: httpx.Client) -> None:
    body = {"prompt": "Hello world", "max_tokens": 30, "temperature": 1.0}
    first = text_of(infer(client, job_id="seed-a", seed=7, **body))
    again = text_of(infer(client, job_id="seed-b", seed=7, **body))
    assert first == again
    others = {text_of(infer(client, job_id=f"seed-{s}", seed=s, **body)) for s in (1, 2, 3)}
    assert others - {first}


def test_a_sampled_stream_can_end_at_eos(client: httpx.Client) -> None:
    # Random weights give EOS a small chance per token; over a few long sampled
    # streams some stream meets it, and that stream must say EOS, not MAX_TOKENS.
    body = {"prompt": "Hello world", "max_tokens": LONG, "temperature": 1.5}
    for seed in range(8):
        end = end_of(infer(client, job_id=f"eos-{seed}", seed=seed, **body))
        if end["stop_reason"] == "EOS":
            assert end["tokens_out"] < LONG
            return
        assert end == {**end, "stop_reason": "MAX_TOKENS", "tokens_out": LONG}
    pytest.fail("no sampled stream ended at EOS")


# --- refusals ----------------------------------------------------------------------


def test_validation_lists_every_bad_field(client: httpx.Client) -> None:
    body = {"job_id": "bad id!", "prompt": "", "max_tokens": 0, "temperature": 2.5, "seed": -1}
    response = client.post("/v1/inference", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "INVALID_REQUEST"
    assert error["correlation_id"] == ""
    fields = {f["field"]: f["constraint"] for f in error["details"]["fields"]}
    assert fields == {
        "job_id": "pattern",
        "prompt": "min_length",
        "max_tokens": "range",
        "temperature": "range",
        "seed": "range",
    }
    assert all(f["message"] for f in error["details"]["fields"])


def test_validation_of_missing_and_mistyped_fields(client: httpx.Client) -> None:
    missing = client.post("/v1/inference", json={"max_tokens": True, "temperature": "hot"})
    fields = {f["field"]: f["constraint"] for f in missing.json()["error"]["details"]["fields"]}
    assert fields == {
        "job_id": "required",
        "prompt": "required",
        "max_tokens": "type",
        "temperature": "type",
    }
    for raw in (b"{not json", b"[1, 2]"):
        response = client.post("/v1/inference", content=raw)
        assert response.status_code == 400
        assert response.json()["error"]["details"]["fields"][0]["field"] == "body"


def test_unknown_fields_are_ignored(client: httpx.Client) -> None:
    events = infer(client, job_id="extra-1", prompt="Hi", max_tokens=2, top_p=0.5, x={"y": 1})
    assert end_of(events)["tokens_out"] == 2


def test_oversized_body_is_refused(client: httpx.Client) -> None:
    body = {"job_id": "big-1", "prompt": "x" * (1024 * 1024 + 1)}
    response = client.post("/v1/inference", json=body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "INVALID_REQUEST"


def test_second_request_while_busy_gets_all_slots_busy(client: httpx.Client) -> None:
    body = {"job_id": "busy-1", "prompt": "The hive", "max_tokens": LONG, "temperature": 0}
    with client.stream("POST", "/v1/inference", json=body) as response:
        events = events_of(response)
        next(events)
        next(events)
        second = client.post("/v1/inference", json={**body, "job_id": "busy-2"})
        assert second.status_code == 503
        error = second.json()["error"]
        assert error["code"] == "ALL_SLOTS_BUSY"
        assert error["details"] == {"slots_total": 1, "slots_busy": 1}
        ready = client.get("/v1/ready").json()
        assert (ready["ready"], ready["state"], ready["slots_busy"]) == (True, "busy", 1)
        client.delete("/v1/inference/busy-1")
        assert end_of(list(events))["stop_reason"] == "CANCELLED"
    assert client.get("/v1/ready").json()["state"] == "idle"


async def test_racing_requests_claim_the_slot_once(worker: WorkerProc) -> None:
    body = {"prompt": "The keeper", "max_tokens": LONG, "temperature": 0}
    async with httpx.AsyncClient(base_url=worker.url, timeout=10) as aclient:
        requests = [
            aclient.build_request("POST", "/v1/inference", json={**body, "job_id": f"race-{n}"})
            for n in range(4)
        ]
        responses = await asyncio.gather(*(aclient.send(r, stream=True) for r in requests))
        try:
            statuses = sorted(r.status_code for r in responses)
            assert statuses == [200, 503, 503, 503]
        finally:
            for n in range(4):
                await aclient.delete(f"/v1/inference/race-{n}")
            for response in responses:
                await response.aclose()


# --- the process -------------------------------------------------------------------


def test_loads_in_background_then_serves_then_stops_on_sigterm(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    worker = spawn_worker(tiny_model_dir, tmp_path, "w-life")
    try:
        state = json.loads(worker.state_file.read_text())
        assert state == {"pid": worker.proc.pid, "port": state["port"], "worker_id": "w-life"}
        with httpx.Client(base_url=worker.url, timeout=10) as client:
            # torch alone takes over a second to import: these land while loading.
            loading = client.get("/health")
            assert (loading.status_code, loading.json()) == (503, {"status": "loading"})
            ready = client.get("/v1/ready").json()
            assert (ready["ready"], ready["state"]) == (False, "loading")
            assert set(ready["progress"]) == {"stage", "layers_loaded", "layers_total"}
            early = client.post("/v1/inference", json={"job_id": "early", "prompt": "Hi"})
            assert early.status_code == 503
            assert early.json()["error"]["code"] == "WORKER_LOADING"

            assert wait_until_healthy(client)[-1] == 200
            assert client.get("/health").json() == {"status": "ok"}
            ready = client.get("/v1/ready").json()
            assert ready["progress"] == {"stage": "ready", "layers_loaded": 2, "layers_total": 2}

            # A SIGTERM with a job in flight lets the job finish (drain), then exits.
            body = {"job_id": "drain-1", "prompt": "Hi", "max_tokens": 300, "temperature": 0}
            with client.stream("POST", "/v1/inference", json=body) as response:
                events = events_of(response)
                next(events)
                worker.proc.send_signal(signal.SIGTERM)
                end = end_of(list(events))
        assert (end["stop_reason"], end["tokens_out"]) == ("MAX_TOKENS", 300)
        assert worker.proc.wait(timeout=10) == 0
        with pytest.raises(ProcessLookupError):
            os.killpg(worker.proc.pid, 0)  # nothing of its process group is left
        assert not worker.state_file.exists()
        assert "job drain-1 cid=- finished" in worker.log()
    finally:
        kill_group(worker)


def test_refuses_a_non_loopback_host(tiny_model_dir: Path, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "rbee_worker", "--worker-id", "w-open"]
    argv += ["--model", str(tiny_model_dir), "--host", "0.0.0.0"]  # noqa: S104 - the point
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)  # noqa: S603
    assert result.returncode == 2
    assert "loopback" in result.stderr
