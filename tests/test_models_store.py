"""The node's model store (rbee_hive.models) and the fit check, without SSH."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from rbee_hive.models import model_commit, model_prepare, model_remove, model_scan, resolve
from rbee_hive.ops import OpError
from rbee_queen.errors import InsufficientRam, InsufficientVram
from rbee_queen.workers.resources import check_fits


@pytest.mark.parametrize(
    "rel", ["../x", "hf/../../etc", "hf/.hidden/x", "/abs/path", "one", "a//b"]
)
def test_bad_relative_paths_are_refused(tmp_path: Path, rel: str) -> None:
    with pytest.raises(OpError) as caught:
        resolve(str(tmp_path), rel)
    assert caught.value.code == "INVALID_REQUEST"


def test_a_symlink_cannot_lead_out_of_the_store(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    store = tmp_path / "install" / "models" / "hf"
    store.mkdir(parents=True)
    (store / "Org").symlink_to(outside)
    with pytest.raises(OpError, match="leaves the model store"):
        model_remove(str(tmp_path / "install"), "hf/Org/keep.txt")
    assert (outside / "keep.txt").read_text() == "precious"


def test_commit_checks_every_file_and_only_then_renames(tmp_path: Path) -> None:
    install = str(tmp_path / "install")
    folder = Path(model_prepare(install, "hf/Org/Repo")["path"])
    (folder / "config.json").write_bytes(b"{}")
    expected = [{"name": "config.json", "size": 2, "sha256": hashlib.sha256(b"{}").hexdigest()}]
    wrong = [{**expected[0], "sha256": "0" * 64}]
    with pytest.raises(OpError) as caught:
        model_commit(install, "hf/Org/Repo", wrong)
    assert caught.value.code == "DOWNLOAD_FAILED"
    assert model_scan(install, "hf/Org/Repo")["exists"] is False  # still partial
    # A file that failed its hash is deleted: no later run resumes from its bytes.
    assert model_prepare(install, "hf/Org/Repo")["files"] == []
    (folder / "config.json").write_bytes(b"{}")
    # What a cut-off upload left is reported with hashes, so a retry can skip it.
    assert model_prepare(install, "hf/Org/Repo")["files"] == expected
    done = model_commit(install, "hf/Org/Repo", expected)
    assert done["size_bytes"] == 2
    assert model_scan(install, "hf/Org/Repo")["files"] == [{"name": "config.json", "size": 2}]


def test_fit_check_names_required_and_available() -> None:
    probe = {
        "ram_available_bytes": 1000,
        "gpus": [{"index": 0, "memory_total_mib": 10, "memory_used_mib": 9}],
    }
    check_fits(800, probe, "cpu", "n1")  # 960 <= 1000
    with pytest.raises(InsufficientRam) as ram:
        check_fits(900, probe, "cpu", "n1")
    assert ram.value.details["required_bytes"] == 1080
    assert ram.value.details["available_bytes"] == 1000
    with pytest.raises(InsufficientVram) as vram:
        check_fits(2 * 1024 * 1024, probe, "cuda:0", "n1")
    assert vram.value.details["available_bytes"] == 1024 * 1024
