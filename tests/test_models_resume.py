"""Byte-level resume: a download or copy cut in the middle continues from the
bytes already written, never from zero.

The hub side is measured at the (fake) hub: the bytes its responses carried
and the Range each request asked for. The cut is real: the hub drops the
connection in the middle of the body and is then down (503), so
huggingface_hub's own retry gives up too and the run fails; the next run must
ask only for the rest.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.plugins.fakehub import COMMIT, FakeHub
from tests.plugins.queen import QueenProcess
from tests.plugins.sshd import SshServer
from tests.test_infer_e2e import add_node
from tests.test_models_hub import download, listed, sha

WEIGHTS = "model.safetensors"


def copy(queen: QueenProcess, source: str, dest: str, model: str) -> list[dict]:
    with queen.client() as c:
        body = {"from": source, "to": dest, "model": model}
        with c.stream("POST", "/v2/models/copy", json=body) as r:
            assert r.status_code == 200, r.read()
            return [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: {")]


def test_queen_side_download_resumes_after_a_cut(
    hub_queen: QueenProcess, fakehub: FakeHub, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    size = (tiny_model_dir / WEIGHTS).stat().st_size
    half = size // 2
    fakehub.add_folder("Org/Tiny", tiny_model_dir)
    fakehub.cut[WEIGHTS] = half
    add_node(hub_queen, sshd, tmp_path)

    status, events = download(hub_queen, "n1", "hf:Org/Tiny")
    assert events[-1]["type"] == "error" and events[-1]["code"] == "DOWNLOAD_FAILED", events
    assert listed(hub_queen) == []  # a partial file never counts as a model
    cached = hub_queen.home / "hf-cache" / "Org" / "Tiny" / COMMIT / WEIGHTS
    assert cached.stat().st_size == half  # what arrived before the cut is kept

    fakehub.outage = False
    key = f"Org/Tiny/{WEIGHTS}"
    before = fakehub.served[key]
    status, events = download(hub_queen, "n1", "hf:Org/Tiny")
    assert events[-1]["type"] == "done", events
    assert (key, half) in fakehub.ranges  # asked for the rest only...
    assert fakehub.served[key] - before == size - half  # ...and got only the rest
    folder = tmp_path / "install" / "models" / "hf" / "Org" / "Tiny"
    assert sha(folder / WEIGHTS) == sha(tiny_model_dir / WEIGHTS)


def test_copy_resumes_from_the_bytes_on_the_destination(
    hub_queen: QueenProcess, fakehub: FakeHub, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A cut copy leaves a prefix in the destination's partial folder. The next copy
    sends only the rest: shown by a prefix with one byte changed, which a copy from
    zero would overwrite and a resumed copy keeps (so the whole-file hash fails)."""
    fakehub.add_folder("Org/Tiny", tiny_model_dir)
    add_node(hub_queen, sshd, tmp_path)
    add_node(hub_queen, sshd, tmp_path / "second", name="n2")
    assert download(hub_queen, "n1", "hf:Org/Tiny")[1][-1]["type"] == "done"
    weights = (tiny_model_dir / WEIGHTS).read_bytes()
    kept = len(weights) // 3
    partial = tmp_path / "second" / "install" / "models" / ".partial" / "hf" / "Org" / "Tiny"
    partial.mkdir(parents=True)

    (partial / WEIGHTS).write_bytes(bytes([weights[0] ^ 0xFF]) + weights[1:kept])
    events = copy(hub_queen, "n1", "n2", "hf:Org/Tiny")
    assert {"type": "resume", "file": WEIGHTS, "bytes": kept} in events
    assert events[-1]["type"] == "error" and "SHA-256" in events[-1]["message"], events
    assert not (partial / WEIGHTS).exists()  # the bad file is gone: no resume from it

    (partial / WEIGHTS).write_bytes(weights[:kept])
    events = copy(hub_queen, "n1", "n2", "hf:Org/Tiny")
    assert {"type": "resume", "file": WEIGHTS, "bytes": kept} in events
    assert events[-1]["type"] == "done", events
    copied = tmp_path / "second" / "install" / "models" / "hf" / "Org" / "Tiny"
    assert (copied / WEIGHTS).read_bytes() == weights
