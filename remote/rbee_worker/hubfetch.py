"""Resumable downloads of single files from the Hugging Face hub.

Used twice: by the queen for its download cache, and on a node, where the
helper runs `python -m rbee_worker.hubfetch` with the worker's interpreter.
`hf_hub_download` writes into a temporary file that it deletes when a download
fails, so a cut download would start again from zero; here the bytes go
straight into the destination file as they arrive, and a dropped connection or
a later run asks the hub only for the rest (a Range request on huggingface_hub's
own HTTP session, with its auth headers and its error types). A file counts only once its
size and SHA-256 match; one that does not is deleted, never kept.

As a program it reads one JSON job from stdin (the token travels there, never
in argv or the environment) and writes one JSON event a line to stdout:
`resume`, `bytes` (a file's bytes so far), `file` (verified), `finished`, or
`error` with the exception's class names and HTTP status for the queen to map.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, BinaryIO, TextIO

PROGRESS_EVERY_S = 0.25
RETRIES = 5  # tries within one run, each resuming where the last one stopped


class Corrupt(Exception):
    """A downloaded file whose size or SHA-256 is not the hub's."""


def sha256_file(path: str) -> str:
    return _hash_file(hashlib.sha256(), path)


def _hash_file(digest: Any, path: str) -> str:
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return str(digest.hexdigest())


def bytes_present(dest: str, size: int) -> int:
    """Bytes an earlier, cut-off run left in `dest` (0 when it holds more than `size`)."""
    try:
        have = os.path.getsize(dest)
    except OSError:
        return 0
    return have if have <= size else 0


def fetch_file(
    repo_id: str,
    name: str,
    commit: str,
    size: int,
    sha256: str | None,
    dest: str,
    token: str | None,
    blob_id: str | None = None,
) -> str:
    """Complete `dest` from the hub (resuming from the bytes already in it) and
    return its SHA-256, checked against the hub's size and hash: the LFS SHA-256
    for weights, the git blob id for small files kept in git (config.json,
    tokenizer files), which have no SHA-256 on the hub."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    url = hf_hub_url(repo_id, name, revision=commit)
    headers = build_hf_headers(token=token or False)
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    have = bytes_present(dest, size)
    with open(dest, "r+b" if have else "wb") as fh:
        fh.seek(have)
        fh.truncate()
        for attempt in range(1, RETRIES + 1):
            if fh.tell() >= size:
                break
            before = fh.tell()
            try:
                _get_rest(url, headers, fh)
            except Exception as exc:
                # A dropped connection that still brought bytes is worth another
                # try from where it stopped; anything else ends this run.
                if not _is_transport(exc) or fh.tell() == before or attempt == RETRIES:
                    raise
    digest = sha256_file(dest)
    bad_blob = sha256 is None and blob_id is not None and git_blob_id(dest) != blob_id
    if os.path.getsize(dest) != size or (sha256 is not None and digest != sha256) or bad_blob:
        os.unlink(dest)  # a retry must fetch it again, not resume a bad file
        raise Corrupt(f"{name} failed its size or hash check")
    return digest


def git_blob_id(path: str) -> str:
    """The id git (and the hub, as `blobId`) gives a file's content: SHA-1 of
    a `blob <size>` header, a NUL and the bytes. Not a defence against a
    forger, as SHA-1 is broken; it catches bytes damaged on the way."""
    header = b"blob %d\0" % os.path.getsize(path)
    return _hash_file(hashlib.sha1(header, usedforsecurity=False), path)


def _get_rest(url: str, headers: dict[str, str], fh: BinaryIO) -> None:
    """Append the bytes after `fh`'s position, written as they arrive (a buffer
    lost in a cut would be bytes the next run has to fetch again)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session, hf_raise_for_status

    have = fh.tell()
    wanted = {**headers, "Range": f"bytes={have}-"} if have else headers
    timeout = constants.HF_HUB_DOWNLOAD_TIMEOUT
    with get_session().stream("GET", url, headers=wanted, timeout=timeout) as response:
        hf_raise_for_status(response)
        if have and response.status_code == 200:  # the server ignored the Range
            fh.seek(0)
            fh.truncate()
        for chunk in response.iter_bytes():
            fh.write(chunk)
            fh.flush()


def _is_transport(exc: BaseException) -> bool:
    # httpx or httpx2, depending on the node's huggingface_hub: match by name.
    return "TransportError" in {k.__name__ for k in type(exc).__mro__}


def describe(exc: BaseException) -> dict[str, Any]:
    """What the queen needs to turn a failure into an rbee error."""
    response: Any = getattr(exc, "response", None)
    text = str(exc).strip()
    return {
        "kinds": [k.__name__ for k in type(exc).__mro__],
        "status": getattr(response, "status_code", None),
        "text": text.splitlines()[0] if text else "",
    }


class _Watcher:
    """Reports a file's size on disk while a download writes it."""

    def __init__(self, path: str, emit: Callable[[dict[str, Any]], None], name: str) -> None:
        self.path, self.emit, self.name = path, emit, name
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(PROGRESS_EVERY_S):
            try:
                self.emit({"type": "bytes", "file": self.name, "bytes": os.path.getsize(self.path)})
            except OSError:
                pass

    def __enter__(self) -> None:
        self.thread.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join()


def run_job(job: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> None:
    folder, token = job["folder"], job.get("token") or None
    for item in job["files"]:
        name, size = item["name"], int(item["size"])
        dest = os.path.join(folder, name)
        have = bytes_present(dest, size)
        if have:
            emit({"type": "resume", "file": name, "bytes": have})
        with _Watcher(dest, emit, name):
            digest = fetch_file(
                job["repo_id"],
                name,
                job["commit"],
                size,
                item.get("sha256"),
                dest,
                token,
                blob_id=item.get("blob_id"),
            )
        emit({"type": "file", "name": name, "size": size, "sha256": digest})
    emit({"type": "finished"})


def main(stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    lock = threading.Lock()

    def emit(event: dict[str, Any]) -> None:
        with lock:
            stdout.write(json.dumps(event) + "\n")
            stdout.flush()

    try:
        run_job(json.loads(stdin.readline()), emit)
    except BrokenPipeError:
        return 1  # the helper is gone: nobody to report to
    except Exception as exc:  # every failure becomes one event the queen maps
        emit({"type": "error", **describe(exc)})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
