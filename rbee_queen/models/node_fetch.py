"""Hub downloads that run on the node itself (nodes whose model source is "hub").

The queen still lists the repository (so it pins the commit, checks the disk
and knows every file's size and hash); the node fetches the bytes with the
worker's interpreter through `rbee_worker.hubfetch`, started by the helper.
The token goes to the helper over the SSH channel and from there to the child
on stdin: never in argv, never in the environment. The queen long-polls the
helper for the child's events and turns them into the same progress events a
queen-side download streams. The bytes land in the model's partial folder, so
a cut-off run resumes where it stopped and `model_commit` checks every file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from huggingface_hub import constants

from rbee_queen.errors import DownloadFailed, RbeeError
from rbee_queen.fleet.session import NodeSession
from rbee_queen.models.hub import HubFile, Listing, hub_error_from
from rbee_queen.models.node_models import HubRef
from rbee_queen.models.transfer import Event, Progress

POLL_WAIT_S = 1.0


async def fetch_on_node(
    session: NodeSession,
    python: str,
    ref: HubRef,
    listing: Listing,
    files: list[HubFile],
    token: str | None,
    progress: Progress,
    verified: list[dict[str, Any]],
) -> AsyncIterator[Event]:
    """Yield progress events while the node downloads `files`; append each file
    it verified to `verified`. A closed generator (the client went away) stops
    the download on the node."""
    job = await _start(session, python, ref, listing, files, token)
    cursor, finished, verified_all = 0, False, False
    base = progress.done  # bytes done before the file now downloading
    try:
        while not finished:  # until the child has exited, so the helper forgets the job
            answer = await session.ops.model_fetch_events(
                job=job, cursor=cursor, timeout=POLL_WAIT_S + 30.0
            )
            cursor, finished = answer["cursor"], bool(answer.get("finished"))
            for event in answer["events"]:
                kind = event.get("type")
                if kind in ("resume", "bytes"):
                    due = progress.add(base + int(event["bytes"]) - progress.done)
                    if kind == "resume":
                        yield {"type": "resume", "file": event["file"], "bytes": event["bytes"]}
                    elif due:
                        yield progress.event(event["file"])
                elif kind == "file":
                    verified.append({k: event[k] for k in ("name", "size", "sha256")})
                    progress.done = base = base + int(event["size"])
                    yield progress.event(event["name"])
                elif kind == "error":
                    raise _error(event, ref)
                elif kind == "finished":
                    verified_all = True
        if not verified_all:
            stderr = "; ".join(answer.get("stderr") or []) or "no output"
            raise DownloadFailed(
                f"the download on {session.target.name} stopped "
                f"(exit {answer.get('returncode')}): {stderr[-300:]}"
            )
    finally:
        if not finished:
            try:
                await session.ops.model_fetch_cancel(job=job)
            except RbeeError:
                pass  # the channel is gone, and with it the child's stdout


async def _start(
    session: NodeSession,
    python: str,
    ref: HubRef,
    listing: Listing,
    files: list[HubFile],
    token: str | None,
) -> str:
    """Start the download on the node; its job id."""
    started = await session.ops.model_fetch_start(
        install_path=session.install_dir,
        rel=ref.rel_path,
        python=python,
        pythonpath=session.helper_dir,
        repo_id=ref.repo_id,
        commit=listing.commit,
        files=[
            {"name": f.name, "size": f.size, "sha256": f.sha256, "blob_id": f.blob_id}
            for f in files
        ],
        token=token or "",
        env={
            "HF_ENDPOINT": constants.ENDPOINT,
            "HF_HUB_DISABLE_TELEMETRY": "1",
            # the node gives up on a stalled download when the queen would
            "HF_HUB_DOWNLOAD_TIMEOUT": str(constants.HF_HUB_DOWNLOAD_TIMEOUT),
        },
    )
    return started["job"]


def _error(event: dict[str, Any], ref: HubRef) -> Exception:
    if "Corrupt" in (event.get("kinds") or []):
        return DownloadFailed(f"{event.get('text')} (from {ref.ref}, on the node)")
    return hub_error_from(event, ref)
