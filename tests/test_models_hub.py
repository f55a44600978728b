"""Models on nodes, end to end: queen -> huggingface_hub -> fake hub; SFTP -> node.

The real Hugging Face hub cannot be reached from where these tests run, so
`huggingface_hub` (unmodified) talks to a real HTTP server on loopback that
serves the hub's URL layout (tests/plugins/fakehub.py), through HF_ENDPOINT
set in the queen's environment. The node is the loopback sshd.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.plugins.fakehub import FakeHub
from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.sshd import SshServer
from tests.test_infer_e2e import add_node, stream_task, workers


def download(queen: QueenProcess, node: str, model: str) -> tuple[int, list[dict]]:
    """(HTTP status, events): the events of the stream, or the error envelope."""
    with queen.client() as c:
        with c.stream("POST", "/v2/models/download", json={"node": node, "model": model}) as r:
            if r.status_code != 200:
                return r.status_code, [json.loads(r.read())]
            events = []
            for line in r.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    events.append(json.loads(line[len("data: ") :]))
            return 200, events


def listed(queen: QueenProcess, node: str | None = None) -> list[dict]:
    with queen.client() as c:
        r = c.get("/v2/models", params={"node": node} if node else {})
    assert r.status_code == 200, r.text
    models: list[dict] = r.json()["models"]
    return models


def keeper(queen: QueenProcess, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RBEE_HOME": str(queen.home)}
    command = [sys.executable, "-m", "rbee_keeper", "--queen-url", queen.url, *argv]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_verify_infer_and_remove(
    hub_queen: QueenProcess, fakehub: FakeHub, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    fakehub.add_folder("Org/Tiny", tiny_model_dir, {"pytorch_model.bin": b"pickled decoy" * 100})
    add_node(hub_queen, sshd, tmp_path)

    status, events = download(hub_queen, "n1", "hf:Org/Tiny")
    assert status == 200, events
    assert events[0]["type"] == "start" and events[-1]["type"] == "done", events
    assert any(e["type"] == "progress" for e in events)
    assert not any(name.endswith(".bin") for name in fakehub.fetched)  # the decoy stayed away
    folder = tmp_path / "install" / "models" / "hf" / "Org" / "Tiny"
    check_downloaded(events[-1]["model"], folder, tiny_model_dir)
    assert not (tmp_path / "install" / "models" / ".partial" / "hf" / "Org" / "Tiny").exists()
    (entry,) = listed(hub_queen, "n1")
    assert entry["ref"] == "hf:Org/Tiny" and entry["status"] == "complete"

    # Asking again finds it complete: nothing more is fetched.
    before = len(fakehub.fetched)
    status, events = download(hub_queen, "n1", "hf:Org/Tiny")
    assert events[-1].get("already") is True and len(fakehub.fetched) == before

    # The worker loads the downloaded folder: the reference resolves through the catalog.
    task = {"node": "n1", "model": "hf:Org/Tiny", "prompt": "hi", "max_tokens": 4}
    events, _ = stream_task(hub_queen, **task, temperature=0.0)
    assert [e["type"] for e in events][-2:] == ["end", "DONE"], events
    (worker,) = workers(hub_queen)
    assert worker["model_ref"] == "hf:Org/Tiny"
    assert listed(hub_queen, "n1")[0]["last_used"] is not None

    remove_refused_while_in_use_then_done(hub_queen, worker["worker_id"], folder)
    download_and_list_through_keeper(hub_queen)

    # A folder deleted by hand is noticed.
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
    assert listed(hub_queen, "n1")[0]["status"] == "missing"
    with hub_queen.client() as c:
        r = c.post("/v2/tasks", json=task)
    assert r.status_code == 404 and r.json()["error"]["code"] == "MODEL_NOT_FOUND"


def check_downloaded(model: dict, folder: Path, source: Path) -> None:
    """The done event's model is the node's folder, holding the source's files."""
    assert Path(model["local_path"]) == folder.resolve()
    expected = {p.name: sha(p) for p in source.iterdir() if p.is_file()}
    assert {f["name"]: f["sha256"] for f in model["files"]} == expected
    assert {p.name: sha(p) for p in folder.iterdir()} == expected
    assert model["size_bytes"] == sum(p.stat().st_size for p in source.iterdir())


def remove_refused_while_in_use_then_done(
    queen: QueenProcess, worker_id: str, folder: Path
) -> None:
    """A model in use is not removed; once its worker is shut down it is."""
    with queen.client() as c:
        body = {"node": "n1", "model": "hf:Org/Tiny"}
        refused = c.post("/v2/models/remove", json=body)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "MODEL_IN_USE"
        assert folder.is_dir()
        c.post("/v2/workers/shutdown", json={"worker_id": worker_id})
        removed = c.post("/v2/models/remove", json=body)
    assert removed.status_code == 200, removed.text
    assert not folder.exists() and listed(queen) == []


def download_and_list_through_keeper(queen: QueenProcess) -> None:
    """Through the keeper: download (progress on stderr), then list."""
    done = keeper(queen, "models", "download", "--node", "n1", "hf:Org/Tiny")
    assert done.returncode == 0, done.stderr
    assert "hf:Org/Tiny downloaded on n1" in done.stdout
    shown = keeper(queen, "--json", "models", "list", "--node", "n1")
    assert [m["status"] for m in json.loads(shown.stdout)["models"]] == ["complete"]


def test_hub_errors_corruption_resume_and_copy(
    hub_queen: QueenProcess, fakehub: FakeHub, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    fakehub.add_folder("Org/Tiny", tiny_model_dir)
    fakehub.add_folder("Org/Private", tiny_model_dir)
    fakehub.private["Org/Private"] = "hf_secret"
    fakehub.add_folder("Org/Huge", tiny_model_dir)
    fakehub.sizes[("Org/Huge", "model.safetensors")] = 1 << 60
    add_node(hub_queen, sshd, tmp_path)

    status, (body,) = download(hub_queen, "n1", "hf:Org/Missing")
    assert (status, body["error"]["code"]) == (404, "MODEL_NOT_FOUND")
    status, (body,) = download(hub_queen, "n1", "hf:Org/Private")
    assert (status, body["error"]["code"]) == (403, "HF_TOKEN_REQUIRED")
    assert "token" in body["error"]["message"] and "hf_secret" not in body["error"]["message"]
    status, (body,) = download(hub_queen, "n1", "hf:Org/Huge")
    assert (status, body["error"]["code"]) == (507, "INSUFFICIENT_DISK")
    assert body["error"]["details"]["required_bytes"] >= 1 << 60

    corrupted_downloads_fail_and_the_retry_resumes(hub_queen, fakehub, tmp_path)

    queen = restart_with_token_file(hub_queen, tmp_path)
    try:
        status, events = download(queen, "n1", "hf:Org/Private")
        assert events[-1]["type"] == "done", events
        copy_to_a_second_node(queen, sshd, tmp_path, tiny_model_dir)
    finally:
        stop_queen(queen)


def corrupted_downloads_fail_and_the_retry_resumes(
    queen: QueenProcess, fakehub: FakeHub, tmp_path: Path
) -> None:
    # A small file kept in git (no SHA-256 on the hub, same size when damaged) is
    # caught by its git blob id.
    fakehub.corrupt.add("config.json")
    status, events = download(queen, "n1", "hf:Org/Tiny")
    assert events[-1]["type"] == "error" and events[-1]["code"] == "DOWNLOAD_FAILED", events
    assert "config.json" in events[-1]["message"]
    assert listed(queen) == []
    fakehub.corrupt.clear()

    # A corrupted weights file is caught by its hash: no catalog entry, no model folder.
    fakehub.corrupt.add("model.safetensors")
    status, events = download(queen, "n1", "hf:Org/Tiny")
    assert events[-1]["type"] == "error" and events[-1]["code"] == "DOWNLOAD_FAILED", events
    assert listed(queen) == []
    assert not (tmp_path / "install" / "models" / "hf" / "Org" / "Tiny").exists()

    # Fixed at the source: the retry keeps what already reached the node.
    fakehub.corrupt.clear()
    status, events = download(queen, "n1", "hf:Org/Tiny")
    assert events[-1]["type"] == "done", events
    assert {e["file"] for e in events if e["type"] == "skip"} >= {"config.json"}


def restart_with_token_file(queen: QueenProcess, tmp_path: Path) -> QueenProcess:
    """A token file opens the private repo (a fresh queen reads RBEE_HF_TOKEN_FILE)."""
    token = tmp_path / "hf-token"
    token.write_text("hf_secret\n")
    token.chmod(0o600)
    stop_queen(queen)
    os.environ["RBEE_HF_TOKEN_FILE"] = str(token)
    try:
        return start_queen(queen.home)
    finally:
        del os.environ["RBEE_HF_TOKEN_FILE"]


def copy_to_a_second_node(
    queen: QueenProcess, sshd: SshServer, tmp_path: Path, tiny_model_dir: Path
) -> None:
    """Copy to a second node (same host, another install path) through the queen."""
    add_node(queen, sshd, tmp_path / "second", name="n2")
    with queen.client() as c:
        body = {"from": "n1", "to": "n2", "model": "hf:Org/Tiny"}
        with c.stream("POST", "/v2/models/copy", json=body) as r:
            assert r.status_code == 200, r.read()
            lines = [x for x in r.iter_lines() if x.startswith("data: {")]
    done = json.loads(lines[-1][len("data: ") :])
    assert done["type"] == "done", done
    copied = tmp_path / "second" / "install" / "models" / "hf" / "Org" / "Tiny"
    expected = {p.name: sha(p) for p in tiny_model_dir.iterdir() if p.is_file()}
    assert {p.name: sha(p) for p in copied.iterdir()} == expected
    assert {m["node"] for m in listed(queen) if m["ref"] == "hf:Org/Tiny"} == {"n1", "n2"}


def test_insufficient_ram_refused_before_spawn(
    queen: QueenProcess, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A model whose weights cannot fit in RAM is refused with the numbers; no worker starts.
    (The weights file is sparse: it claims a terabyte and uses no disk.)"""
    huge = tmp_path / "huge"
    huge.mkdir()
    (huge / "config.json").write_bytes((tiny_model_dir / "config.json").read_bytes())
    with open(huge / "model.safetensors", "wb") as fh:
        fh.truncate(1 << 40)
    add_node(queen, sshd, tmp_path)
    with queen.client() as c:
        r = c.post("/v2/tasks", json={"node": "n1", "model": f"file:{huge}", "prompt": "x"})
    error = r.json()["error"]
    assert (r.status_code, error["code"]) == (507, "INSUFFICIENT_RAM"), r.text
    assert error["details"]["required_bytes"] == int((1 << 40) * 1.2)
    assert error["details"]["available_bytes"] > 0
    assert workers(queen) == []


def test_model_reference_is_checked_before_anything_else(queen: QueenProcess) -> None:
    with queen.client() as c:
        for model in ("hf:Org", "hf:../x/y", "hf:Org/Repo/extra", "hf:.x/y", "file:/tmp/x"):
            r = c.post("/v2/models/download", json={"node": "nowhere", "model": model})
            assert r.status_code == 400, (model, r.text)
            assert r.json()["error"]["code"] == "INVALID_REQUEST"
