"""`setup install` for real: queen -> sshd -> helper builds <install_path>/venv.

Offline-safe: the venv is made from this test run's own interpreter with
`--no-deps`, so its packages (torch, starlette, ...) come from that
interpreter's environment and pip never reaches an index. A worker is then
spawned from the new venv and answers a task.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rbee_queen.nodes.wheel import build_wheel
from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.sshd import SshServer
from tests.test_infer_e2e import stream_task, workers


@pytest.fixture
def queen(
    rbee_home: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[QueenProcess]:
    """A queen pinned to one wheel, built here: the tree may change during the test."""
    cache = tmp_path_factory.mktemp("wheel-cache")
    wheel = build_wheel(cache)
    assert build_wheel(cache) == wheel  # built once per tree, then cached
    monkeypatch.setenv("RBEE_WHEEL", str(wheel.path))
    q = start_queen(rbee_home)
    try:
        yield q
    finally:
        stop_queen(q)


def add_node(queen: QueenProcess, sshd: SshServer, name: str, install: Path) -> None:
    queen.add_node(sshd.node_body(name, install, accept_new_host_key=True))


def node_row(queen: QueenProcess, name: str) -> dict:
    with queen.client() as c:
        nodes = c.get("/v2/registry/beehives/list").json()["nodes"]
    return next(n for n in nodes if n["node_name"] == name)


def install(queen: QueenProcess, **body: object) -> tuple[int, dict]:
    with queen.client() as c:
        r = c.post("/v2/registry/beehives/install", json=body, timeout=300)
    return r.status_code, r.json()


def leftovers(install_dir: Path) -> list[str]:
    return sorted(p.name for p in install_dir.glob(".venv.tmp-*"))


def keeper(queen: QueenProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rbee_keeper", "--queen-url", queen.url, *args],
        env={**os.environ, "RBEE_HOME": str(queen.home)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_install_then_infer_then_noop_then_failure_keeps_venv(
    queen: QueenProcess, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    install_dir = tmp_path / "install"
    add_node(queen, sshd, "n1", install_dir)
    venv_python = str(install_dir / "venv" / "bin" / "python")

    done = keeper(
        queen, "setup", "install", "--node", "n1", "--python", sys.executable, "--no-deps"
    )
    assert done.returncode == 0, done.stderr
    assert f"installed on n1: workers now run {venv_python}" in done.stdout
    for step in ("wheel", "upload", "venv", "pip", "check", "activate"):
        assert f"  {step} " in done.stdout, done.stdout
    assert node_row(queen, "n1")["worker_python"] == venv_python
    assert leftovers(install_dir) == []
    marker = json.loads((install_dir / "venv" / "rbee-install.json").read_text())
    # The wheel's own copy of rbee is what the venv imports, not the source tree.
    where = subprocess.run(
        [venv_python, "-c", "import rbee_queen; print(rbee_queen.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,  # not the source tree
    ).stdout
    assert where.startswith(str(install_dir / "venv")), where

    # A worker spawned from the new venv answers a task.
    task = {"node": "n1", "model": f"file:{tiny_model_dir}", "prompt": "hi", "max_tokens": 4}
    events, _ = stream_task(queen, **task)
    assert [e["type"] for e in events][-2:] == ["end", "DONE"]
    (worker,) = workers(queen)
    pid_file = install_dir / "run" / f"{worker['worker_id']}.pid"
    assert json.loads(pid_file.read_text())["argv"][0] == venv_python

    # The same wheel and options again: nothing to do, nothing touched.
    status, again = install(
        queen, node_name="n1", python=sys.executable, system_site_packages=True, no_deps=True
    )
    assert status == 200, again
    assert again["changed"] is False
    assert json.loads((install_dir / "venv" / "rbee-install.json").read_text()) == marker

    # A failing install (no such interpreter) leaves the working venv in place.
    status, failed = install(queen, node_name="n1", python="/no/such/python3")
    assert status == 502, failed
    assert failed["error"]["code"] == "INSTALL_FAILED"
    assert "/no/such/python3" in failed["error"]["message"]
    assert json.loads((install_dir / "venv" / "rbee-install.json").read_text()) == marker
    assert node_row(queen, "n1")["worker_python"] == venv_python
    assert leftovers(install_dir) == []


def test_failed_install_leaves_a_fresh_node_as_it_was(
    queen: QueenProcess, sshd: SshServer, tmp_path: Path
) -> None:
    install_dir = tmp_path / "install"
    add_node(queen, sshd, "n2", install_dir)
    before = node_row(queen, "n2")["worker_python"]

    status, failed = install(queen, node_name="n2", python="/no/such/python3", no_deps=True)
    assert status == 502 and failed["error"]["code"] == "INSTALL_FAILED", failed
    # A real venv that lacks the worker's packages: built, checked, then thrown away.
    bare = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    status, missing = install(queen, node_name="n2", python=bare, no_deps=True)
    assert status == 400 and missing["error"]["code"] == "DEPENDENCIES_MISSING", missing
    assert "torch" in missing["error"]["message"]

    assert not (install_dir / "venv").exists()
    assert leftovers(install_dir) == []
    assert node_row(queen, "n2")["worker_python"] == before


def test_install_unknown_node(queen: QueenProcess) -> None:
    status, answer = install(queen, node_name="ghost")
    assert status == 404 and answer["error"]["code"] == "NODE_NOT_FOUND"
