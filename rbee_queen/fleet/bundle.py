"""The code the queen uploads to a node: `rbee_hive`, `rbee_worker` and `rbee_wire` sources.

The upload goes into a folder named after the hash of its contents, so a node
that already has this exact version skips the upload, and two queen versions
never overwrite each other's helper. A marker file written last tells a
complete upload from one cut off half-way.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import rbee_hive
import rbee_wire
import rbee_worker

COMPLETE_MARKER = ".complete"


@dataclass(frozen=True)
class Bundle:
    digest: str
    files: tuple[tuple[str, bytes], ...]  # (relative path, content)


@cache
def local_bundle() -> Bundle:
    files: list[tuple[str, bytes]] = []
    for package in (rbee_hive, rbee_worker, rbee_wire):
        root = Path(str(package.__file__)).parent
        for path in sorted(root.rglob("*.py")):
            rel = f"{root.name}/{path.relative_to(root).as_posix()}"
            files.append((rel, path.read_bytes()))
    digest = hashlib.sha256()
    for rel, content in files:
        digest.update(rel.encode() + b"\0" + hashlib.sha256(content).digest())
    return Bundle(digest=digest.hexdigest()[:16], files=tuple(files))
