"""The walking skeleton end to end: queen -> real sshd -> helper -> worker -> tokens."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.plugins.procs import worker_pids
from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.sshd import SshServer


def add_node(queen: QueenProcess, sshd: SshServer, tmp_path: Path, name: str = "n1") -> None:
    body = sshd.node_body(name, tmp_path / "install", accept_new_host_key=True)
    with queen.client() as c:
        r = c.post("/v2/registry/beehives/add", json=body)
    assert r.status_code == 201, r.text


def stream_task(queen: QueenProcess, **body: object) -> tuple[list[dict], list[float]]:
    """Events of one task and the time each arrived."""
    events, arrivals = [], []
    with queen.client() as c:
        with c.stream("POST", "/v2/tasks", json=body) as r:
            assert r.status_code == 200, r.read()
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[len("data: ") :]
                arrivals.append(time.monotonic())
                events.append({"type": "DONE"} if data == "[DONE]" else json.loads(data))
    return events, arrivals


def workers(queen: QueenProcess) -> list[dict]:
    with queen.client() as c:
        return c.get("/v2/workers/list").json()["workers"]


def test_cold_then_warm_infer_then_shutdown(
    queen: QueenProcess, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    add_node(queen, sshd, tmp_path)
    task = {"node": "n1", "model": f"file:{tiny_model_dir}", "prompt": "hello", "max_tokens": 12}
    events, _ = stream_task(queen, **task, temperature=0.0)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "started"
    assert kinds[-2:] == ["end", "DONE"]
    tokens = [e for e in events if e["type"] == "token"]
    assert [t["i"] for t in tokens] == list(range(len(tokens)))
    end = events[-2]
    # A piece of text may hold several tokens (an incomplete UTF-8 character waits
    # for the token that completes it), never fewer.
    assert 0 < len(tokens) <= end["tokens_out"]
    assert end["stop_reason"] in ("MAX_TOKENS", "EOS")
    if end["stop_reason"] == "MAX_TOKENS":
        assert end["tokens_out"] == 12

    (worker,) = workers(queen)
    assert worker["state"] == "idle" and worker["node"] == "n1"
    assert worker_pids(worker["worker_id"]) == [worker["pid"]]

    # Warm: the same worker answers and greedy output is the same. (How fast the
    # first token comes is measured in bench/first_token.py, not asserted here.)
    warm, _ = stream_task(queen, **task, temperature=0.0)
    text = "".join(e["t"] for e in events if e["type"] == "token")
    assert "".join(e["t"] for e in warm if e["type"] == "token") == text
    assert [w["worker_id"] for w in workers(queen)] == [worker["worker_id"]]

    with queen.client() as c:
        r = c.post("/v2/workers/shutdown", json={"worker_id": worker["worker_id"]})
    assert r.status_code == 200, r.text
    assert r.json()["stopped"] is True
    assert workers(queen) == []
    assert worker_pids(worker["worker_id"]) == []


def test_model_not_found(queen: QueenProcess, sshd: SshServer, tmp_path: Path) -> None:
    add_node(queen, sshd, tmp_path)
    with queen.client() as c:
        r = c.post(
            "/v2/tasks",
            json={"node": "n1", "model": f"file:{tmp_path}/no-such-model", "prompt": "hi"},
        )
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "MODEL_NOT_FOUND"
    assert workers(queen) == []


def test_unknown_node(queen: QueenProcess) -> None:
    with queen.client() as c:
        r = c.post("/v2/tasks", json={"node": "ghost", "model": "file:/m", "prompt": "hi"})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "NODE_NOT_FOUND"


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"node": "n1", "model": "file:/m", "prompt": "a\x1b[31mb"}, {"prompt"}),
        ({"node": "n;1", "model": "file:/m; rm -rf /", "prompt": ""}, {"node", "model", "prompt"}),
        (
            {"node": "n1", "model": "file:/m", "prompt": "x", "max_tokens": 0, "temperature": 3},
            {"max_tokens", "temperature"},
        ),
    ],
)
def test_task_validation(queen: QueenProcess, body: dict, fields: set[str]) -> None:
    with queen.client() as c:
        r = c.post("/v2/tasks", json=body)
    assert r.status_code == 400
    assert {f["field"] for f in r.json()["error"]["details"]["fields"]} == fields


def test_stopping_the_queen_stops_its_workers(
    rbee_home: Path, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    queen = start_queen(rbee_home)
    try:
        add_node(queen, sshd, tmp_path)
        stream_task(queen, node="n1", model=f"file:{tiny_model_dir}", prompt="hi", max_tokens=2)
        (worker,) = workers(queen)
        assert worker_pids(worker["worker_id"])
    finally:
        stop_queen(queen)
    # uvicorn re-raises SIGTERM after a clean shutdown, so -15 is a clean exit too.
    assert queen.proc.returncode in (0, -15)
    assert worker_pids(worker["worker_id"]) == []
