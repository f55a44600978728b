"""The audit chain against a writer of its files: a rewrite with every hash
recomputed, a duplicated key, and a file replaced under a running queen."""

from __future__ import annotations

import json
import os
from pathlib import Path

from rbee_queen.audit import AuditLog, audit_files, entry_hash, load_key, verify
from tests.plugins.queen import QueenProcess


def write_entries(directory: Path, count: int) -> Path:
    log = AuditLog(directory)
    for i in range(count):
        log.record("key.added", name=f"k{i}", admin=False)
    [path] = audit_files(directory)
    return path


def rewrite_from(path: Path, index: int) -> None:
    """Edit entry `index` and recompute every hash from there to the end, as a
    writer of the file alone can; the macs cannot be recomputed without the key."""
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    entries[index]["admin"] = True
    for i in range(index, len(entries)):
        if i > index:
            entries[i]["prev_hash"] = entries[i - 1]["hash"]
        entries[i]["hash"] = entry_hash(entries[i])
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))


def test_a_rewrite_with_recomputed_hashes_fails_the_anchored_check(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    path = write_entries(directory, 5)
    rewrite_from(path, 2)
    assert verify(directory).ok  # the hash chain alone cannot tell
    key = load_key(tmp_path / "audit.key")
    assert key is not None  # kept beside the folder, not in it
    verdict = verify(directory, key)
    assert (verdict.ok, verdict.broken_line, verdict.anchored) == (False, 3, True)
    assert "mac" in (verdict.reason or "")


def test_a_duplicated_key_fails_verify(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    path = write_entries(directory, 3)
    lines = path.read_text().splitlines()
    assert lines[1].startswith("{")
    lines[1] = '{"admin":true,' + lines[1][1:]  # a reader keeps the later "admin"
    path.write_text("\n".join(lines) + "\n")
    verdict = verify(directory)
    assert (verdict.ok, verdict.broken_line) == (False, 2)
    assert "twice" in (verdict.reason or "")


def events_in(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_the_running_queen_reopens_a_replaced_or_removed_file(queen: QueenProcess) -> None:
    with queen.client() as client:
        assert client.post("/v2/keys/add", json={"name": "before"}).status_code == 201
        [path] = audit_files(queen.home / "audit")
        replacement = path.with_name("sed-tmp")
        replacement.write_text(path.read_text())
        os.replace(replacement, path)  # what `sed -i` does
        assert client.post("/v2/keys/add", json={"name": "after"}).status_code == 201
        replaced = events_in(path)
        path.unlink()
        assert client.post("/v2/keys/add", json={"name": "gone"}).status_code == 201
    reopened = [e for e in replaced if e["event"] == "audit.file_reopened"]
    assert [e["reason"] for e in reopened] == ["replaced"]
    added = [e["name"] for e in replaced if e["event"] == "key.added"]
    assert added == ["before", "after"]
    fresh = events_in(path)
    assert (fresh[0]["event"], fresh[0]["reason"]) == ("audit.file_reopened", "removed")
    assert [e["name"] for e in fresh if e["event"] == "key.added"] == ["gone"]
