"""The queen's copy onto a node (SFTP) when the node's side gives out: a disk
that fills mid-file ends in INSUFFICIENT_DISK and a node that stops answering
ends in DOWNLOAD_TIMEOUT after the stall limit (models.download_stall_s), each
keeping what was written for the resume. A real queen, a real sshd node and
the fake hub over HTTP; the full disk is a real tmpfs under the node's install
path, the silent node its real sshd processes stopped (SIGSTOP) mid-download.
Both wait for the hub's pause on the weights, when the files before them are
already on the node and the weights' upload has not begun."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.plugins.fakehub import FakeHub
from tests.plugins.queen import QueenProcess
from tests.plugins.sshd import SshServer, start_sshd
from tests.test_downloads import KEY, WEIGHTS, wait_until_fetching
from tests.test_infer_e2e import add_node
from tests.test_models_hub import download

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
LEFT_FREE = 256 * 1024  # less than the weights: the disk fills mid-file


def download_on_thread(queen: QueenProcess) -> tuple[threading.Thread, list[dict]]:
    events: list[dict] = []
    runner = threading.Thread(target=lambda: events.extend(download(queen, "n1", "hf:Org/Tiny")[1]))
    runner.start()
    return runner, events


def on_node(store: Path) -> dict[str, int]:
    """The model files the node holds (complete or partial) and their sizes."""
    return {p.name: p.stat().st_size for p in store.rglob("*") if p.is_file()}


@pytest.fixture
def store_on_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """The node's model store (`models` under its install path) on its own 8 MiB
    tmpfs; the install path itself keeps the 2 GiB the node's preflight asks."""
    store = tmp_path / "install" / "models"
    store.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(store)], check=True)
    try:
        yield store
    finally:
        subprocess.run(["umount", "-l", str(store)], check=False)


def fill_leaving(directory: Path, free: int) -> Path:
    """A file that takes all but about `free` bytes of the file system."""
    stat = os.statvfs(directory)
    filler = directory / "filler"
    with open(filler, "wb") as f:
        f.truncate(0)
        f.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - free))
    return filler


@needs_root
def test_a_node_disk_that_fills_mid_upload_is_insufficient_disk(
    store_on_tmpfs: Path,
    hub_queen: QueenProcess,
    fakehub: FakeHub,
    sshd: SshServer,
    tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    size = (tiny_model_dir / WEIGHTS).stat().st_size
    fakehub.add_folder("Org/Tiny", tiny_model_dir)
    fakehub.pause[WEIGHTS] = (size // 2, 1.0)
    add_node(hub_queen, sshd, tmp_path)
    runner, events = download_on_thread(hub_queen)
    wait_until_fetching(fakehub)
    filler = fill_leaving(store_on_tmpfs, LEFT_FREE)  # after the plan's disk check
    runner.join(timeout=60)
    assert events[-1]["type"] == "error", events
    assert events[-1]["code"] == "INSUFFICIENT_DISK", events
    written = on_node(store_on_tmpfs)[WEIGHTS]
    assert 0 < written < size  # what fitted is kept
    filler.unlink()
    del fakehub.pause[WEIGHTS]
    again = download(hub_queen, "n1", "hf:Org/Tiny")[1]
    assert again[-1]["type"] == "done", again
    resumed = [e for e in again if e["type"] == "resume"]
    assert resumed == [{"type": "resume", "file": WEIGHTS, "bytes": written}]


@pytest.fixture
def stall_after_1s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RBEE_DOWNLOAD_STALL_S", "1")


@pytest.fixture
def own_sshd(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], SshServer]]:
    """An sshd of the test's own, so that its processes alone can be stopped."""
    proc, server = start_sshd(tmp_path / "own-sshd")
    try:
        yield proc, server
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def descendants(pid: int) -> list[int]:
    """Every process under `pid` (sshd's per-connection processes)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").iterdir():
            children = [int(c) for c in (task / "children").read_text().split()]
            found += children
            todo += children
    return found


def test_a_transfer_that_stops_moving_bytes_times_out_and_keeps_what_it_wrote(
    stall_after_1s: None,
    hub_queen: QueenProcess,
    fakehub: FakeHub,
    own_sshd: tuple[subprocess.Popen[bytes], SshServer],
    tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    sshd_proc, server = own_sshd
    fakehub.add_folder("Org/Tiny", tiny_model_dir)
    fakehub.pause[WEIGHTS] = (1024, 1.0)
    add_node(hub_queen, server, tmp_path)
    runner, events = download_on_thread(hub_queen)
    wait_until_fetching(fakehub)
    stopped = descendants(sshd_proc.pid)
    assert stopped, "the queen holds no connection to the node"
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        runner.join(timeout=30)
        assert not runner.is_alive(), "the transfer hung past its stall limit"
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    assert events[-1]["type"] == "error", events
    assert events[-1]["code"] == "DOWNLOAD_TIMEOUT", events
    kept = on_node(tmp_path / "install" / "models")
    assert kept and kept.get(WEIGHTS, 0) == 0, kept  # the stall came before the weights
    del fakehub.pause[WEIGHTS]
    again = download(hub_queen, "n1", "hf:Org/Tiny")[1]
    assert again[-1]["type"] == "done", again
    # The files written before the stall are kept (skipped now); the weights,
    # kept in the queen's cache, are not fetched from the hub again.
    assert {e["file"] for e in again if e["type"] == "skip"} == set(kept) - {WEIGHTS}
    assert fakehub.fetched.count(KEY) == 1
