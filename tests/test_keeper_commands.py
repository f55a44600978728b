"""rbee-keeper's commands against a stand-in for the queen's HTTP surface.

The stand-in is a real Starlette app served by uvicorn on a loopback port, with
canned data; it records every request so tests can also assert what the keeper
did not send. The end-to-end tests with the real queen live elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from rbee_keeper.cli import main

# A stream step: an event to send, or an Event the stand-in waits for before going on.
Step = dict[str, Any] | threading.Event

NODE_GPU1 = {
    "node_name": "gpu1",
    "ssh_host": "10.0.0.5",
    "ssh_port": 22,
    "ssh_user": "alice",
    "ssh_key_path": "/home/alice/.ssh/id_ed25519",
    "install_path": "~/.rbee",
    "worker_python": None,
    "status": "reachable",
    "last_connected": "2025-10-19T12:00:00+00:00",
    "last_error": None,
    "backends": ["cuda", "cpu"],
    "devices": {"cuda": 2, "cpu": 1},
}
WORKER_1 = {
    "worker_id": "w-1",
    "node": "gpu1",
    "state": "idle",
    "model_ref": "file:/models/tiny",
    "backend": "cuda",
    "device": 0,
    "pid": 4242,
    "port": 8081,
    "started_at": "2025-10-19T12:01:00+00:00",
}


def tokens_then_end(*pieces: str) -> list[Step]:
    steps: list[Step] = [{"type": "started", "job_id": "job-1", "model": "file:/models/tiny"}]
    steps += [{"type": "token", "t": piece, "i": i} for i, piece in enumerate(pieces)]
    end = {"type": "end", "tokens_out": len(pieces), "decode_time_ms": 50, "stop_reason": "EOS"}
    return [*steps, end]


@dataclass
class StandinQueen:
    url: str = ""
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    nodes: dict[str, dict[str, Any]] = field(default_factory=lambda: {"gpu1": dict(NODE_GPU1)})
    workers: dict[str, dict[str, Any]] = field(default_factory=lambda: {"w-1": dict(WORKER_1)})
    stream: list[Step] = field(default_factory=lambda: tokens_then_end("Hello", ",", " world"))
    busy_answers: int = 0  # how many tasks are refused with ALL_SLOTS_BUSY first
    send_done: bool = True  # False: the stream just stops, as when the queen dies
    sent: list[dict[str, Any]] = field(default_factory=list)  # events the stream has sent
    stream_abandoned: threading.Event = field(default_factory=threading.Event)

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.requests]


def error(status: int, code: str, message: str) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": {}, "correlation_id": "c-1"}}
    return JSONResponse(body, status_code=status)


def standin_app(queen: StandinQueen) -> Starlette:
    async def recorded(request: Request) -> Any:
        body = await request.json() if request.method == "POST" else None
        queen.requests.append((request.method, request.url.path, body))
        return body

    async def health(request: Request) -> Response:
        await recorded(request)
        return JSONResponse({"status": "ok", "version": "0.1.0"})

    async def add_node(request: Request) -> Response:
        body = await recorded(request)
        if body["node_name"] in queen.nodes:
            return error(409, "NODE_ALREADY_EXISTS", f"node {body['node_name']} already exists")
        node = {**body, "status": "reachable", "last_connected": None, "last_error": None}
        node |= {"backends": ["cpu"], "devices": {"cpu": 1, "cuda": 0}}
        node.pop("accept_new_host_key")
        queen.nodes[body["node_name"]] = node
        return JSONResponse({"node": node}, status_code=201)

    async def list_nodes(request: Request) -> Response:
        await recorded(request)
        return JSONResponse({"nodes": list(queen.nodes.values())})

    async def remove_node(request: Request) -> Response:
        name = (await recorded(request))["node_name"]
        if queen.nodes.pop(name, None) is None:
            return error(404, "NODE_NOT_FOUND", f"no node named {name}")
        return JSONResponse({"removed": name})

    async def list_workers(request: Request) -> Response:
        await recorded(request)
        return JSONResponse({"workers": list(queen.workers.values())})

    async def shutdown_worker(request: Request) -> Response:
        worker_id = (await recorded(request))["worker_id"]
        if queen.workers.pop(worker_id, None) is None:
            return error(404, "WORKER_NOT_FOUND", f"no worker {worker_id}")
        return JSONResponse({"worker_id": worker_id, "stopped": True, "forced": False})

    async def tasks(request: Request) -> Response:
        body = await recorded(request)
        if body.get("node", "gpu1") not in queen.nodes:
            return error(404, "NODE_NOT_FOUND", f"no node named {body['node']}")
        if queen.busy_answers > 0:
            queen.busy_answers -= 1
            return error(503, "ALL_SLOTS_BUSY", "all slots on gpu1 are busy")
        return StreamingResponse(event_stream(), media_type="text/event-stream")

    async def event_stream() -> AsyncIterator[str]:
        finished = False
        try:
            for step in queen.stream:
                if isinstance(step, threading.Event):
                    await wait_for(step)
                else:
                    queen.sent.append(step)
                    yield f"data: {json.dumps(step)}\n\n"
            if queen.send_done:
                yield "data: [DONE]\n\n"
            finished = True
        finally:
            if not finished:  # cancelled: the keeper went away mid-stream
                queen.stream_abandoned.set()

    routes = [
        Route("/health", health),
        Route("/v2/registry/beehives/add", add_node, methods=["POST"]),
        Route("/v2/registry/beehives/list", list_nodes),
        Route("/v2/registry/beehives/remove", remove_node, methods=["POST"]),
        Route("/v2/workers/list", list_workers),
        Route("/v2/workers/shutdown", shutdown_worker, methods=["POST"]),
        Route("/v2/tasks", tasks, methods=["POST"]),
    ]
    return Starlette(routes=routes)


async def wait_for(event: threading.Event, timeout_s: float = 10.0) -> None:
    """Poll: the test sets this event from its own thread, outside the server's loop."""
    deadline = time.monotonic() + timeout_s
    while not event.is_set() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)


@pytest.fixture
def queen() -> Iterator[StandinQueen]:
    state = StandinQueen()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    state.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(
        standin_app(state), log_level="warning", lifespan="off", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "the stand-in queen did not start"
    yield state
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture
def ssh_key(tmp_path: Path) -> Path:
    key = tmp_path / "id_ed25519"
    key.write_text("not a real key; the keeper only checks that the file exists\n")
    return key


def keeper(*argv: str, env: dict[str, str] | None = None, **popen: Any) -> subprocess.Popen[bytes]:
    """rbee-keeper as a real process (stdout and stderr piped).

    Without PYTHONUNBUFFERED, as users run it: then only the keeper's own flushes
    make tokens show up while the stream is still going.
    """
    environment = {**os.environ, **(env or {})}
    environment.pop("PYTHONUNBUFFERED", None)
    return subprocess.Popen(
        [sys.executable, "-m", "rbee_keeper", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
        **popen,
    )


def read_until(stream: Any, wanted: bytes, timeout_s: float = 10.0) -> bytes:
    """Read a pipe until `wanted` shows up; fail the test if it does not in time."""
    seen = b""
    deadline = time.monotonic() + timeout_s
    while wanted not in seen:
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([stream], [], [], max(remaining, 0))
        assert ready, f"no {wanted!r} within {timeout_s} s; got {seen!r}"
        chunk = os.read(stream.fileno(), 4096)
        assert chunk, f"stream closed before {wanted!r}; got {seen!r}"
        seen += chunk
    return seen


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ["), stderr
    return lines[0]


# --- setup ------------------------------------------------------------------


def test_add_node_sends_expanded_absolute_key_path(
    queen: StandinQueen,
    ssh_key: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HOME", str(ssh_key.parent))
    argv = ["setup", "add-node", "--name", "gpu2", "--ssh-host", "10.0.0.6"]
    argv += ["--ssh-user", "bob", "--ssh-key", "~/id_ed25519", "--install-path", "~/.rbee"]
    argv += ["--ssh-port", "2222", "--accept-new-host-key", "--queen-url", queen.url]
    assert main(argv) == 0

    sent = queen.requests[-1]
    assert sent[:2] == ("POST", "/v2/registry/beehives/add")
    assert sent[2] == {
        "node_name": "gpu2",
        "ssh_host": "10.0.0.6",
        "ssh_port": 2222,
        "ssh_user": "bob",
        "ssh_key_path": str(ssh_key),
        "install_path": "~/.rbee",
        "worker_python": None,
        "accept_new_host_key": True,
    }
    assert capsys.readouterr().out == "added node gpu2 (bob@10.0.0.6:2222, reachable)\n"


def test_add_node_with_missing_key_fails_before_any_request(queen: StandinQueen) -> None:
    missing = "~/no-such-dir/id_ed25519"
    argv = ["setup", "add-node", "--name", "gpu2", "--ssh-host", "h", "--ssh-user", "u"]
    argv += ["--ssh-key", missing, "--install-path", "~/.rbee", "--queen-url", queen.url]
    run = subprocess.run(
        [sys.executable, "-m", "rbee_keeper", *argv], capture_output=True, text=True, timeout=30
    )

    assert run.returncode == 1
    expected = f"SSH key not found: {Path(missing).expanduser()}"
    assert one_error_line(run.stderr) == f"error: [SSH_KEY_NOT_FOUND] {expected}"
    assert "Traceback" not in run.stderr
    assert queen.requests == []


def test_add_node_duplicate_shows_queen_error(
    queen: StandinQueen, ssh_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["setup", "add-node", "--name", "gpu1", "--ssh-host", "h", "--ssh-user", "u"]
    argv += ["--ssh-key", str(ssh_key), "--install-path", "/opt/rbee", "--queen-url", queen.url]
    assert main(argv) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line == "error: [NODE_ALREADY_EXISTS] node gpu1 already exists"


def test_list_nodes_prints_a_table(queen: StandinQueen, capsys: pytest.CaptureFixture[str]) -> None:
    queen.nodes["cpu9"] = {**NODE_GPU1, "node_name": "cpu9", "ssh_host": "10.0.0.9"}
    queen.nodes["cpu9"] |= {"status": "unknown", "last_connected": None, "backends": ["cpu"]}

    assert main(["setup", "list-nodes", "--queen-url", queen.url]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "SSH", "TARGET", "STATUS", "LAST", "CONNECTED", "BACKENDS"]
    gpu1 = ["gpu1", "alice@10.0.0.5:22", "reachable", "2025-10-19T12:00:00+00:00"]
    assert lines[1].split() == [*gpu1, "cuda=2", "cpu=1"]
    assert lines[2].split() == ["cpu9", "alice@10.0.0.9:22", "unknown", "never", "cpu=1"]
    assert lines[1].index("alice@") == lines[2].index("alice@") == lines[0].index("SSH TARGET")


def test_list_nodes_json_is_the_queens_answer(
    queen: StandinQueen, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["setup", "list-nodes", "--json", "--queen-url", queen.url]) == 0
    assert json.loads(capsys.readouterr().out) == {"nodes": [NODE_GPU1]}


def test_global_options_also_work_before_the_command(
    queen: StandinQueen, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--json", "--queen-url", queen.url, "setup", "list-nodes"]) == 0
    assert json.loads(capsys.readouterr().out) == {"nodes": [NODE_GPU1]}


def test_remove_node(queen: StandinQueen, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["setup", "remove-node", "--name", "gpu1", "--queen-url", queen.url]) == 0
    assert capsys.readouterr().out == "removed node gpu1\n"
    assert queen.nodes == {}


def test_remove_unknown_node_fails_with_node_not_found(queen: StandinQueen) -> None:
    argv = ["setup", "remove-node", "--name", "nope", "--queen-url", queen.url]
    run = subprocess.run(
        [sys.executable, "-m", "rbee_keeper", *argv], capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 1
    assert one_error_line(run.stderr) == "error: [NODE_NOT_FOUND] no node named nope"
    assert run.stdout == ""


# --- workers ----------------------------------------------------------------


def test_workers_list_table_and_json(
    queen: StandinQueen, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["workers", "list", "--queen-url", queen.url]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["ID", "NODE", "STATE", "MODEL", "DEVICE", "PID", "PORT", "STARTED"]
    expected = ["w-1", "gpu1", "idle", "file:/models/tiny", "cuda:0", "4242", "8081"]
    assert row.split() == [*expected, "2025-10-19T12:01:00+00:00"]

    assert main(["workers", "list", "--json", "--queen-url", queen.url]) == 0
    assert json.loads(capsys.readouterr().out) == {"workers": [WORKER_1]}


def test_workers_shutdown(queen: StandinQueen, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workers", "shutdown", "--id", "w-1", "--queen-url", queen.url]) == 0
    assert capsys.readouterr().out == "stopped worker w-1 (gracefully)\n"
    assert queen.requests[-1] == ("POST", "/v2/workers/shutdown", {"worker_id": "w-1"})

    assert main(["workers", "shutdown", "--id", "w-1", "--queen-url", queen.url]) == 1
    assert one_error_line(capsys.readouterr().err) == "error: [WORKER_NOT_FOUND] no worker w-1"


# --- infer ------------------------------------------------------------------


def test_infer_prints_tokens_as_they_arrive(queen: StandinQueen) -> None:
    first_token_seen = threading.Event()
    queen.stream = tokens_then_end("Hello", " world")
    queen.stream.insert(2, first_token_seen)  # hold the rest until the test saw "Hello"
    argv = ["infer", "--node", "gpu1", "--model", "file:/models/tiny", "--prompt", "hi"]
    with keeper(*argv, "--queen-url", queen.url) as process:
        try:
            assert read_until(process.stdout, b"Hello") == b"Hello"
            assert [event["type"] for event in queen.sent] == ["started", "token"]
            first_token_seen.set()
            out, err = process.communicate(timeout=30)
        finally:
            process.kill()

    assert process.returncode == 0
    assert out == b" world\n"
    assert err.decode().strip() == "2 tokens, stop_reason EOS, decode 50 ms (40.0 tokens/s)"


def test_infer_sends_the_task(queen: StandinQueen, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["infer", "--node", "gpu1", "--model", "file:/models/tiny", "--prompt", "hi"]
    argv += ["--max-tokens", "3", "--temperature", "0", "--seed", "7", "--queen-url", queen.url]
    assert main(argv) == 0

    task = {"node": "gpu1", "model": "file:/models/tiny", "prompt": "hi", "max_tokens": 3}
    assert queen.requests[-1] == ("POST", "/v2/tasks", {**task, "temperature": 0.0, "seed": 7})
    assert capsys.readouterr().out == "Hello, world\n"


def test_infer_sends_sampling_flags_and_may_leave_the_node_to_routing(
    queen: StandinQueen, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["infer", "--model", "tiny", "--prompt", "hi", "--top-p", "0.9", "--top-k", "40"]
    argv += ["--min-p", "0.05", "--repetition-penalty", "1.1", "--stop", "\n", "--stop", "END"]
    assert main([*argv, "--queen-url", queen.url]) == 0

    sent = queen.requests[-1][2]
    assert "node" not in sent and sent["model"] == "tiny"
    assert (sent["top_p"], sent["top_k"], sent["min_p"]) == (0.9, 40, 0.05)
    assert (sent["repetition_penalty"], sent["stop"]) == (1.1, ["\n", "END"])


def test_infer_json_prints_one_event_a_line(
    queen: StandinQueen, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["infer", "--node", "gpu1", "--model", "m:x", "--prompt", "hi", "--json"]
    assert main([*argv, "--queen-url", queen.url]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events == queen.stream


def test_infer_error_event_exits_1(queen: StandinQueen) -> None:
    queen.stream = tokens_then_end("Hel")[:2]
    queen.stream.append({"type": "error", "code": "INFERENCE_FAILED", "message": "CUDA\nOOM"})
    argv = ["infer", "--node", "gpu1", "--model", "m:x", "--prompt", "hi"]
    run = subprocess.run(
        [sys.executable, "-m", "rbee_keeper", *argv, "--queen-url", queen.url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 1
    assert run.stdout == "Hel\n"
    assert one_error_line(run.stderr) == "error: [INFERENCE_FAILED] CUDA OOM"


def test_infer_stream_cut_short_exits_1(
    queen: StandinQueen, capsys: pytest.CaptureFixture[str]
) -> None:
    queen.stream, queen.send_done = tokens_then_end("Hel")[:2], False
    argv = ["infer", "--node", "gpu1", "--model", "m:x", "--prompt", "hi"]
    assert main([*argv, "--queen-url", queen.url]) == 1
    captured = capsys.readouterr()
    assert captured.out == "Hel\n"
    expected = f"error: [QUEEN_UNAVAILABLE] the queen at {queen.url} closed the stream"
    assert one_error_line(captured.err) == f"{expected} before it finished"


def test_infer_error_before_the_stream(
    queen: StandinQueen, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["infer", "--node", "gpu7", "--model", "m:x", "--prompt", "hi"]
    assert main([*argv, "--queen-url", queen.url]) == 1
    assert one_error_line(capsys.readouterr().err) == "error: [NODE_NOT_FOUND] no node named gpu7"


def test_infer_retries_when_all_slots_are_busy(
    queen: StandinQueen, capsys: pytest.CaptureFixture[str]
) -> None:
    queen.busy_answers = 1
    argv = ["infer", "--node", "gpu1", "--model", "m:x", "--prompt", "hi"]
    assert main([*argv, "--queen-url", queen.url]) == 0
    captured = capsys.readouterr()
    assert captured.out == "Hello, world\n"
    assert "all slots on gpu1 are busy; retrying in 1 s" in captured.err
    assert queen.paths().count("/v2/tasks") == 2


def test_infer_ctrl_c_closes_the_stream_and_exits_130(queen: StandinQueen) -> None:
    never = threading.Event()
    queen.stream = [*tokens_then_end("Hello")[:2], never, *tokens_then_end("late")[1:]]
    argv = ["infer", "--node", "gpu1", "--model", "m:x", "--prompt", "hi", "--queen-url", queen.url]
    with keeper(*argv) as process:
        try:
            read_until(process.stdout, b"Hello")
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=30)
        finally:
            process.kill()

    assert process.returncode == 130
    assert out == b"\n"  # the line of tokens is ended
    assert err.decode().strip() == "interrupted"
    assert queen.stream_abandoned.wait(timeout=10), "the stand-in never saw the disconnect"
    assert [event["type"] for event in queen.sent] == ["started", "token"]


def test_infer_into_a_closed_pipe_stops_quietly(queen: StandinQueen) -> None:
    first_token_seen = threading.Event()
    queen.stream = tokens_then_end("Hello", " world")
    queen.stream.insert(2, first_token_seen)
    argv = ["infer", "--node", "gpu1", "--model", "m:x", "--prompt", "hi", "--queen-url", queen.url]
    with keeper(*argv) as process:
        assert process.stdout is not None and process.stderr is not None
        try:
            read_until(process.stdout, b"Hello")
            process.stdout.close()  # like `| head -c 5` exiting
            first_token_seen.set()
            process.wait(timeout=30)
        finally:
            process.kill()
        err = process.stderr.read().decode()

    assert process.returncode == 1
    assert "Traceback" not in err and "BrokenPipe" not in err


# --- global options and usage -----------------------------------------------


def test_queen_url_from_environment(
    queen: StandinQueen, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RBEE_QUEEN_URL", queen.url)
    assert main(["workers", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"workers": [WORKER_1]}
    assert queen.paths() == ["/health", "/v2/workers/list"]


def test_queen_url_flag_wins_over_environment(
    queen: StandinQueen, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RBEE_QUEEN_URL", "http://192.0.2.1:9")  # would time out, not refuse
    assert main(["setup", "list-nodes", "--queen-url", queen.url]) == 0
    assert queen.paths() == ["/health", "/v2/registry/beehives/list"]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["setup"],
        ["setup", "remove-node"],
        ["infer", "--node", "gpu1", "--model", "m:x", "--prompt", "p", "--max-tokens", "many"],
        ["workers", "list", "--queen-url", "localhost:8080"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "usage: rbee-keeper" in capsys.readouterr().err


def test_usage_error_exits_2_as_a_process() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "rbee_keeper", "setup", "add-node", "--name", "x"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2
    assert "the following arguments are required: --ssh-host" in run.stderr
