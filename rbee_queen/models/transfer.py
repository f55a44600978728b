"""Moving model files onto a node over SFTP, with progress.

Files go into the model's partial folder on the node; the helper checks them
and renames the folder into place (`model_commit`). Copies between nodes are
relayed by the queen over the two SFTP sessions it already holds: the nodes
need no route to each other and no keys for each other, the host keys were
already verified, and one code path serves hub downloads and copies alike.
The cost is that the bytes cross the queen's link twice. A transfer that was
cut off resumes: the next run keeps the bytes already in the partial folder
and sends only the rest (the commit checks the whole file's hash).
"""

from __future__ import annotations

import asyncio
import posixpath
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

import asyncssh

from rbee_queen.errors import DownloadFailed, DownloadTimeout, InsufficientDisk, RbeeError
from rbee_queen.fleet.session import NodeSession

CHUNK = 1 << 20
PROGRESS_EVERY_S = 0.25

Event = dict[str, Any]


async def unstalled(step: Awaitable[Any], name: str, limit: float) -> Any:
    """One read or write of a transfer, given up when it moves nothing for
    `limit` seconds (models.download_stall_s); the partial file stays for the resume."""
    try:
        return await asyncio.wait_for(step, limit)
    except TimeoutError:
        raise DownloadTimeout(
            f"no progress on {name} for {limit:.0f} s; the partial file is kept: "
            "run it again to resume"
        ) from None


@asynccontextmanager
async def sftp_session(
    session: NodeSession, name: str, limit: float
) -> AsyncIterator[asyncssh.SFTPClient]:
    """An SFTP session for one file's transfer. It closes without waiting for the
    node's answer: a node that stopped answering would hold the transfer there."""
    sftp = await unstalled(session.conn.start_sftp_client(), name, limit)
    try:
        yield sftp
    finally:
        sftp.exit()


class Progress:
    """Bytes done out of a total; says when an event is due (at most 4 a second)."""

    def __init__(self, total: int, done: int = 0, stall_s: float = 60.0) -> None:
        self.total = total
        self.stall_s = stall_s  # a transfer that moves nothing this long fails
        self.done = done
        self.started = time.monotonic()
        self._last = 0.0

    def add(self, n: int) -> bool:
        self.done += n
        now = time.monotonic()
        if now - self._last >= PROGRESS_EVERY_S or self.done >= self.total:
            self._last = now
            return True
        return False

    def event(self, name: str) -> Event:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return {
            "type": "progress",
            "file": name,
            "bytes_done": self.done,
            "bytes_total": self.total,
            "rate_bytes_s": round(self.done / elapsed),
        }


async def upload_file(
    session: NodeSession, local: str, folder: str, name: str, progress: Progress, offset: int = 0
) -> AsyncIterator[Event]:
    """Copy a file from the queen into `folder` on the node, from byte `offset` on."""
    src = await asyncio.to_thread(open, local, "rb")
    try:
        src.seek(offset)

        async def read() -> bytes:
            return await asyncio.to_thread(src.read, CHUNK)

        async for event in _write(session, read, folder, name, progress, offset):
            yield event
    finally:
        src.close()


async def relay_file(
    source: NodeSession,
    src_path: str,
    dest: NodeSession,
    folder: str,
    name: str,
    progress: Progress,
    offset: int = 0,
) -> AsyncIterator[Event]:
    """Copy a file from one node to another through the queen, chunk by chunk,
    from byte `offset` on."""
    limit = progress.stall_s
    try:
        async with sftp_session(source, name, limit) as sftp:
            src = await unstalled(sftp.open(src_path, "rb"), name, limit)
            await src.seek(offset)

            async def read() -> bytes:
                return cast(bytes, await src.read(CHUNK))

            async for event in _write(dest, read, folder, name, progress, offset):
                yield event
    except asyncssh.SFTPError as exc:
        where = source.target.name
        raise DownloadFailed(f"cannot read {src_path} on {where}: {exc.reason}") from exc


async def _write(
    session: NodeSession,
    read: Callable[[], Awaitable[bytes]],
    folder: str,
    name: str,
    progress: Progress,
    offset: int,
) -> AsyncIterator[Event]:
    """Write into `dest`, keeping its first `offset` bytes (what a cut-off run left).
    Every step is bounded by the stall limit; what was written stays either way."""
    dest = posixpath.join(folder, name)
    limit = progress.stall_s
    if offset:
        progress.add(offset)
        yield {"type": "resume", "file": name, "bytes": offset}
    async with sftp_session(session, name, limit) as sftp:
        try:
            await unstalled(sftp.makedirs(posixpath.dirname(dest), exist_ok=True), name, limit)
            out = await unstalled(sftp.open(dest, "r+b" if offset else "wb"), name, limit)
            await unstalled(out.seek(offset), name, limit)
            await unstalled(out.truncate(offset), name, limit)
            while chunk := await unstalled(read(), name, limit):
                await unstalled(out.write(chunk), name, limit)
                if progress.add(len(chunk)):
                    yield progress.event(name)
            await unstalled(out.close(), name, limit)
        except asyncssh.SFTPError as exc:
            raise await _write_error(session, sftp, dest, progress, exc) from exc


async def _write_error(
    session: NodeSession,
    sftp: asyncssh.SFTPClient,
    dest: str,
    progress: Progress,
    exc: asyncssh.SFTPError,
) -> RbeeError:
    """INSUFFICIENT_DISK when the node's disk has filled (its SFTP server says only
    "Failure" for that, so its free space decides), else DOWNLOAD_FAILED."""
    where = session.target.name
    needed = progress.total - progress.done
    try:
        disk = await unstalled(sftp.statvfs(posixpath.dirname(dest)), dest, progress.stall_s)
        free = disk.bavail * disk.frsize
    except (asyncssh.SFTPError, DownloadTimeout):
        free = None
    if free is not None and free < needed:
        return InsufficientDisk(
            f"the disk of node {where} filled up while writing {dest} ({free} bytes free, "
            f"{needed} still to write); what was written is kept: free space and run it "
            "again to resume",
            required_bytes=needed,
            available_bytes=free,
            where=where,
        )
    return DownloadFailed(f"cannot write {dest} on {where}: {exc.reason}")
