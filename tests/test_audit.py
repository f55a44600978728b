"""The audit log's hash chain: resumes across restarts and rotation, and every
edit, deletion and reordering is caught by `rbee-keeper audit verify`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rbee_keeper.cli import main as keeper
from rbee_queen.audit import GENESIS, AuditLog, audit_files, verify


def write_entries(directory: Path, count: int, max_bytes: int = 10_000_000) -> None:
    log = AuditLog(directory, max_bytes=max_bytes)
    for i in range(count):
        log.record("worker.spawned", worker_id=f"w-{i}", node="n1")


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_chain_starts_at_genesis_and_files_are_0600(tmp_path: Path) -> None:
    write_entries(tmp_path / "audit", 3)
    [path] = audit_files(tmp_path / "audit")
    first, second, _ = (json.loads(line) for line in lines_of(path))
    assert first["prev_hash"] == GENESIS and first["seq"] == 1
    assert second["prev_hash"] == first["hash"]
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "audit").st_mode & 0o777 == 0o700
    assert verify(tmp_path / "audit").ok


def test_chain_survives_restart_and_rotation(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    write_entries(directory, 5, max_bytes=600)  # a few entries per file
    write_entries(directory, 5, max_bytes=600)  # a new process resumes the chain
    verdict = verify(directory)
    assert verdict.ok, verdict
    assert verdict.entries == 10
    assert verdict.files > 1


def test_secrets_and_prompts_are_refused_as_fields(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    for field in ("token", "prompt", "authorization"):
        with pytest.raises(ValueError):
            log.record("auth.success", **{field: "x"})


def test_values_are_one_printable_line(tmp_path: Path) -> None:
    entry = AuditLog(tmp_path).record("node.added", node="a\nfake-entry\x1b[31m")
    assert entry["node"] == "a?fake-entry?[31m"


def tamper_edit(path: Path) -> None:
    lines = lines_of(path)
    entry = json.loads(lines[2])
    entry["node"] = "n2"
    lines[2] = json.dumps(entry)
    path.write_text("\n".join(lines) + "\n")


def tamper_delete(path: Path) -> None:
    lines = lines_of(path)
    del lines[2]
    path.write_text("\n".join(lines) + "\n")


def tamper_reorder(path: Path) -> None:
    lines = lines_of(path)
    lines[2], lines[3] = lines[3], lines[2]
    path.write_text("\n".join(lines) + "\n")


def tamper_rehash(path: Path) -> None:
    """Edit an entry and recompute its own hash: the next entry still gives it away."""
    from rbee_queen.audit import entry_hash

    lines = lines_of(path)
    entry = json.loads(lines[2])
    entry["node"] = "n2"
    entry["hash"] = entry_hash(entry)
    lines[2] = json.dumps(entry)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("tamper", "line"),
    [(tamper_edit, 3), (tamper_delete, 3), (tamper_reorder, 3), (tamper_rehash, 4)],
)
def test_tampering_is_caught_and_named(
    tmp_path: Path, tamper: object, line: int, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "audit"
    write_entries(directory, 6)
    [path] = audit_files(directory)
    assert keeper(["audit", "verify", "--dir", str(directory)]) == 0
    tamper(path)  # type: ignore[operator]
    verdict = verify(directory)
    assert not verdict.ok
    assert (verdict.broken_file, verdict.broken_line) == (path.name, line)
    capsys.readouterr()
    assert keeper(["audit", "verify", "--dir", str(directory)]) == 1
    err = capsys.readouterr().err
    # The keeper finds the anchor key beside the folder: a recomputed hash
    # fails its mac at the edited line itself.
    assert f"[AUDIT_CHAIN_BROKEN] {path.name} line 3" in err


def test_a_deleted_rotated_file_breaks_the_chain(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    write_entries(directory, 12, max_bytes=600)
    files = audit_files(directory)
    assert len(files) >= 3
    files[1].unlink()
    verdict = verify(directory)
    assert not verdict.ok and verdict.broken_file == files[2].name


def test_verify_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_entries(tmp_path / "audit", 2)
    assert keeper(["--json", "audit", "verify", "--dir", str(tmp_path / "audit")]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == 2
