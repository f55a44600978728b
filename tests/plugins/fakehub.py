"""A local stand-in for the Hugging Face hub: a real HTTP server on loopback.

The real hub cannot be reached from the test machines, so this serves the few
endpoints `huggingface_hub` calls for `model_info` and `hf_hub_download` in
the hub's URL layout and with the headers it reads (X-Repo-Commit, ETag,
Content-Length, X-Error-Code), and `huggingface_hub` itself runs unmodified
against it through `HF_ENDPOINT`. Tests change its state directly: which
repos exist, which need a token, which file to corrupt.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

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
        hub.fetched.append(f"{repo}/{name}")
        if name in hub.corrupt:
            content = bytes([content[0] ^ 0xFF]) + content[1:]
        start = _range_start(request.headers.get("range"))
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(content) - 1}/{len(content)}"
            return Response(content[start:], status_code=206, headers=headers)
        return Response(content, status_code=200, headers=headers)

    return Starlette(
        routes=[
            Route("/api/models/{org}/{repo}/revision/{rev}", model_info, methods=["GET"]),
            Route("/api/models/{org}/{repo}", model_info, methods=["GET"]),
            Route("/{org}/{repo}/resolve/{rev}/{file:path}", resolve, methods=["GET", "HEAD"]),
        ]
    )


def _git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _range_start(value: str | None) -> int:
    if not value or not value.startswith("bytes="):
        return 0
    return int(value[len("bytes=") :].split("-")[0] or 0)


@pytest.fixture
def fakehub() -> Iterator[FakeHub]:
    hub = FakeHub()
    port = free_port()
    hub.url = f"http://127.0.0.1:{port}"
    config = uvicorn.Config(build_app(hub), host="127.0.0.1", port=port, log_level="warning")
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
