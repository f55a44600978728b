"""Getting models onto nodes: hub downloads, copies between nodes, removal.

Each operation checks what it can before it starts (the reference, the hub's
file list, free disk on the node), so those failures are plain errors; then it
streams progress events. A download runs file by file: fetched into the queen's
cache, uploaded into the node's partial folder, and skipped where the node
already has the file with the right size and SHA-256; a file an earlier run
left cut short is continued from its last byte, in the queen's cache and on
the node alike. A node whose model source is "hub" fetches the files itself
(node_fetch.py). The folder is renamed into place, and the catalog row
written, only after the helper has checked every file on the node.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

from rbee_queen.config import QueenConfig
from rbee_queen.errors import (
    DownloadFailed,
    DownloadInProgress,
    HelperFailed,
    InsufficientDisk,
    ModelInUse,
    ModelNotFound,
    RbeeError,
)
from rbee_queen.fleet.session import NodeSession
from rbee_queen.models import hub
from rbee_queen.models import node_models as catalog
from rbee_queen.models.node_fetch import fetch_on_node
from rbee_queen.models.shared import SharedTransfer
from rbee_queen.models.transfer import Event, Progress, relay_file, upload_file
from rbee_queen.nodes.inventory import NodeInventory, get_node
from rbee_queen.secrets import load_secret_file
from rbee_queen.store.tables import Node, NodeModel, Worker
from rbee_queen.workers.states import LIVE
from rbee_wire.queen_events import ModelDownload, QueenEvent

COMMIT_TIMEOUT_S = 3600.0  # the helper hashes every file: minutes for a large model


@dataclass
class Plan:
    """What a download or copy will do, worked out before anything is written."""

    node: Node
    session: NodeSession
    ref: catalog.HubRef
    folder: str  # the partial folder on the node
    present: dict[str, tuple[int, str]]  # name -> (size, sha256) already in it
    bytes_needed: int
    existing: NodeModel | None = None  # already complete on the node: nothing to do
    joined: SharedTransfer | None = None  # the same download, already running


class ModelManager:
    def __init__(self, config: QueenConfig, inventory: NodeInventory) -> None:
        self.config = config
        self.inventory = inventory
        self._busy: set[tuple[str, str]] = set()
        # (node, model) -> the download running now, which a second request joins
        self._running: dict[tuple[str, str], tuple[Plan, hub.Listing, SharedTransfer]] = {}
        # Each download's and copy's outcome goes to the event bus (wired by the services).
        self.publish: Callable[[QueenEvent], object] = lambda event: None

    # --- listing ---------------------------------------------------------------

    async def list_models(self, node_name: str | None) -> list[dict[str, Any]]:
        """Catalog rows, each first checked against its node's disk where the node answers."""
        rows = catalog.entries(node_name)
        by_node: dict[str, list[NodeModel]] = {}
        for row in rows:
            by_node.setdefault(row.node_id, []).append(row)  # type: ignore[attr-defined]
        for name, node_rows in by_node.items():
            try:
                session = await self.inventory.session_for(get_node(name))
                await catalog.check(session, node_rows)
            except Exception:  # an unreachable node keeps its last known status
                continue
        return [catalog.entry_json(row) for row in catalog.entries(node_name)]

    # --- downloads -------------------------------------------------------------

    def hf_token(self) -> str | None:
        path = self.config.hf_token_file
        if path is None:
            return None
        if not path.exists() and path == self.config.home / "hf-token":
            return None  # the default file is optional; a file named by the user is not
        return load_secret_file(path)

    async def plan_download(
        self, node_name: str, ref_text: str, allow_bin: bool
    ) -> tuple[Plan, hub.Listing]:
        ref = catalog.parse_ref(ref_text)
        node = get_node(node_name)
        running = self._running.get((node.name, ref.ref))
        if running is not None:  # one transfer, both requests see its progress
            plan, listing, shared = running
            return replace(plan, joined=shared), listing
        listing = await asyncio.to_thread(hub.list_files, ref, self.hf_token(), allow_bin)
        session = await self.inventory.session_for(node)
        row = catalog.find(node.name, ref.ref)
        if row is not None:
            await catalog.check(session, [row])
            if row.status == "complete" and _same_files(row, listing):
                return Plan(node, session, ref, "", {}, 0, existing=row), listing
        wanted = [(f.name, f.size, f.sha256) for f in listing.files]
        plan = await self._plan(node, session, ref, wanted)
        cache = self.config.hf_cache_dir
        cache.mkdir(parents=True, exist_ok=True)
        queen_free = shutil.disk_usage(cache).free
        if node.model_source == "queen" and listing.size_bytes > queen_free:
            raise InsufficientDisk(
                f"the queen's download cache {cache} has {queen_free} bytes free; "
                f"{ref.ref} needs {listing.size_bytes}",
                required_bytes=listing.size_bytes,
                available_bytes=queen_free,
                where="queen",
            )
        return plan, listing

    async def download(self, plan: Plan, listing: hub.Listing) -> AsyncIterator[Event]:
        if plan.existing is not None:
            yield {"type": "done", "model": catalog.entry_json(plan.existing), "already": True}
            return
        key = (plan.node.name, plan.ref.ref)
        running = self._running.get(key)  # started since this request was planned
        shared = plan.joined or (running[2] if running else None)
        if shared is None:
            source = str(plan.node.model_source)
            events = self._published(plan, source, self._download(plan, listing))
            shared = SharedTransfer(events, on_end=lambda: self._running.pop(key, None))
            self._running[key] = (plan, listing, shared)
        async for event in shared.follow():
            yield event

    async def _published(
        self, plan: Plan, source: str, events: AsyncIterator[Event]
    ) -> AsyncIterator[Event]:
        """Pass a transfer's events on; publish its outcome, bytes and time when it ends
        (bytes: what this run moved, skipped files not counted)."""
        started, done, skipped = time.monotonic(), 0, 0
        error: str | None = "CANCELLED"
        try:
            async for event in events:
                if event.get("type") == "progress":
                    done = max(done, int(event.get("bytes_done") or 0))
                elif event.get("type") == "skip":
                    skipped += int(event.get("bytes") or 0)
                yield event
            error = None
        except RbeeError as exc:
            error = exc.code
            raise
        except Exception:
            error = RbeeError.code
            raise
        finally:
            self.publish(
                ModelDownload(
                    type="model_download",
                    node=plan.node.name,
                    model=plan.ref.ref,
                    source=source,
                    error=error,
                    bytes=max(0, done - skipped),
                    duration_s=time.monotonic() - started,
                )
            )

    async def _download(self, plan: Plan, listing: hub.Listing) -> AsyncIterator[Event]:
        with self._claim(plan):
            progress = Progress(listing.size_bytes, stall_s=self.config.download_stall_s)
            token = self.hf_token()
            yield {
                "type": "start",
                "model": plan.ref.ref,
                "node": plan.node.name,
                "commit": listing.commit,
                "bytes_total": listing.size_bytes,
                "files": len(listing.files),
            }
            done: list[dict[str, Any]] = []
            todo: list[hub.HubFile] = []
            for item in listing.files:
                have = plan.present.get(item.name)
                if item.sha256 is not None and have == (item.size, item.sha256):
                    done.append({"name": item.name, "size": item.size, "sha256": item.sha256})
                    progress.add(item.size)
                    yield {"type": "skip", "file": item.name, "bytes": item.size}
                else:
                    todo.append(item)
            if plan.node.model_source == "hub":
                python = plan.node.worker_python or "python3"
                fetch = fetch_on_node(
                    plan.session, python, plan.ref, listing, todo, token, progress, done
                )
            else:
                fetch = self._fetch_via_queen(plan, listing, todo, token, progress, done)
            async for event in fetch:
                yield event
            yield await self._commit(plan, "hf", done)

    async def _fetch_via_queen(
        self,
        plan: Plan,
        listing: hub.Listing,
        todo: list[hub.HubFile],
        token: str | None,
        progress: Progress,
        done: list[dict[str, Any]],
    ) -> AsyncIterator[Event]:
        """Each file into the queen's cache, then over SFTP into the partial folder."""
        for item in todo:
            have = plan.present.get(item.name)
            path, digest = await asyncio.to_thread(
                hub.fetch, plan.ref, listing, item, token, self.config.hf_cache_dir
            )
            done.append({"name": item.name, "size": item.size, "sha256": digest})
            if have == (item.size, digest):
                progress.add(item.size)
                yield {"type": "skip", "file": item.name, "bytes": item.size}
                continue
            offset = resume_offset(have, item.size)
            upload = upload_file(plan.session, path, plan.folder, item.name, progress, offset)
            async for event in upload:
                yield event

    # --- copies ----------------------------------------------------------------

    async def plan_copy(
        self, source_name: str, dest_name: str, ref_text: str
    ) -> tuple[Plan, NodeModel, NodeSession]:
        ref = catalog.parse_ref(ref_text)
        source_node, dest_node = get_node(source_name), get_node(dest_name)
        row = catalog.find(source_node.name, ref.ref)
        if row is None:
            raise ModelNotFound(f"{ref.ref} is not on node {source_name}")
        source = await self.inventory.session_for(source_node)
        await catalog.check(source, [row])
        if row.status != "complete":
            raise ModelNotFound(
                f"{ref.ref} on node {source_name} is {row.status}; download it again"
            )
        dest = await self.inventory.session_for(dest_node)
        files = [(f["name"], f["size"], f["sha256"]) for f in row.files]
        return await self._plan(dest_node, dest, ref, files), row, source

    async def copy(self, plan: Plan, row: NodeModel, source: NodeSession) -> AsyncIterator[Event]:
        async for event in self._published(plan, "copy", self._copy(plan, row, source)):
            yield event

    async def _copy(self, plan: Plan, row: NodeModel, source: NodeSession) -> AsyncIterator[Event]:
        with self._claim(plan):
            progress = Progress(int(row.size_bytes), stall_s=self.config.download_stall_s)
            yield {
                "type": "start",
                "model": plan.ref.ref,
                "node": plan.node.name,
                "from": row.node_id,  # type: ignore[attr-defined]
                "bytes_total": row.size_bytes,
                "files": len(row.files),
            }
            for item in row.files:
                name, size, sha = item["name"], int(item["size"]), item["sha256"]
                if plan.present.get(name) == (size, sha):
                    progress.add(size)
                    yield {"type": "skip", "file": name, "bytes": size}
                    continue
                src = f"{row.local_path}/{name}"
                offset = resume_offset(plan.present.get(name), size)
                relay = relay_file(source, src, plan.session, plan.folder, name, progress, offset)
                async for event in relay:
                    yield event
            yield await self._commit(plan, str(row.provider), list(row.files))

    # --- removal ---------------------------------------------------------------

    async def remove(self, node_name: str, ref_text: str) -> dict[str, Any]:
        ref = catalog.parse_ref(ref_text)
        node = get_node(node_name)
        row = catalog.find(node.name, ref.ref)
        if row is None:
            raise ModelNotFound(f"{ref.ref} is not on node {node_name}")
        users = Worker.select().where(
            (Worker.node == node.name)
            & (Worker.model_ref == ref.ref)
            & (Worker.state.in_([s.value for s in LIVE]))
        )
        ids = [w.worker_id for w in users]
        if ids:
            raise ModelInUse(
                f"{ref.ref} on {node_name} is used by worker(s) {', '.join(ids)}; stop them first",
                workers=ids,
            )
        if (node.name, ref.ref) in self._busy:
            raise DownloadInProgress(f"{ref.ref} is being written to {node_name}")
        session = await self.inventory.session_for(node)
        await session.ops.model_remove(install_path=session.install_dir, rel=ref.rel_path)
        row.delete_instance()
        return {"removed": ref.ref, "node": node.name}

    # --- shared steps -------------------------------------------------------------

    async def _plan(
        self,
        node: Node,
        session: NodeSession,
        ref: catalog.HubRef,
        files: list[tuple[str, int, str | None]],
    ) -> Plan:
        if (node.name, ref.ref) in self._busy:
            raise DownloadInProgress(f"{ref.ref} is already being written to {node.name}")
        store = await session.ops.model_store(install_path=session.install_dir)
        prepared = await session.ops.model_prepare(
            install_path=session.install_dir,
            rel=ref.rel_path,
            timeout=COMMIT_TIMEOUT_S,
        )
        present = {f["name"]: (int(f["size"]), str(f["sha256"])) for f in prepared["files"]}
        needed = sum(
            size for name, size, sha in files if sha is None or present.get(name) != (size, sha)
        )
        if needed > store["free_bytes"]:
            raise InsufficientDisk(
                f"node {node.name} has {store['free_bytes']} bytes free under {store['root']}; "
                f"{ref.ref} needs {needed} more",
                required_bytes=needed,
                available_bytes=store["free_bytes"],
                where=node.name,
            )
        return Plan(node, session, ref, prepared["path"], present, needed)

    async def _commit(self, plan: Plan, provider: str, files: list[dict[str, Any]]) -> Event:
        try:
            committed = await plan.session.ops.model_commit(
                install_path=plan.session.install_dir,
                rel=plan.ref.rel_path,
                files=[
                    {"name": f["name"], "size": f["size"], "sha256": f["sha256"]} for f in files
                ],
                timeout=COMMIT_TIMEOUT_S,
            )
        except HelperFailed as exc:  # a file that failed its check is the transfer's fault
            if exc.details.get("helper_code") != DownloadFailed.code:
                raise
            what = exc.message.split(": ", 1)[-1]
            raise DownloadFailed(f"{plan.ref.ref} on {plan.node.name}: {what}") from exc
        row = catalog.record(plan.node, plan.ref, provider, committed["path"], files)
        return {"type": "done", "model": catalog.entry_json(row)}

    def _claim(self, plan: Plan) -> _Claim:
        return _Claim(self._busy, (plan.node.name, plan.ref.ref))


class _Claim:
    """Marks a (node, model) as being written, so a second writer is refused."""

    def __init__(self, busy: set[tuple[str, str]], key: tuple[str, str]) -> None:
        self.busy, self.key = busy, key

    def __enter__(self) -> None:
        if self.key in self.busy:
            raise DownloadInProgress(f"{self.key[1]} is already being written to {self.key[0]}")
        self.busy.add(self.key)

    def __exit__(self, *exc_info: object) -> None:
        self.busy.discard(self.key)


def _same_files(row: NodeModel, listing: hub.Listing) -> bool:
    recorded = {f["name"]: (f["size"], f["sha256"]) for f in row.files}
    if set(recorded) != {f.name for f in listing.files}:
        return False
    return all(
        recorded[f.name][0] == f.size and f.sha256 in (None, recorded[f.name][1])
        for f in listing.files
    )


def resume_offset(have: tuple[int, str] | None, size: int) -> int:
    """Where a transfer into the partial folder resumes: after the bytes a cut-off
    run left there (checked at commit by the whole file's hash), else at 0."""
    return have[0] if have is not None and have[0] < size else 0
