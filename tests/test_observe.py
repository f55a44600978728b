"""The event stream and the metrics: unit tests of the bus, and both against a
real queen whose worker runs on the loopback sshd."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rbee_queen import deferred
from rbee_queen.eventbus import EventBus
from rbee_queen.workers.registry import STATE_RECORD_DELAY_S
from rbee_wire.queen_events import HealthFailed
from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.sshd import SshServer


def tick(n: int) -> HealthFailed:
    return HealthFailed(type="health_failed", worker_id=f"w-{n}", reason="tick")


async def test_slow_consumer_is_dropped_with_a_final_event() -> None:
    bus = EventBus(queue_size=3)
    slow = bus.subscribe()
    fast = bus.subscribe()
    received: list[dict] = []

    async def drain_fast() -> None:
        async for event in fast.events():
            received.append(event)
            if event.get("worker_id") == "w-9":
                return

    task = asyncio.create_task(drain_fast())
    for n in range(10):
        bus.publish(tick(n))  # never blocks, whatever the subscribers do
        deferred.flush()  # handed on now, not a moment later: one at a time
        await asyncio.sleep(0)
    await asyncio.wait_for(task, 5)
    assert [e["worker_id"] for e in received] == [f"w-{n}" for n in range(10)]
    seen = [e async for e in slow.events()]
    assert [e["type"] for e in seen] == ["health_failed"] * 3 + ["dropped"]
    assert bus.subscriber_count == 0


def test_listener_sees_every_event_in_order() -> None:
    bus = EventBus(queue_size=1)
    seen: list[int] = []
    bus.add_listener(lambda e: seen.append(e["seq"]))
    for _ in range(5):
        bus.publish(tick(0))
    assert seen == [1, 2, 3, 4, 5]


def _metrics(queen: QueenProcess) -> dict[str, dict[tuple, float]]:
    with queen.client() as c:
        text = c.get("/metrics").text
    found: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            found.setdefault(sample.name, {})[labels] = sample.value
    return found


def listen_until_idle_after_a_request(queen: QueenProcess, events: list[dict]) -> threading.Thread:
    """A thread that appends the queen's events to `events` until the request's
    figures are in and the worker is recorded idle again (a moment after its
    last request: back-to-back ones make one busy spell); started and connected."""
    connected = threading.Event()

    def listen() -> None:
        with queen.client() as c, c.stream("GET", "/v2/events", timeout=60) as r:
            connected.set()
            finished = False
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[6:])
                events.append(event)
                finished = finished or event.get("type") == "request_finished"
                if finished and event.get("type") == "worker" and event["state"] == "idle":
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert connected.wait(10)
    return listener


def test_events_and_metrics_agree_with_workers_list(
    queen: QueenProcess, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    events: list[dict] = []
    listener = listen_until_idle_after_a_request(queen, events)
    body = sshd.node_body("n1", tmp_path / "inst", accept_new_host_key=True)
    with queen.client() as c:
        assert c.post("/v2/registry/beehives/add", json=body).status_code == 201
        task = {
            "node": "n1",
            "model": f"file:{tiny_model_dir}",
            "prompt": "hi",
            # Long enough for the busy spell to be recorded (STATE_RECORD_DELAY_S).
            "max_tokens": 1000,
            "temperature": 0,
        }
        with c.stream("POST", "/v2/tasks", json=task) as r:
            assert r.status_code == 200
            r.read()
        workers = c.get("/v2/workers/list").json()["workers"]
    listener.join(15)
    assert not listener.is_alive()

    assert events[0]["type"] == "snapshot"
    assert events[0]["workers"] == [] and events[0]["nodes"] == []
    (worker,) = workers
    states = [e["state"] for e in events if e["type"] == "worker"]
    assert states[:3] == ["spawning", "loading", "idle"]
    assert states[-1] == "idle" and "busy" in states
    assert {e["worker_id"] for e in events if e["type"] == "worker"} == {worker["worker_id"]}
    (started,) = [e for e in events if e["type"] == "request_started"]
    (finished,) = [e for e in events if e["type"] == "request_finished"]
    assert started["worker_id"] == finished["worker_id"] == worker["worker_id"]
    assert finished["outcome"] == "MAX_TOKENS" and finished["tokens_out"] == 1000
    assert finished["ttft_ms"] > 0 and finished["tokens_per_s"] > 0
    assert_metrics_after_one_request(queen)


def assert_metrics_after_one_request(queen: QueenProcess) -> None:
    """One idle worker on an up node, one request of 1000 tokens, none in flight."""
    metrics = _metrics(queen)
    by_state = {dict(k)["state"]: v for k, v in metrics["rbee_workers"].items()}
    assert by_state["idle"] == 1
    assert sum(by_state.values()) == 1
    assert metrics["rbee_node_up"][(("node", "n1"),)] == 1
    assert metrics["rbee_requests_total"][(("outcome", "MAX_TOKENS"),)] == 1
    assert metrics["rbee_tokens_generated_total"][()] == 1000
    assert metrics["rbee_requests_in_flight"][()] == 0


def test_metrics_parse_on_an_empty_queen(queen: QueenProcess) -> None:
    metrics = _metrics(queen)
    assert all(v == 0 for v in metrics["rbee_workers"].values())
    assert "rbee_requests_in_flight" in metrics
    with queen.client() as c:  # /metrics needs the token like every route but /health
        r = c.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")


def test_node_events_carry_latency_and_gpu_readings(
    rbee_home: Path, sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RBEE_HEALTH_INTERVAL", "0.3")
    monkeypatch.setenv("RBEE_GPU_INTERVAL", "0.6")
    queen = start_queen(rbee_home)
    try:
        body = sshd.node_body("n1", tmp_path / "inst", accept_new_host_key=True)
        with queen.client() as c:
            assert c.post("/v2/registry/beehives/add", json=body).status_code == 201
            nodes: list[dict] = []
            with c.stream("GET", "/v2/events", timeout=30) as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        event = json.loads(line[6:])
                        if event["type"] == "node":
                            nodes.append(event)
                    pinged = [e for e in nodes if "gpus" not in e]
                    probed = [e for e in nodes if "gpus" in e]
                    if pinged and probed:
                        break
        assert all(e["node"] == "n1" and e["status"] == "reachable" for e in nodes)
        assert all(e["latency_ms"] > 0 for e in nodes)
        assert probed[0]["gpus"] == []  # this machine has no GPU; the reading says so
        metrics = _metrics(queen)
        assert metrics["rbee_node_latency_seconds"][(("node", "n1"),)] > 0
    finally:
        stop_queen(queen)


def test_back_to_back_requests_write_no_busy_spells_but_the_list_is_live(
    queen: QueenProcess, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Short requests cost the database nothing (STATE_RECORD_DELAY_S), while
    GET /v2/workers/list says busy during a request and idle after it."""
    body = sshd.node_body("n1", tmp_path / "inst", accept_new_host_key=True)
    task = {"node": "n1", "model": f"file:{tiny_model_dir}", "prompt": "hi", "temperature": 0}
    with queen.client() as c:
        assert c.post("/v2/registry/beehives/add", json=body).status_code == 201
        with c.stream("POST", "/v2/tasks", json={**task, "max_tokens": 1000}) as r:
            lines = r.iter_lines()
            next(line for line in lines if '"token"' in line)
            (during,) = c.get("/v2/workers/list").json()["workers"]
            end = json.loads(next(line for line in lines if '"end"' in line)[6:])
        (after,) = c.get("/v2/workers/list").json()["workers"]
        worker_id = after["worker_id"]
        time.sleep(2 * STATE_RECORD_DELAY_S)
        before = c.get(f"/v2/workers/{worker_id}/events").json()["events"]
        for _ in range(5):
            with c.stream("POST", "/v2/tasks", json={**task, "max_tokens": 2}) as r:
                assert r.status_code == 200
                r.read()
        time.sleep(2 * STATE_RECORD_DELAY_S)
        history = c.get(f"/v2/workers/{worker_id}/events").json()["events"]
    assert end["tokens_out"] == 1000
    assert (during["state"], after["state"]) == ("busy", "idle")
    # The long request made one recorded busy spell, the five short ones none.
    assert [e["to_state"] for e in before] == ["spawning", "loading", "idle", "busy", "idle"]
    assert history == before
