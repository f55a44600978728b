"""The tamper-evident audit log: JSON lines under RBEE_HOME/audit/, hash-chained.

Each entry carries `seq`, `prev_hash` (the previous entry's `hash`; 64 zeros
for the first) and `hash`, the SHA-256 of the entry's canonical JSON without
`hash`. Editing, deleting or reordering an entry breaks the chain at that
point; `verify()` names the first entry that does not fit. Files rotate by
size (`audit-000001.jsonl`, `audit-000002.jsonl`, ...) and the chain runs on
across files and restarts: a new queen reads the last entry before writing.

A writer who can edit the files could recompute every hash after an edit, so
the chain is anchored outside them: each entry also carries `mac`, an
HMAC-SHA256 of its hash under a key kept beside the folder, not in it
(`RBEE_HOME/audit.key`, 0600). An HMAC rather than published head hashes: it
needs no second channel to be kept and read back, and `verify` given the key
checks every entry, not only each segment's last. The queen notices when its
open file was replaced or removed, opens the path again and records that.

Only ids, names and counts go in: field names that could carry a secret or a
prompt are refused outright, and strings are cut to one short line.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rbee_queen import deferred

GENESIS = "0" * 64
KEY_FILE_NAME = "audit.key"  # beside the audit folder, never in it
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
FILE_PATTERN = re.compile(r"^audit-(\d{6})\.jsonl$")
FORBIDDEN_FIELDS = frozenset({"token", "authorization", "secret", "password", "prompt", "api_key"})
MAX_FIELD_CHARS = 256
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f\u202a-\u202e\u2066-\u2069]")


def canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k not in ("hash", "mac")}
    return hashlib.sha256(canonical(body)).hexdigest()


def entry_mac(key: bytes, digest: str) -> str:
    return hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()


def load_key(path: Path, create: bool = False) -> bytes | None:
    """The anchor key at `path` (hex); made (0600) when absent and `create`."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        if not create:
            return None
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key.hex())
    return key


def audit_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if FILE_PATTERN.match(p.name)]
    return sorted(found, key=lambda p: p.name)


def clean(value: Any) -> Any:
    """Audit values: scalars only, strings one printable line of bounded length."""
    if value is None or isinstance(value, bool | int | float):
        return value
    text = _UNPRINTABLE.sub("?", str(value))
    return text[:MAX_FIELD_CHARS]


class AuditLog:
    def __init__(
        self, directory: Path, max_bytes: int = DEFAULT_MAX_BYTES, key_file: Path | None = None
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
        self._key = load_key(key_file or directory.parent / KEY_FILE_NAME, create=True)
        self._seq, self._last_hash, self._file = self._resume()
        self._fd: int | None = None
        self._closer: weakref.finalize | None = None
        self._size = 0

    def _resume(self) -> tuple[int, str, Path]:
        files = audit_files(self.directory)
        for path in reversed(files):
            last = _last_line(path)
            if last is not None:
                entry = json.loads(last)
                return int(entry["seq"]), str(entry["hash"]), files[-1]
        return 0, GENESIS, files[-1] if files else self.directory / "audit-000001.jsonl"

    def record_soon(self, event: str, **fields: Any) -> None:
        """Record a moment later (rbee_queen/deferred.py), once the running
        request's bytes have moved on: for entries on the path of every
        request, where a write would delay the request itself."""
        _refuse_secrets(fields)
        deferred.later(functools.partial(self.record, event, **fields))

    def record(self, event: str, **fields: Any) -> dict[str, Any]:
        """Record now, after the entries deferred before this one: they keep
        their order."""
        _refuse_secrets(fields)
        deferred.flush()
        with self._lock:
            replaced = self._replaced()
            if replaced is not None:
                self._write("audit.file_reopened", {"reason": replaced, "file": self._file.name})
            return self._write(event, fields)

    def _write(self, event: str, fields: dict[str, Any]) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "seq": self._seq + 1,
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "event": event,
            **{k: clean(v) for k, v in fields.items()},
            "prev_hash": self._last_hash,
        }
        entry["hash"] = entry_hash(entry)
        if self._key is not None:
            entry["mac"] = entry_mac(self._key, entry["hash"])
        line = canonical(entry) + b"\n"
        self._append(line)
        self._seq, self._last_hash = entry["seq"], entry["hash"]
        return entry

    def _replaced(self) -> str | None:
        """Why the open file is no longer the one at its path (`sed -i`, `mv`,
        `rm`), after closing it so the next write opens the path afresh."""
        if self._fd is None:
            return None
        try:
            on_disk = os.stat(self._file)
        except FileNotFoundError:
            reason = "removed"
        else:
            held = os.fstat(self._fd)
            if (on_disk.st_ino, on_disk.st_dev) == (held.st_ino, held.st_dev):
                return None
            reason = "replaced"
        assert self._closer is not None
        self._closer()
        self._fd = None
        return reason

    def _append(self, line: bytes) -> None:
        # The file stays open between entries (an entry is written on every
        # request, and opening and sizing the file each time cost as much as the
        # rest); each entry is one write(2), in the file when record returns.
        if self._fd is None:
            self._fd = os.open(self._file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._closer = weakref.finalize(self, os.close, self._fd)
            self._size = os.fstat(self._fd).st_size
        if self._size and self._size + len(line) > self.max_bytes:
            assert self._closer is not None
            self._closer()  # closes the fd, once
            self._fd = None
            self._file = _next_file(self._file)
            self._append(line)
            return
        os.write(self._fd, line)
        self._size += len(line)


def _refuse_secrets(fields: dict[str, Any]) -> None:
    bad = FORBIDDEN_FIELDS.intersection(fields)
    if bad:
        raise ValueError(f"audit entries never carry {sorted(bad)}")


def _next_file(current: Path) -> Path:
    match = FILE_PATTERN.match(current.name)
    number = int(match.group(1)) + 1 if match else 1
    return current.with_name(f"audit-{number:06d}.jsonl")


def _last_line(path: Path) -> str | None:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return lines[-1] if lines else None


@dataclass(frozen=True)
class Verdict:
    ok: bool
    entries: int
    files: int
    last_hash: str
    broken_file: str | None = None
    broken_line: int | None = None
    reason: str | None = None
    anchored: bool = False  # every entry's mac checked against the key

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # The hash covers the text, while a reader keeps one of two equal keys:
    # {"admin": true, ..., "admin": false} would pass as whichever it keeps.
    entry = dict(pairs)
    if len(entry) != len(pairs):
        raise _DuplicateKey
    return entry


def verify(directory: Path, key: bytes | None = None) -> Verdict:
    """Walk the chain over every file; stop at the first entry that does not fit.
    With the anchor key, every entry's mac is checked too."""
    files = audit_files(directory)
    prev, seq, count = GENESIS, 0, 0
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            entry, problem = _check(line, prev, seq + 1, key)
            if problem is not None:
                return Verdict(
                    False, count, len(files), prev, path.name, number, problem, key is not None
                )
            prev, seq, count = entry["hash"], entry["seq"], count + 1
    return Verdict(True, count, len(files), prev, anchored=key is not None)


def _check(
    line: str, prev: str, expected_seq: int, key: bytes | None
) -> tuple[dict[str, Any], str | None]:
    try:
        entry = json.loads(line, object_pairs_hook=_no_duplicates)
    except _DuplicateKey:
        return {}, "a key appears twice in it (edited)"
    except ValueError:
        return {}, "not JSON"
    if not isinstance(entry, dict) or "hash" not in entry:
        return {}, "not an audit entry"
    if entry_hash(entry) != entry.get("hash"):
        return entry, "its hash does not match its content (edited)"
    if key is not None and not hmac.compare_digest(
        str(entry.get("mac", "")), entry_mac(key, str(entry["hash"]))
    ):
        return entry, "its mac does not match the anchor key (rewritten from here on)"
    if entry.get("prev_hash") != prev:
        return entry, "its prev_hash is not the previous entry's hash (deleted or reordered)"
    if entry.get("seq") != expected_seq:
        return entry, f"its seq is {entry.get('seq')}, expected {expected_seq}"
    return entry, None
