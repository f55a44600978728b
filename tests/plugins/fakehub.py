"""A local stand-in for the Hugging Face hub: a real HTTP server on loopback.

The real hub cannot be reached from the test machines, so this serves the few
endpoints `huggingface_hub` calls for `model_info` and `hf_hub_download` in
the hub's URL layout and with the headers it reads (X-Repo-Commit, ETag,
Content-Length, X-Error-Code), and `huggingface_hub` itself runs unmodified
against it through `HF_ENDPOINT`. Tests change its state directly: which
repos exist, which need a token, which file to corrupt, where to cut a
download off; and read what it served (bytes per file, Range requests).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.sshd import free_port

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS = (".safetensors", ".bin")


@dataclass
class FakeHub:
    url: str = ""
    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)
    private: dict[str, str] = field(default_factory=dict)  # repo -> token it needs
    sizes: dict[tuple[str, str], int] = field(default_factory=dict)  # declared, not served
    corrupt: set[str] = field(default_factory=set)  # file names served with a flipped byte
    fetched: list[str] = field(default_factory=list)  # "repo/file" of every GET
    served: dict[str, int] = field(default_factory=dict)  # "repo/file" -> body bytes sent
    ranges: list[tuple[str, int]] = field(default_factory=list)  # ("repo/file", first byte)
    # file name -> bytes after which its next GET is cut off; after a cut the hub
    # is down (every GET of a file answers 503) until a test clears `outage`.
    cut: dict[str, int] = field(default_factory=dict)
    outage: bool = False
    # file name -> (offset, seconds): every GET of it sends the bytes before
    # `offset`, then holds the connection that long before the rest (a slow or
    # stalled hub), until a test removes the entry.
    pause: dict[str, tuple[int, float]] = field(default_factory=dict)

    def add_folder(self, repo: str, folder: Path, extra: dict[str, bytes] | None = None) -> None:
        files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
        self.repos[repo] = {**files, **(extra or {})}


def _denied(hub: FakeHub, repo: str, request: Request) -> Response | None:
    if repo not in hub.repos:
        return Response(status_code=404, headers={"X-Error-Code": "RepoNotFound"})
    needed = hub.private.get(repo)
    if needed and request.headers.get("authorization") != f"Bearer {needed}":
        # What the hub answers for a private repo without access.
        return Response(status_code=401, headers={"X-Error-Code": "RepoNotFound"})
    return None


def build_app(hub: FakeHub) -> Starlette:
    async def model_info(request: Request) -> Response:
        repo = f"{request.path_params['org']}/{request.path_params['repo']}"
        denied = _denied(hub, repo, request)
        if denied is not None:
            return denied
        siblings = _siblings(hub, repo)
        return JSONResponse({"id": repo, "modelId": repo, "sha": COMMIT, "siblings": siblings})

    async def resolve(request: Request) -> Response:
        p = request.path_params
        repo, name = f"{p['org']}/{p['repo']}", p["file"]
        denied = _denied(hub, repo, request)
        if denied is not None:
            return denied
        if p["rev"] not in ("main", COMMIT):
            return Response(status_code=404, headers={"X-Error-Code": "RevisionNotFound"})
        content = hub.repos[repo].get(name)
        if content is None:
            return Response(status_code=404, headers={"X-Error-Code": "EntryNotFound"})
        # The hub's ETag is the LFS sha256, else the git blob id: huggingface_hub's
        # cache stores blobs by it, so it must differ between files.
        etag = hashlib.sha256(content).hexdigest() if name.endswith(LFS) else _git_blob_id(content)
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(content))
            return Response(status_code=200, headers=headers)
        return _serve_file(hub, request, repo, name, content, headers)

    return Starlette(
        routes=[
            Route("/api/models/{org}/{repo}/revision/{rev}", model_info, methods=["GET"]),
            Route("/api/models/{org}/{repo}", model_info, methods=["GET"]),
            Route("/{org}/{repo}/resolve/{rev}/{file:path}", resolve, methods=["GET", "HEAD"]),
        ]
    )


def _siblings(hub: FakeHub, repo: str) -> list[dict[str, object]]:
    """A model_info's files, with the sizes and hashes the hub lists for each."""
    siblings = []
    for name, content in hub.repos[repo].items():
        size = hub.sizes.get((repo, name), len(content))
        item: dict[str, object] = {
            "rfilename": name,
            "size": size,
            "blobId": _git_blob_id(content),
        }
        if name.endswith(LFS):
            sha = hashlib.sha256(content).hexdigest()
            item["lfs"] = {"size": size, "sha256": sha, "pointerSize": 134}
        siblings.append(item)
    return siblings


def _serve_file(
    hub: FakeHub, request: Request, repo: str, name: str, content: bytes, headers: dict[str, str]
) -> Response:
    """A file's GET: down in an outage, corrupted, from a Range's start, or cut
    off, as the test set the hub up; what it sent is recorded."""
    if hub.outage:
        return Response(status_code=503)
    key = f"{repo}/{name}"
    hub.fetched.append(key)
    if name in hub.corrupt:
        content = bytes([content[0] ^ 0xFF]) + content[1:]
    start = _range_start(request.headers.get("range"))
    status = 200
    if start:
        hub.ranges.append((key, start))
        headers["Content-Range"] = f"bytes {start}-{len(content) - 1}/{len(content)}"
        status = 206
    body = content[start:]
    cut_at = hub.cut.pop(name, None)
    if cut_at is not None:
        headers["Content-Length"] = str(len(body))
        return StreamingResponse(_cut_off(hub, key, body[:cut_at]), status, headers)
    hub.served[key] = hub.served.get(key, 0) + len(body)
    if name in hub.pause:
        offset, seconds = hub.pause[name]
        headers["Content-Length"] = str(len(body))
        split = max(0, offset - start)
        return StreamingResponse(_paused(body[:split], body[split:], seconds), status, headers)
    return Response(body, status_code=status, headers=headers)


async def _paused(first: bytes, rest: bytes, seconds: float) -> AsyncIterator[bytes]:
    if first:
        yield first
    await asyncio.sleep(seconds)
    yield rest


class _Cut(Exception):
    """Ends a response in the middle of its body: the client sees the connection drop."""


async def _cut_off(hub: FakeHub, key: str, part: bytes) -> AsyncIterator[bytes]:
    hub.served[key] = hub.served.get(key, 0) + len(part)
    yield part
    await asyncio.sleep(0.2)  # let the bytes reach the client before the cut
    hub.outage = True
    raise _Cut(key)


def _git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _range_start(value: str | None) -> int:
    if not value or not value.startswith("bytes="):
        return 0
    return int(value[len("bytes=") :].split("-")[0] or 0)


@contextmanager
def running_fakehub() -> Iterator[FakeHub]:
    """The fake hub on a free loopback port, for as long as the block runs."""
    hub = FakeHub()
    port = free_port()
    hub.url = f"http://127.0.0.1:{port}"
    config = uvicorn.Config(build_app(hub), host="127.0.0.1", port=port, log_level="critical")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("fake hub did not start")
        time.sleep(0.02)
    try:
        yield hub
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def fakehub() -> Iterator[FakeHub]:
    with running_fakehub() as hub:
        yield hub


@pytest.fixture
def hub_queen(
    rbee_home: Path, fakehub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> Iterator[QueenProcess]:
    """A queen whose huggingface_hub talks to the fake hub, with no user token or cache."""
    monkeypatch.setenv("HF_ENDPOINT", fakehub.url)
    monkeypatch.setenv("HF_HOME", str(rbee_home / "hf-home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    q = start_queen(rbee_home)
    try:
        yield q
    finally:
        stop_queen(q)
