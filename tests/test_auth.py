"""Bearer auth on the real queen process: parsing, rights, keys, rotation, logs."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from rbee_keeper.cli import main as keeper
from rbee_queen.audit import audit_files, verify
from rbee_queen.secrets import fingerprint
from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.sshd import free_port


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def audit_text(home: Path) -> str:
    return "".join(p.read_text() for p in audit_files(home / "audit"))


def test_token_file_is_made_on_first_start_with_mode_0600(queen: QueenProcess) -> None:
    path = queen.home / "api-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(queen.token) >= 32


def test_health_is_public(queen: QueenProcess) -> None:
    with queen.anonymous() as c:
        assert c.get("/health").status_code == 200


@pytest.mark.parametrize(
    "path", ["/v2/registry/beehives/list", "/v2/workers/list", "/metrics", "/no/such/route"]
)
def test_missing_header_is_401_with_www_authenticate(queen: QueenProcess, path: str) -> None:
    with queen.anonymous() as c:
        r = c.get(path)
    assert r.status_code == 401
    assert error_code(r) == "MISSING_API_KEY"
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.headers["x-correlation-id"] == r.json()["error"]["correlation_id"]


def test_post_without_token_never_reaches_the_route(queen: QueenProcess) -> None:
    with queen.anonymous() as c:
        r = c.post("/v2/registry/beehives/add", json={"node_name": "n1"})
    assert (r.status_code, error_code(r)) == (401, "MISSING_API_KEY")


@pytest.mark.parametrize(
    "header",
    [
        "bearer {t}",  # lowercase scheme
        "Bearer  {t}",  # double space
        "Bearer{t}",  # no space
        "Token {t}",
        "Bearer {t},other",
        "Bearer {t}x",  # wrong token
        "Bearer",
        "Basic dXNlcjpwYXNz",
    ],
)
def test_malformed_or_wrong_tokens_are_401_invalid(queen: QueenProcess, header: str) -> None:
    value = header.format(t=queen.token)
    with queen.anonymous() as c:
        r = c.get("/v2/workers/list", headers={"Authorization": value})
    assert r.status_code == 401
    assert error_code(r) == "INVALID_API_KEY"
    assert r.headers["www-authenticate"] == "Bearer"
    assert queen.token not in r.text


def test_two_authorization_headers_are_refused(queen: QueenProcess) -> None:
    good = f"Bearer {queen.token}"
    with queen.anonymous() as c:
        r = c.get("/v2/workers/list", headers=[("Authorization", good), ("Authorization", good)])
    assert (r.status_code, error_code(r)) == (401, "INVALID_API_KEY")


def test_the_owner_token_works_and_nothing_logs_it(queen: QueenProcess) -> None:
    with queen.client() as c:
        assert c.get("/v2/workers/list").status_code == 200
    with queen.client(token="wrong-token-value") as c:
        assert c.get("/v2/workers/list").status_code == 401
    log, audit = queen.log, audit_text(queen.home)
    assert queen.token not in log and queen.token not in audit
    assert "wrong-token-value" not in log and "wrong-token-value" not in audit
    assert fingerprint("wrong-token-value") in log  # failures are named by fingerprint
    events = [json.loads(line)["event"] for line in audit.splitlines()]
    assert "auth.success" in events and "auth.failure" in events
    assert verify(queen.home / "audit").ok


def test_named_keys_rights_allow_list_and_revoke(
    queen: QueenProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ["--queen-url", queen.url]
    out = tmp_path / "ci.token"
    assert (
        keeper(
            [*url, "keys", "add", "--name", "ci", "--model", "file:/m/a", "--token-out", str(out)]
        )
        == 0
    )
    printed = capsys.readouterr()
    token = out.read_text().strip()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert token not in printed.out + printed.err
    assert keeper([*url, "--json", "keys", "list"]) == 0
    listed = capsys.readouterr().out
    assert token not in listed
    [key] = json.loads(listed)["keys"]
    assert (key["name"], key["admin"], key["models"]) == ("ci", False, ["file:/m/a"])

    with queen.client(token=token) as c:
        assert c.get("/v2/workers/list").status_code == 200  # reading is for every key
        r = c.post("/v2/workers/shutdown", json={"worker_id": "w-1"})
        assert (r.status_code, error_code(r)) == (403, "FORBIDDEN")  # managing is not
        assert c.get("/v2/keys/list").status_code == 403
        task = {"node": "n1", "model": "file:/m/b", "prompt": "hi"}
        r = c.post("/v2/tasks", json=task)
        assert (r.status_code, error_code(r)) == (403, "MODEL_NOT_ALLOWED")
        r = c.post("/v2/tasks", json={**task, "model": "file:/m/a"})
        assert error_code(r) == "NODE_NOT_FOUND"  # allowed: gets as far as the node

    assert keeper([*url, "keys", "revoke", "--name", "ci"]) == 0
    with queen.client(token=token) as c:
        assert c.get("/v2/workers/list").status_code == 401
    events = [json.loads(line)["event"] for line in audit_text(queen.home).splitlines()]
    assert {"key.added", "key.revoked", "auth.forbidden"} <= set(events)
    assert token not in audit_text(queen.home) and token not in queen.log


def test_sighup_rotates_the_owner_token_and_keeps_serving(queen: QueenProcess) -> None:
    old = queen.token
    path = queen.home / "api-token"
    tmp = path.with_name("new-token")
    tmp.write_text("rotated-token-0123456789\n")
    tmp.chmod(0o600)
    os.replace(tmp, path)
    with queen.client(token=old) as c:
        assert c.get("/v2/workers/list").status_code == 200  # not reloaded yet
    os.kill(queen.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    with queen.client(token=old) as c:
        while c.get("/v2/workers/list").status_code != 401:
            assert time.monotonic() < deadline, "SIGHUP did not reload the token"
            time.sleep(0.05)
    with queen.client(token="rotated-token-0123456789") as c:
        assert c.get("/v2/workers/list").status_code == 200
    assert queen.proc.poll() is None
    assert '"event":"config.reloaded"' in audit_text(queen.home)


def test_a_bad_token_file_on_sighup_keeps_the_old_token(queen: QueenProcess) -> None:
    old = queen.token
    (queen.home / "api-token").chmod(0o644)
    os.kill(queen.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while '"config.reload_failed"' not in audit_text(queen.home):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with queen.client(token=old) as c:
        assert c.get("/v2/workers/list").status_code == 200


def run_queen(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rbee_queen", "--port", str(free_port()), *args],
        env={**os.environ, "RBEE_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_non_loopback_bind_without_a_token_refuses_to_start(rbee_home: Path) -> None:
    result = run_queen(rbee_home, "--host", "0.0.0.0")  # noqa: S104 - the point
    assert result.returncode != 0
    assert "API token required for non-loopback bind" in result.stderr
    assert not (rbee_home / "api-token").exists()  # no silent token for a network bind


def test_non_loopback_bind_with_a_short_token_refuses(rbee_home: Path) -> None:
    result = run_queen(rbee_home, "--host", "0.0.0.0", RBEE_API_TOKEN="short-token")  # noqa: S104
    assert result.returncode != 0
    assert "at least 16 characters" in result.stderr
    assert "short-token" not in result.stderr


def test_a_world_readable_token_file_refuses_to_start(rbee_home: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("a-long-enough-token-123456\n")
    token_file.chmod(0o644)
    result = run_queen(rbee_home, "--token-file", str(token_file))
    assert result.returncode != 0
    assert "SECRET_INVALID" in result.stderr and "chmod 600" in result.stderr
    assert "a-long-enough-token-123456" not in result.stderr


def test_systemd_credential_is_the_token(rbee_home: Path, tmp_path: Path) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "rbee-api-token").write_text("credential-token-0123456789\n")
    (creds / "rbee-api-token").chmod(0o400)
    os.environ["CREDENTIALS_DIRECTORY"] = str(creds)
    try:
        queen = start_queen(rbee_home)
    finally:
        del os.environ["CREDENTIALS_DIRECTORY"]
    try:
        with queen.client(token="credential-token-0123456789") as c:
            assert c.get("/v2/workers/list").status_code == 200
        assert not (rbee_home / "api-token").exists()
    finally:
        stop_queen(queen)
