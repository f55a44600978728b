"""docs/troubleshooting.md's Models section (and the download timeout row), for real.

A real queen whose huggingface_hub talks to the fake hub of tests/plugins
(the hub's URL layout on loopback), a real sshd node, the tiny model's files:
a private repo, a repo with only pickled weights, a model not yet on the node,
bytes damaged on the way, a repo too big for the disk, a stalled transfer,
a node that downloads for itself with a python lacking huggingface_hub,
model folders deleted or changed on the node, a download process killed
on the node, a copy from a node whose file changed since it was recorded, and
a model bigger than the node's RAM. (A node that cannot reach the hub needs a
host apart: tests/test_newcomer_hints_testbed.py.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from rbee_keeper.cli import main as keeper
from tests.plugins.fakehub import FakeHub
from tests.plugins.queen import QueenProcess
from tests.plugins.sshd import SshServer
from tests.test_downloads import wait_until_fetching
from tests.test_infer_e2e import add_node
from tests.test_models_hub import download
from tests.test_newcomer_hints import assert_row, doc_pattern

WEIGHTS = "model.safetensors"


def last_error(answer: tuple[int, list[dict]]) -> str:
    """The line the keeper prints: the refusal, or the stream's error event."""
    _, events = answer
    error = events[-1].get("error") or events[-1]
    assert error.get("code"), events
    return f"[{error['code']}] {error['message']}"


def assert_shown(start: str, line: str) -> None:
    pattern = doc_pattern(start)
    assert pattern.match(line), (line, pattern.pattern)


def test_hub_refusals_match_the_models_section(
    hub_queen: QueenProcess, fakehub: FakeHub, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    fakehub.add_folder("Org/Private", tiny_model_dir)
    fakehub.private["Org/Private"] = "hf_secret"
    pickled = {"config.json": (tiny_model_dir / "config.json").read_bytes()}
    fakehub.repos["Org/Pickled"] = {**pickled, "pytorch_model.bin": b"pickled" * 100}
    fakehub.add_folder("Org/Huge", tiny_model_dir)
    fakehub.sizes[("Org/Huge", WEIGHTS)] = 1 << 60
    fakehub.add_folder("Org/Tiny", tiny_model_dir)
    add_node(hub_queen, sshd, tmp_path)

    assert_shown("[HF_TOKEN_REQUIRED]", last_error(download(hub_queen, "n1", "hf:Org/Private")))
    assert_shown("… has no weights", last_error(download(hub_queen, "n1", "hf:Org/Pickled")))
    huge = last_error(download(hub_queen, "n1", "hf:Org/Huge"))
    assert huge.startswith("[INSUFFICIENT_DISK] ")
    assert_shown("[INSUFFICIENT_DISK]", huge)

    fakehub.corrupt.add(WEIGHTS)
    damaged = last_error(download(hub_queen, "n1", "hf:Org/Tiny"))
    assert_shown("[DOWNLOAD_FAILED] … failed its size or hash check", damaged)
    fakehub.corrupt.clear()

    # Never downloaded: a request for it names the download command's model.
    task = {"node": "n1", "model": "hf:Org/Repo", "prompt": "hi"}
    with hub_queen.client() as client:
        refused = client.post("/v2/tasks", json=task).json()["error"]
    line = f"[{refused['code']}] {refused['message']}"
    assert_shown("[MODEL_NOT_FOUND] hf:Org/Repo is not on node N", line)


@pytest.fixture
def stall_after_1s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "1")


def test_a_stalled_download_matches_its_row(
    stall_after_1s: None,
    hub_queen: QueenProcess,
    fakehub: FakeHub,
    sshd: SshServer,
    tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    fakehub.add_folder("Org/Tiny", tiny_model_dir)
    fakehub.pause[WEIGHTS] = ((tiny_model_dir / WEIGHTS).stat().st_size // 2, 3.0)
    add_node(hub_queen, sshd, tmp_path)
    assert_row("[DOWNLOAD_TIMEOUT]", last_error(download(hub_queen, "n1", "hf:Org/Tiny")))


def test_a_node_downloading_without_huggingface_hub_matches_its_line(
    hub_queen: QueenProcess, fakehub: FakeHub, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    bare = Path("/usr/bin/python3")  # the system's: the project's packages are in the venv
    has_hub = subprocess.run([str(bare), "-c", "import huggingface_hub"], capture_output=True)
    assert has_hub.returncode != 0, "the system python has huggingface_hub"
    fakehub.add_folder("Org/Tiny", tiny_model_dir)
    body = sshd.node_body("n1", tmp_path / "install", accept_new_host_key=True)
    hub_queen.add_node({**body, "model_source": "hub", "worker_python": str(bare)})
    line = last_error(download(hub_queen, "n1", "hf:Org/Tiny"))
    assert_shown("[DOWNLOAD_FAILED] … huggingface_hub is missing", line)


def test_a_model_changed_on_the_node_matches_the_list_line(
    hub_queen: QueenProcess,
    fakehub: FakeHub,
    sshd: SshServer,
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fakehub.add_folder("Org/Tiny", tiny_model_dir)
    fakehub.add_folder("Org/Gone", tiny_model_dir)
    add_node(hub_queen, sshd, tmp_path)
    for repo in ("Org/Tiny", "Org/Gone"):
        assert download(hub_queen, "n1", f"hf:{repo}")[1][-1]["type"] == "done"
    folders = tmp_path / "install" / "models" / "hf" / "Org"
    with open(folders / "Tiny" / WEIGHTS, "ab") as weights:
        weights.write(b"\0")  # its size changed on the node
    shutil.rmtree(folders / "Gone")
    capsys.readouterr()
    assert keeper(["models", "list", "--queen-url", hub_queen.url]) == 0
    lines = capsys.readouterr().out.splitlines()
    # The section's line: `models list` shows `missing` (deleted), `modified` (sizes).
    assert doc_pattern("models list").fullmatch("models list")
    (gone,) = [line.split() for line in lines if "hf:Org/Gone" in line]
    (changed,) = [line.split() for line in lines if "hf:Org/Tiny" in line]
    assert any(doc_pattern("missing").fullmatch(word) for word in gone), lines
    assert any(doc_pattern("modified").fullmatch(word) for word in changed), lines


def hubfetch_under(folder: Path) -> list[int]:
    """The node's download processes working under `folder` (this test's node)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = Path(os.readlink(proc / "cwd"))
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if b"rbee_worker.hubfetch" in argv and cwd.is_relative_to(folder):
            found.append(int(proc.name))
    return found


def test_a_download_process_that_dies_on_the_node_matches_its_line(
    hub_queen: QueenProcess, fakehub: FakeHub, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    fakehub.add_folder("Org/Tiny", tiny_model_dir)
    fakehub.pause[WEIGHTS] = ((tiny_model_dir / WEIGHTS).stat().st_size // 2, 3.0)
    body = sshd.node_body("n1", tmp_path / "install", accept_new_host_key=True)
    hub_queen.add_node({**body, "model_source": "hub"})
    answers: list[tuple[int, list[dict]]] = []
    running = threading.Thread(
        target=lambda: answers.append(download(hub_queen, "n1", "hf:Org/Tiny"))
    )
    running.start()
    wait_until_fetching(fakehub)
    (pid,) = hubfetch_under(tmp_path / "install")
    os.kill(pid, signal.SIGKILL)  # the node's download process, killed mid-file
    running.join(timeout=60)
    line = last_error(answers[0])
    assert line.startswith("[DOWNLOAD_FAILED] "), line
    assert doc_pattern("the download on N stopped").search(line), line


def copy(queen: QueenProcess, source: str, dest: str, model: str) -> tuple[int, list[dict]]:
    """(HTTP status, events) of a copy between nodes, as `download` gives them."""
    body = {"from": source, "to": dest, "model": model}
    with queen.client() as c, c.stream("POST", "/v2/models/copy", json=body) as r:
        if r.status_code != 200:
            return r.status_code, [json.loads(r.read())]
        lines = [line[6:] for line in r.iter_lines() if line.startswith("data: {")]
    return 200, [json.loads(line) for line in lines]


def test_a_copy_of_changed_bytes_and_a_model_over_the_ram_match_their_lines(
    hub_queen: QueenProcess, fakehub: FakeHub, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    fakehub.add_folder("Org/Tiny", tiny_model_dir)
    add_node(hub_queen, sshd, tmp_path / "a", name="n1")
    add_node(hub_queen, sshd, tmp_path / "b", name="n2")
    assert download(hub_queen, "n1", "hf:Org/Tiny")[1][-1]["type"] == "done"
    source = tmp_path / "a" / "install" / "models" / "hf" / "Org" / "Tiny" / WEIGHTS
    with open(source, "r+b") as weights:  # one byte rots: same size, other bytes
        first = weights.read(1)
        weights.seek(0)
        weights.write(bytes([first[0] ^ 0xFF]))
    line = last_error(copy(hub_queen, "n1", "n2", "hf:Org/Tiny"))
    assert_shown("[DOWNLOAD_FAILED] … does not match its SHA-256", line)
    # The bad file was deleted on the node: a retry sends it again, whole.
    partial = tmp_path / "b" / "install" / "models" / ".partial" / "hf" / "Org" / "Tiny"
    assert not (partial / WEIGHTS).exists()
    assert not (tmp_path / "b" / "install" / "models" / "hf" / "Org" / "Tiny").exists()

    huge = tmp_path / "huge"
    huge.mkdir()
    shutil.copy(tiny_model_dir / "config.json", huge)
    with open(huge / WEIGHTS, "wb") as weights:
        weights.truncate(1 << 40)  # sparse: a terabyte of weights on no disk
    task = {"node": "n1", "model": f"file:{huge}", "prompt": "hi"}
    with hub_queen.client() as client:
        refused = client.post("/v2/tasks", json=task).json()["error"]
    assert_shown("[INSUFFICIENT_RAM]", f"[{refused['code']}] {refused['message']}")
    assert_gives_bytes(refused)


def assert_gives_bytes(error: dict) -> None:
    """The section's "the message and `details` give required and available bytes"."""
    required, available = error["details"]["required_bytes"], error["details"]["available_bytes"]
    assert required > available > 0
    assert f"({required} bytes)" in error["message"], error
    assert f"({available} bytes)" in error["message"], error
