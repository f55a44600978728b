"""A black-box probe's findings on the HTTP surface, against a real queen over
real sockets: raw ones where a client library would refuse to send the request.
Each of these answered 500, stalled or kept a socket open before."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.sshd import free_port

# Short limits so the timeouts show in about a second.
LIMITS = {
    "RBEE_HTTP_HEAD_TIMEOUT": "1",
    "RBEE_HTTP_BODY_TIMEOUT": "1",
    "RBEE_HTTP_MAX_CONNECTIONS_PER_CLIENT": "16",
}


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QueenProcess]:
    home = tmp_path_factory.mktemp("probed-home")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in LIMITS.items():
            patch.setenv(name, value)
        queen = start_queen(home)
    try:
        yield queen
    finally:
        stop_queen(queen)


def connect(queen: QueenProcess) -> socket.socket:
    port = int(queen.url.rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_answer(sock: socket.socket) -> tuple[int, dict[str, object]]:
    """The status and JSON body of the one answer on `sock`, read to EOF."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), data[:200]
    return int(head.split()[1]), json.loads(body)


def send(queen: QueenProcess, raw: bytes) -> tuple[int, dict[str, object]]:
    with connect(queen) as sock:
        sock.sendall(raw)
        return read_answer(sock)


def code_of(body: dict[str, object]) -> object:
    error = body["error"]
    assert isinstance(error, dict)
    return error["code"]


def test_a_huge_header_is_refused_at_once_before_auth(probed: QueenProcess) -> None:
    head = b"GET /v2/workers/list HTTP/1.1\r\nHost: q\r\nAuthorization: Bearer "
    with connect(probed) as sock:
        sock.sendall(head)
        try:
            for _ in range(64):  # up to 4 MiB; the queen stops reading long before
                sock.sendall(b"A" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, body = read_answer(sock)
    assert (status, code_of(body)) == (431, "HEADERS_TOO_LARGE")
    assert httpx.get(f"{probed.url}/health", timeout=5).status_code == 200


@pytest.mark.parametrize(
    ("path", "code"), [("/health", "INVALID_REQUEST"), ("/v1/models", "invalid_request")]
)
def test_a_non_ascii_digit_in_the_deadline_is_a_400(
    probed: QueenProcess, path: str, code: str
) -> None:
    raw = (
        f"GET {path} HTTP/1.1\r\nHost: q\r\nX-Request-Deadline: \xb2\r\n"
        f"Authorization: Bearer {probed.token}\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")
    status, body = send(probed, raw)
    assert (status, code_of(body)) == (400, code)  # on /v1 in OpenAI's shape


DEEP = b"[" * 1000 + b"]" * 1000


@pytest.mark.parametrize(
    "body",
    [DEEP, b'{"prompt": ' + DEEP + b', "model": "m"}', b"[" * 40 + b"]" * 40],
    ids=["top-level", "in-a-field", "past-the-limit"],
)
def test_deep_json_is_a_400_with_the_depth_limit(probed: QueenProcess, body: bytes) -> None:
    with probed.client() as client:
        r = client.post("/v2/tasks", content=body)
        assert (r.status_code, r.json()["error"]["code"]) == (400, "INVALID_REQUEST")
        assert r.json()["error"]["details"]["fields"][0]["constraint"] == "max_depth"
        openai = client.post("/v1/chat/completions", content=body)
    assert openai.status_code == 400
    assert openai.json()["error"]["type"] == "invalid_request_error"  # OpenAI's shape
    assert openai.json()["error"]["code"] == "invalid_request"


def test_an_idle_connection_is_closed_with_a_408(probed: QueenProcess) -> None:
    with connect(probed) as sock:
        started = time.monotonic()
        status, body = read_answer(sock)
    assert (status, code_of(body)) == (408, "CLIENT_TOO_SLOW")
    assert time.monotonic() - started < 5


def test_half_sent_headers_are_cut_at_the_head_timeout(probed: QueenProcess) -> None:
    with connect(probed) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: q\r\n")
        status, body = read_answer(sock)
    assert (status, code_of(body)) == (408, "CLIENT_TOO_SLOW")


def test_a_body_sent_a_byte_at_a_time_is_cut_on_an_inference_route(
    probed: QueenProcess,
) -> None:
    head = (
        "POST /v2/tasks HTTP/1.1\r\nHost: q\r\n"
        f"Authorization: Bearer {probed.token}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    with connect(probed) as sock:
        sock.sendall(head.encode())
        started = time.monotonic()
        with pytest.raises((BrokenPipeError, ConnectionResetError, TimeoutError)):
            for _ in range(100):
                sock.sendall(b" ")
                time.sleep(0.1)
        sock.settimeout(5)
        status, body = read_answer(sock)
    assert (status, code_of(body)) == (408, "CLIENT_TOO_SLOW")
    assert time.monotonic() - started < 5


def _post_head(token: str, *extra: str) -> bytes:
    lines = [
        "POST /v2/tasks HTTP/1.1",
        "Host: q",
        f"Authorization: Bearer {token}",
        "Content-Type: application/json",
        "Content-Length: 2",
        "Connection: close",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def nothing_comes_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""  # closed counts as an answer: not nothing
    except TimeoutError:
        return True
    finally:
        sock.settimeout(10)


def test_a_small_body_is_read_whole_before_the_app_runs(probed: QueenProcess) -> None:
    """The app (auth included) starts once the announced body is in, not at
    the head: a client sends them in two writes, and the queen's middleware,
    run between them, held up the body on a shared CPU."""
    with connect(probed) as sock:
        sock.sendall(_post_head("not-a-valid-token"))
        assert nothing_comes_within(sock, 0.5)  # started at the head: 401 at once
        sock.sendall(b"{}")
        status, body = read_answer(sock)
    assert (status, code_of(body)) == (401, "INVALID_API_KEY")


def test_a_client_waiting_for_100_continue_is_answered_at_its_head(
    probed: QueenProcess,
) -> None:
    with connect(probed) as sock:
        sock.sendall(_post_head("not-a-valid-token", "Expect: 100-continue"))
        status, body = read_answer(sock)  # no body sent: it waits for the queen
    assert (status, code_of(body)) == (401, "INVALID_API_KEY")


def test_one_address_cannot_hold_more_connections_than_the_cap(probed: QueenProcess) -> None:
    held = [connect(probed) for _ in range(16)]
    try:
        with connect(probed) as extra:
            status, body = read_answer(extra)
        assert (status, code_of(body)) == (503, "TOO_MANY_CONNECTIONS")
    finally:
        for sock in held:
            sock.close()


@pytest.mark.parametrize(("method", "path"), [("POST", "/health"), ("DELETE", "/v2/keys/list")])
def test_a_wrong_method_is_method_not_allowed(probed: QueenProcess, method: str, path: str) -> None:
    with probed.client() as client:
        r = client.request(method, path)
    assert (r.status_code, r.json()["error"]["code"]) == (405, "METHOD_NOT_ALLOWED")


def test_query_strings_are_redacted_in_the_access_log(probed: QueenProcess) -> None:
    secret = "tok-" + os.urandom(8).hex()
    assert httpx.get(f"{probed.url}/health?access_token={secret}").status_code == 200
    deadline = time.monotonic() + 5
    while "/health?[redacted]" not in probed.log and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "/health?[redacted]" in probed.log
    assert secret not in probed.log


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_queen_started_by_the_keeper_keeps_its_home_private(tmp_path: Path) -> None:
    home = tmp_path / "fresh-home"
    port = free_port()
    script = (
        "import httpx\n"
        "from rbee_keeper import local_queen\n"
        f"url = 'http://127.0.0.1:{port}'\n"
        "def up():\n"
        "    try:\n"
        "        return httpx.get(url + '/health', timeout=0.5).status_code == 200\n"
        "    except httpx.HTTPError:\n"
        "        return False\n"
        "print(local_queen.start(url, up).pid)\n"
    )
    env = {**os.environ, "RBEE_HOME": str(home)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, check=True)
    pid = int(out.stdout.split()[-1])
    try:
        assert mode(home) == 0o700
        assert mode(home / "logs") == 0o700
        for path in [home / "logs" / "queen.log", home / "queen.db", home / "api-token"]:
            assert mode(path) == 0o600, path
    finally:
        os.kill(pid, 15)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
