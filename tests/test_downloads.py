"""Downloads that never double or hang: a second request for the model a node is
getting joins the running transfer; a hub that stops sending ends in
DOWNLOAD_TIMEOUT and a disk that fills ends in INSUFFICIENT_DISK, each keeping
the partial file for the resume. A real queen, sshd node and (fake) hub over
HTTP; the stall and the full disk are real (a held connection, a full tmpfs)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.plugins.fakehub import COMMIT, FakeHub
from tests.plugins.queen import QueenProcess
from tests.plugins.sshd import SshServer
from tests.test_infer_e2e import add_node
from tests.test_models_hub import download

WEIGHTS = "model.safetensors"
KEY = f"Org/Tiny/{WEIGHTS}"


def wait_until_fetching(hub: FakeHub) -> None:
    deadline = time.monotonic() + 30
    while KEY not in hub.fetched:
        assert time.monotonic() < deadline, "the download never reached the weights"
        time.sleep(0.02)


def test_a_second_request_joins_the_running_download(
    hub_queen: QueenProcess, fakehub: FakeHub, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    size = (tiny_model_dir / WEIGHTS).stat().st_size
    fakehub.add_folder("Org/Tiny", tiny_model_dir)
    fakehub.pause[WEIGHTS] = (size // 2, 1.5)  # slow enough to be joined
    add_node(hub_queen, sshd, tmp_path)
    first: list[dict] = []
    runner = threading.Thread(
        target=lambda: first.extend(download(hub_queen, "n1", "hf:Org/Tiny")[1])
    )
    runner.start()
    wait_until_fetching(fakehub)
    status, second = download(hub_queen, "n1", "hf:Org/Tiny")
    runner.join(timeout=60)
    assert status == 200
    assert fakehub.fetched.count(KEY) == 1  # one transfer
    for events in (first, second):
        assert events[0]["type"] == "start" and events[-1]["type"] == "done", events
        progress = [e for e in events if e["type"] == "progress"]
        assert progress and progress[-1]["bytes_done"] == progress[-1]["bytes_total"]
    assert second == first  # the joiner saw the whole story


@pytest.fixture
def stall_after_1s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "1")


def test_a_stalled_download_times_out_and_keeps_its_partial_file(
    stall_after_1s: None,
    hub_queen: QueenProcess,
    fakehub: FakeHub,
    sshd: SshServer,
    tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    half = (tiny_model_dir / WEIGHTS).stat().st_size // 2
    fakehub.add_folder("Org/Tiny", tiny_model_dir)
    fakehub.pause[WEIGHTS] = (half, 3.0)  # half, then nothing for longer than the limit
    add_node(hub_queen, sshd, tmp_path)
    events = download(hub_queen, "n1", "hf:Org/Tiny")[1]
    assert events[-1]["type"] == "error" and events[-1]["code"] == "DOWNLOAD_TIMEOUT", events
    cached = hub_queen.home / "hf-cache" / "Org" / "Tiny" / COMMIT / WEIGHTS
    assert cached.stat().st_size == half
    del fakehub.pause[WEIGHTS]
    assert download(hub_queen, "n1", "hf:Org/Tiny")[1][-1]["type"] == "done"
    assert (KEY, half) in fakehub.ranges  # resumed from the kept bytes


@pytest.fixture
def cache_on_tmpfs(rbee_home: Path, tmp_path: Path) -> Iterator[Path]:
    """The queen's download cache on its own 8 MiB tmpfs."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "cachefs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    try:
        (rbee_home / "hf-cache").symlink_to(mount)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def wait_until_written(path: Path, size: int) -> None:
    deadline = time.monotonic() + 30
    while not path.exists() or path.stat().st_size < size:
        assert time.monotonic() < deadline, f"{path.name} never reached {size} bytes"
        time.sleep(0.02)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def test_a_disk_that_fills_mid_download_is_insufficient_disk(
    cache_on_tmpfs: Path,
    hub_queen: QueenProcess,
    fakehub: FakeHub,
    sshd: SshServer,
    tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    half = (tiny_model_dir / WEIGHTS).stat().st_size // 2
    fakehub.add_folder("Org/Tiny", tiny_model_dir)
    fakehub.pause[WEIGHTS] = (half, 1.5)
    add_node(hub_queen, sshd, tmp_path)
    result: list[dict] = []
    runner = threading.Thread(
        target=lambda: result.extend(download(hub_queen, "n1", "hf:Org/Tiny")[1])
    )
    runner.start()
    wait_until_fetching(fakehub)
    cached = cache_on_tmpfs / "Org" / "Tiny" / COMMIT / WEIGHTS
    wait_until_written(cached, half)  # the first half on disk: a slow writer lags the hub
    filler = fill(cache_on_tmpfs)  # while the hub holds the second half
    runner.join(timeout=60)
    assert result[-1]["type"] == "error" and result[-1]["code"] == "INSUFFICIENT_DISK", result
    assert cached.stat().st_size >= half  # what was there is kept
    filler.unlink()
    del fakehub.pause[WEIGHTS]
    assert download(hub_queen, "n1", "hf:Org/Tiny")[1][-1]["type"] == "done"
