"""Names and paths that try shell, SQL and path injection: refused, or taken
literally, and nothing they ask for ever runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from rbee_keeper.cli import main as keeper
from tests.plugins.queen import QueenProcess
from tests.plugins.sshd import SshServer


def hostile_names(canary: Path) -> list[str]:
    return [
        f"n1; touch {canary}",
        f"$(touch {canary})",
        f"`touch {canary}`",
        f"n1 && touch {canary}",
        f"n1 | touch {canary}",
        "n1' OR '1'='1",
        "n1'; DROP TABLE node; --",
        "../../etc/passwd",
        "n1\ntouch x",
        "n1\x00",
    ]


def test_hostile_node_names_are_refused_and_nothing_runs(
    queen: QueenProcess, sshd: SshServer, tmp_path: Path
) -> None:
    canary = tmp_path / "canary"
    with queen.client() as c:
        for name in hostile_names(canary):
            r = c.post("/v2/registry/beehives/add", json=sshd.node_body(name, tmp_path / "i"))
            assert r.status_code == 400, name
            fields = [f["field"] for f in r.json()["error"]["details"]["fields"]]
            assert fields == ["node_name"], name
            r = c.post("/v2/registry/beehives/remove", json={"node_name": name})
            assert r.status_code == 400, name
        assert c.get("/v2/registry/beehives/list").json()["nodes"] == []
    assert not canary.exists()


def test_hostile_model_refs_are_refused_and_nothing_runs(
    queen: QueenProcess, sshd: SshServer, tmp_path: Path
) -> None:
    canary = tmp_path / "canary"
    with queen.client() as c:
        r = c.post(
            "/v2/registry/beehives/add",
            json=sshd.node_body("n1", tmp_path / "i", accept_new_host_key=True),
        )
        assert r.status_code == 201, r.text
        refs = [
            f"file:/tmp/$(touch {canary})",
            f"file:/tmp/x;touch {canary}",
            f"file:/tmp/`touch {canary}`",
            "file:/../../etc/passwd",
            "file:/models/../../etc",
            "file:relative/path",
        ]
        for ref in refs:
            r = c.post("/v2/tasks", json={"node": "n1", "model": ref, "prompt": "hi"})
            assert r.status_code == 400, ref
        assert c.get("/v2/workers/list").json()["workers"] == []
    assert not canary.exists()


def test_shell_characters_in_paths_are_taken_literally(
    queen: QueenProcess, sshd: SshServer, tmp_path: Path, tiny_model_dir: Path
) -> None:
    """install_path and worker_python are free text: they must reach the node as
    one argument each, never as shell."""
    canary = tmp_path / "canary"
    install = f"{tmp_path}/inst; touch {canary}"
    body = sshd.node_body("n1", Path(install), accept_new_host_key=True)
    body["worker_python"] = f"python3; touch {canary}"
    with queen.client() as c:
        r = c.post("/v2/registry/beehives/add", json=body)
        assert r.status_code == 201, r.text
        task = {"node": "n1", "model": f"file:{tiny_model_dir}", "prompt": "hi", "max_tokens": 2}
        r = c.post("/v2/tasks", json=task)
        # No such program "python3; touch ...": the spawn fails, as it should.
        assert r.status_code == 502, r.text
        assert r.json()["error"]["code"] in ("HELPER_FAILED", "WORKER_START_FAILED")
    assert Path(install).is_dir()  # the odd name became a directory, nothing more
    assert not canary.exists()


@pytest.mark.parametrize("name", ["x;touch /tmp/rbee-canary", "$(id)", "a b"])
def test_the_keeper_refuses_hostile_names_too(
    queen: QueenProcess, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = keeper(["--queen-url", queen.url, "setup", "remove-node", "--name", name])
    assert code == 1
    assert "[INVALID_REQUEST]" in capsys.readouterr().err
    assert not Path("/tmp/rbee-canary").exists()
