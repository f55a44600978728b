"""`rbee-keeper doctor` against a real queen, a real sshd node and real files."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from rbee_keeper.cli import main
from rbee_keeper.commands.doctor import check_ssh, check_token
from tests.plugins.queen import QueenProcess
from tests.plugins.sshd import SshServer, free_port


def doctor(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    code = main(["doctor", *argv])
    return code, capsys.readouterr().out.splitlines()


def test_a_healthy_setup_passes_every_check(
    queen: QueenProcess, sshd: SshServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queen.add_node(sshd.node_body("n1", tmp_path / "inst", accept_new_host_key=True))
    code, lines = doctor(capsys, "--queen-url", queen.url)
    assert lines[0].startswith(f"ok   queen: answers at {queen.url}")
    assert lines[1] == "ok   token: readable"
    assert any(line.startswith("ok   node n1: preflight passed: python 3.") for line in lines)
    # The ssh line depends on this machine's agent and keys; the rest decides the code.
    ssh_ok = any(line.startswith("ok   ssh:") for line in lines)
    assert code == (0 if ssh_ok else 1)


def test_no_queen_and_no_token_say_what_to_do(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, lines = doctor(capsys, "--queen-url", url)
    assert code == 1
    assert lines[0] == f"FAIL queen: no answer at {url}"
    assert lines[1].startswith("     fix: start it: any rbee-keeper command does")
    assert lines[2].startswith("FAIL token: none at ") and lines[2].endswith("api-token")
    assert lines[3] == "     fix: the queen writes it on its first start"
    assert not any(line.split()[1] == "node" for line in lines)  # no queen: no fleet to ask


def test_json_output_lists_every_check(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    code = main(["doctor", "--json", "--queen-url", f"http://127.0.0.1:{free_port()}"])
    body = json.loads(capsys.readouterr().out)
    assert code == 1 and body["ok"] is False
    assert [c["check"] for c in body["checks"]] == ["queen", "token", "ssh"]


def test_ssh_needs_an_agent_or_a_key(tmp_path: Path) -> None:
    ssh_dir = tmp_path / ".ssh"
    ssh_dir.mkdir()
    missing = check_ssh({}, ssh_dir)
    assert not missing.ok and "ssh-keygen" in missing.fix
    (ssh_dir / "id_ed25519").write_text("key")
    assert check_ssh({}, ssh_dir).detail == str(ssh_dir / "id_ed25519")
    agent_path = tmp_path / "agent.sock"
    with socket.socket(socket.AF_UNIX) as agent:
        agent.bind(str(agent_path))
        found = check_ssh({"SSH_AUTH_SOCK": str(agent_path)}, tmp_path / "none")
    assert found.ok and found.detail == "an ssh-agent"
    # A path that is not a socket is no agent.
    assert not check_ssh({"SSH_AUTH_SOCK": str(ssh_dir / "id_ed25519")}, tmp_path / "none").ok


def test_a_token_others_can_read_is_named_with_its_fix(rbee_home: Path) -> None:
    token = rbee_home / "api-token"
    token.write_text("a-token-of-enough-length-here\n")
    token.chmod(0o644)
    finding = check_token("http://127.0.0.1:1")
    assert not finding.ok and "chmod 600" in finding.fix
    assert str(token) in finding.detail
    token.chmod(0o600)
    assert check_token("http://127.0.0.1:1").ok


def test_a_node_failing_one_preflight_check_gets_its_fix(
    queen: QueenProcess, sshd: SshServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    install = tmp_path / "inst"
    queen.add_node(sshd.node_body("n1", install, accept_new_host_key=True))
    # The install path stops being a folder anyone can write to (root included):
    # the helper already running there goes on answering, the check fails.
    install.rename(tmp_path / "moved")
    install.write_text("not a folder")
    install.chmod(0o600)
    code, lines = doctor(capsys, "--queen-url", queen.url)
    assert code == 1
    at = lines.index(next(line for line in lines if line.startswith("FAIL node n1: ")))
    assert lines[at] == (
        f"FAIL node n1: [PREFLIGHT_FAILED] preflight install_path: n1: {install} not writable"
    )
    assert lines[at + 1] == "     fix: choose an --install-path the SSH user may write to"


def test_the_preflight_route_reports_every_check(
    queen: QueenProcess, sshd: SshServer, tmp_path: Path
) -> None:
    queen.add_node(sshd.node_body("n1", tmp_path / "inst", accept_new_host_key=True))
    with queen.client() as client:
        (report,) = client.get("/v2/nodes/preflight", params={"node": "n1"}).json()["nodes"]
        unknown = client.get("/v2/nodes/preflight", params={"node": "n9"})
    assert report["ok"] is True and report["failed"] is None
    assert [c["name"] for c in report["checks"]] == list(CHECK_NAMES)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "NODE_NOT_FOUND"


CHECK_NAMES = ("key", "connect", "host_key", "authenticate", "run", "latency")
CHECK_NAMES += ("python", "install_path", "disk")
