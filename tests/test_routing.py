"""Routing by model name: least loaded first, a worker started on another allowed
node when every running one is full, ALL_SLOTS_BUSY when no node is left."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.plugins.queen import QueenProcess
from tests.plugins.sshd import SshServer


def workers_by_node(queen: QueenProcess) -> dict[str, str]:
    with queen.client() as c:
        return {w["node"]: w["state"] for w in c.get("/v2/workers/list").json()["workers"]}


def first_event(lines: Iterator[str]) -> dict:
    for line in lines:
        if line.startswith("data: {"):
            event = json.loads(line[6:])
            if event["type"] == "token":
                return event
    raise AssertionError("no token")


def test_full_workers_spill_to_another_node_then_all_slots_busy(
    queen: QueenProcess, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    with queen.client() as c:
        for name in ("a", "b"):
            body = sshd.node_body(name, tmp_path / name, accept_new_host_key=True)
            assert c.post("/v2/registry/beehives/add", json=body).status_code == 201
        entry = {"name": "pair", "model_ref": f"file:{tiny_model_dir}", "nodes": ["a", "b"]}
        assert c.post("/v2/registry/models/add", json=entry).status_code == 201
        listed = c.get("/v2/registry/models/list").json()["models"]
        assert [(m["name"], m["nodes"], m["slots"]) for m in listed] == [("pair", ["a", "b"], 1)]

    long = {"model": "pair", "prompt": "Hi", "max_tokens": 2048, "temperature": 0}
    headers = {"Authorization": f"Bearer {queen.token}"}
    with httpx.Client(base_url=queen.url, timeout=120, headers=headers) as c:
        # Load on demand: the first request starts a worker on a; while a is full,
        # the second starts one on b.
        with c.stream("POST", "/v2/tasks", json=long) as one:
            lines_one = one.iter_lines()  # held: dropping it would close the stream
            first_event(lines_one)
            assert workers_by_node(queen) == {"a": "busy"}
            with c.stream("POST", "/v2/tasks", json=long) as two:
                lines_two = two.iter_lines()
                first_event(lines_two)
                assert workers_by_node(queen)["b"] == "busy"
        # Both warm now: the least loaded takes each request, then no slot is left.
        with c.stream("POST", "/v2/tasks", json=long) as one:
            lines_one = one.iter_lines()
            first_event(lines_one)
            assert workers_by_node(queen) == {"a": "busy", "b": "idle"}
            with c.stream("POST", "/v2/tasks", json=long) as two:
                lines_two = two.iter_lines()
                first_event(lines_two)
                assert workers_by_node(queen) == {"a": "busy", "b": "busy"}
                # With the request queue off, no request waits (test_queue.py: with it).
                (queen.home / "queen.toml").write_text("[queue]\nmax_length = 0\n")
                assert c.post("/v2/admin/reload").json()["ok"]
                third = c.post("/v2/tasks", json={**long, "max_tokens": 2})
                assert third.status_code == 503
                error = third.json()["error"]
                assert error["code"] == "ALL_SLOTS_BUSY"
                assert error["details"] == {"slots_total": 2, "slots_busy": 2}
        # Closed streams free their slots (the queen sees the disconnects).
        deadline = time.monotonic() + 10
        while workers_by_node(queen) != {"a": "idle", "b": "idle"}:
            assert time.monotonic() < deadline, workers_by_node(queen)
            time.sleep(0.05)
        # The queen frees a slot when it sees the disconnect; the worker frees its
        # own when its cancelled job stops, a moment later: with the queue off, a
        # request in that moment is ALL_SLOTS_BUSY, so it is sent again until served.
        short = c.post("/v2/tasks", json={**long, "max_tokens": 2})
        while short.status_code == 503 and time.monotonic() < deadline + 10:
            assert short.json()["error"]["code"] == "ALL_SLOTS_BUSY", short.text
            time.sleep(0.1)
            short = c.post("/v2/tasks", json={**long, "max_tokens": 2})
        assert short.status_code == 200 and '"type": "end"' in short.text, short.text


@pytest.mark.parametrize(
    ("entry", "status", "code"),
    [
        ({"name": "m", "model_ref": "s3:x/y", "nodes": ["n"]}, 400, "INVALID_REQUEST"),
        ({"name": "m", "model_ref": "hf:x", "nodes": ["n"]}, 400, "INVALID_REQUEST"),
        ({"name": "m", "model_ref": "hf:x/y", "nodes": ["ghost"]}, 404, "NODE_NOT_FOUND"),
        ({"name": "m", "model_ref": "file:/m", "nodes": []}, 400, "INVALID_REQUEST"),
        ({"name": "m", "model_ref": "file:/m", "nodes": ["ghost"]}, 404, "NODE_NOT_FOUND"),
    ],
)
def test_catalog_entries_are_checked(
    queen: QueenProcess, entry: dict, status: int, code: str
) -> None:
    with queen.client() as c:
        r = c.post("/v2/registry/models/add", json=entry)
    assert r.status_code == status and r.json()["error"]["code"] == code
