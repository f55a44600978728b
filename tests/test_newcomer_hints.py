"""docs/troubleshooting.md against the situations it names.

Each case below brings about one row's situation for real (a real queen, a real
sshd, real files) and checks that the one line the user sees matches what the
row says they see: the row's text is the pattern, its placeholders (PATH, NODE,
…) standing for any text. A row whose text drifts from the real message fails.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from rbee_keeper.token import TOKEN_FILE_ENV
from rbee_queen.errors import HelperFailed
from rbee_queen.fleet.known_hosts import HostKeyStore
from rbee_queen.fleet.session import open_session
from tests.plugins.queen import QueenProcess
from tests.plugins.sshd import SshServer, free_port
from tests.test_newcomer_errors import load_as_nobody, open_dir  # noqa: F401 - fixture
from tests.test_newcomer_nosftp import sshd_without_sftp  # noqa: F401 - fixture

DOC = Path(__file__).resolve().parents[1] / "docs" / "troubleshooting.md"
PLACEHOLDERS: tuple[str, ...] = (
    "CHECK",
    "KEYFILE",
    "PATH",
    "NODE",
    "PYTHON",
    "USER",
    "user@host:port",
)
PLACEHOLDERS += ("N", "NNNNNN", "M", "X", "STEP", "REASON")


def rows() -> list[str]:
    """The 'you see' cell of every row of the main table, backticks and all."""
    cells = [line.split(" | ")[0].lstrip("| ") for line in DOC.read_text().splitlines()]
    return [cell for cell in cells if cell.startswith("`")]


def row_patterns(start: str) -> list[re.Pattern[str]]:
    """The row that starts with `start`, as one pattern per alternative it lists."""
    (row,) = [cell for cell in rows() if cell.startswith(f"`{start}")]
    shown = re.findall(r"`([^`]+)`", row)
    return [_pattern(text) for text in shown]


def doc_pattern(start: str) -> re.Pattern[str]:
    """The one backticked text anywhere on the page (the Models and GPU sections
    too) that starts with `start`, as a pattern."""
    (text,) = shown_text(start)
    return _pattern(text)


def shown_text(start: str) -> set[str]:
    """The backticked texts of the page that `start` names: the one equal to it
    (`[INSUFFICIENT_VRAM]` beside longer lines with that code), else every one
    that starts with it. A line break in a text reads as a space."""
    shown = {" ".join(t.split()) for t in re.findall(r"`([^`]+)`", DOC.read_text())}
    return {start} if start in shown else {t for t in shown if t.startswith(start)}


def _pattern(text: str) -> re.Pattern[str]:
    # A leading "… " is any text before, or none.
    lead = "(?:.* )?" if text.startswith("… ") else ""
    expr = lead + re.escape(text.removeprefix("… ")).replace("…", ".*")
    for word in PLACEHOLDERS:  # whole words only: NODE, not NODE_UNREACHABLE
        expr = re.sub(rf"(?<!\w){re.escape(re.escape(word))}(?!\w)", ".+", expr)
    return re.compile(expr)


def add_node(queen: QueenProcess, body: dict[str, object]) -> str:
    """The line the keeper prints for a refused add-node: `[CODE] message`."""
    with queen.client() as client:
        answer = client.post("/v2/registry/beehives/add", json=body)
    assert answer.status_code >= 400, answer.text
    error = answer.json()["error"]
    return f"[{error['code']}] {error['message']}"


# add-node wraps a failed check's error as `preflight CHECK: <error>; try: <what to do>`,
# which the table's own preflight row documents; the error's row names the rest.
PREFLIGHT = re.compile(r"(\[\w+\] )preflight \w+: (.*?)(?:; verify it and retry .*)?; try: .*")


def assert_row(start: str, seen: str) -> None:
    patterns = row_patterns(start)
    wrapped = PREFLIGHT.fullmatch(seen)
    if wrapped:
        assert any(p.match(seen) for p in row_patterns("[…] preflight CHECK")), seen
        seen = wrapped[1] + wrapped[2]
    # A row shows how the line starts: the rest may go on (the path, the suggestion).
    assert any(p.match(seen) for p in patterns), (seen, [p.pattern for p in patterns])


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def node_cases(sshd: SshServer, tmp: Path) -> dict[str, Callable[[dict[str, object]], None]]:
    """Row start -> how to change a good add-node body into that row's situation."""

    def insecure_key(body: dict[str, object]) -> None:
        key = tmp / "loose_key"
        shutil.copy(sshd.client_key, key)
        key.chmod(0o644)
        body["ssh_key_path"] = str(key)

    return {
        "[SSH_KEY_NOT_FOUND]": lambda body: body.update(ssh_key_path=str(tmp / "nope")),
        "[HOST_KEY_UNKNOWN]": lambda body: body.update(accept_new_host_key=False),
        "[SSH_KEY_INSECURE]": insecure_key,
        "[SSH_AUTH_FAILED]": lambda body: body.update(ssh_key_path=str(keygen(tmp / "other"))),
        "[NODE_UNREACHABLE]": lambda body: body.update(ssh_port=free_port()),
    }


def test_add_node_rows_match_the_real_messages(
    queen: QueenProcess, sshd: SshServer, tmp_path: Path
) -> None:
    for start, change in node_cases(sshd, tmp_path).items():
        body = sshd.node_body("n1", tmp_path / "inst", accept_new_host_key=True)
        change(body)
        assert_row(start, add_node(queen, body))


def test_token_rows_match_the_real_messages(queen: QueenProcess) -> None:
    with queen.anonymous() as client:
        missing = client.get("/v2/workers").json()["error"]
        wrong = client.get("/v2/workers", headers={"Authorization": "Bearer nope"}).json()
    for error in (missing, wrong["error"]):
        assert_row("[MISSING_API_KEY]", f"[{error['code']}]")


def test_a_node_without_sftp_whose_python_fails_matches_its_row(
    sshd_without_sftp: SshServer,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    node = sshd_without_sftp.target(tmp_path / "inst", "/nonexistent/python3")
    store = HostKeyStore(tmp_path / "known_hosts")
    with pytest.raises(HelperFailed) as failure:
        asyncio.run(open_session(node, store, connect_timeout=10, accept_new_host_key=True))
    assert_row("[HELPER_FAILED] cannot upload", f"[HELPER_FAILED] {failure.value.message}")


def test_an_unreadable_model_matches_its_row(
    tiny_model_dir: Path,
    open_dir: Path,  # noqa: F811 - the imported fixture
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to load as another user")
    model = open_dir / "model"
    shutil.copytree(tiny_model_dir, model)
    model.chmod(0o700)
    _, error = load_as_nobody(model)
    assert_row("… permission denied", error)


def test_every_pattern_parses_and_placeholders_are_not_literal() -> None:
    assert len(rows()) > 20
    assert row_patterns("[SSH_KEY_NOT_FOUND]")[0].fullmatch(
        "[SSH_KEY_NOT_FOUND] SSH key not found: /any/path"
    )
    assert not row_patterns("[SSH_KEY_NOT_FOUND]")[0].fullmatch("[SSH_KEY_NOT_FOUND] other words")


def test_the_docs_python_minimum_is_the_preflights() -> None:
    from rbee_queen.nodes.preflight import MIN_PYTHON

    version = ".".join(map(str, MIN_PYTHON))
    assert f"install Python {version}+ on the node" in DOC.read_text()


def test_a_node_whose_python_cannot_run_matches_its_row(sshd: SshServer, tmp_path: Path) -> None:
    node = sshd.target(tmp_path / "inst", "/nonexistent/python3")
    store = HostKeyStore(tmp_path / "known_hosts")
    with pytest.raises(HelperFailed) as failure:
        asyncio.run(open_session(node, store, connect_timeout=10, accept_new_host_key=True))
    assert_row("[HELPER_FAILED] helper did not start", f"[HELPER_FAILED] {failure.value.message}")


def test_a_loose_token_file_matches_its_row(
    queen: QueenProcess,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rbee_keeper.cli import main

    token = tmp_path / "token"
    token.write_text(queen.token + "\n")
    token.chmod(0o644)
    # The environment's form of --token-file: main() exports the option there,
    # and monkeypatch takes it back out for the tests that follow.
    monkeypatch.setenv(TOKEN_FILE_ENV, str(token))
    assert main(["workers", "list", "--queen-url", queen.url]) == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: ")
    assert_row("[SECRET_INVALID]", line.removeprefix("error: "))


def test_a_replaced_host_key_matches_its_row(
    queen: QueenProcess, sshd: SshServer, tmp_path: Path
) -> None:
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHX1NqnxQHf0zJqxc3t5BC4YKv1ZnDSnm2Yb0r2ZkDsE"
    (queen.home / "known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {other}\n")
    body = sshd.node_body("n1", tmp_path / "inst", accept_new_host_key=True)
    assert_row("[HOST_KEY_CHANGED]", add_node(queen, body))


def test_a_network_bind_without_a_token_matches_its_row(rbee_home: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rbee_queen", "--host", "0.0.0.0", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RBEE_HOME": str(rbee_home)},
    )
    assert done.returncode == 1
    assert_row("rbee-queen: error: [INSECURE_BIND]", done.stderr.strip().splitlines()[-1])


def test_an_install_path_nobody_may_write_is_the_preflight_row_with_or_without_sftp(
    queen: QueenProcess,
    sshd: SshServer,
    sshd_without_sftp: SshServer,  # noqa: F811 - the imported fixture
) -> None:
    # /proc takes no new folder, root's included; the login here is root.
    for server in (sshd, sshd_without_sftp):
        line = add_node(queen, server.node_body("n1", Path("/proc/rbee"), accept_new_host_key=True))
        assert line.startswith("[PREFLIGHT_FAILED] preflight install_path: n1: /proc/rbee "), line
        assert "(No such file" in line, line  # the node's own reason
        assert any(p.match(line) for p in row_patterns("[PREFLIGHT_FAILED]")), line
