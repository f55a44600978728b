"""Client side of the helper's JSON-lines RPC, multiplexed by request id."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, Protocol

from rbee_queen.errors import HelperFailed, NodeUnreachable, RbeeError
from rbee_wire.codec import decode_object
from rbee_wire.helper_ops import request_line


class LineReader(Protocol):
    async def readline(self) -> str: ...


class LineWriter(Protocol):
    def write(self, data: str) -> None: ...


class HiveClient:
    def __init__(self, node: str, reader: LineReader, writer: LineWriter) -> None:
        self.node = node
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._closed: RbeeError | None = None
        self._reader_task = asyncio.create_task(self._read_loop())

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def call(self, op: str, timeout: float = 30.0, **args: Any) -> Any:
        if self._closed is not None:
            raise self._closed
        req_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = future
        try:
            try:
                self._writer.write(request_line(req_id, op, args))
            except Exception as exc:  # the channel closed under us
                raise NodeUnreachable(f"helper channel to {self.node} closed") from exc
            # asyncio.timeout, not wait_for: no extra task per call (the health
            # round makes one call per node every few seconds).
            async with asyncio.timeout(timeout):
                response = await future
        except TimeoutError:
            raise HelperFailed(
                f"helper on {self.node} did not answer {op} in {timeout:g}s"
            ) from None
        finally:
            self._pending.pop(req_id, None)
        if response.get("ok"):
            return response.get("result")
        error = response.get("error") or {}
        raise HelperFailed(
            f"{op} on {self.node}: {error.get('message', 'failed')}",
            helper_code=error.get("code", "HELPER_FAILED"),
        )

    async def _read_loop(self) -> None:
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                response = decode_object(line)
                if response is None:
                    continue  # a stray print on the node must not kill the channel
                req_id = response.get("id")
                future = self._pending.get(req_id) if isinstance(req_id, int) else None
                if future is not None and not future.done():
                    future.set_result(response)
        except Exception:  # noqa: BLE001 - any read failure means the channel is gone
            pass
        self._fail_pending(NodeUnreachable(f"helper channel to {self.node} closed"))

    def _fail_pending(self, error: RbeeError) -> None:
        self._closed = error
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()

    async def aclose(self) -> None:
        self._reader_task.cancel()
        try:
            await self._reader_task
        except asyncio.CancelledError:
            pass
        if self._closed is None:
            self._fail_pending(NodeUnreachable(f"helper channel to {self.node} closed"))
