"""Where the dashboard's data comes from, and what its actions do.

The app talks to these two small interfaces only; `QueenSource` and
`QueenActions` implement them over the queen's HTTP API, and tests can hand the
app any other implementation (a recorded list of events, say).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Protocol

import httpx

from rbee_keeper.client import EVENTS_TIMEOUT, QueenClient
from rbee_keeper.sse import iter_sse_data
from rbee_keeper.token import BearerToken

Json = dict[str, Any]


class EventSource(Protocol):
    def events(self) -> AsyncIterator[Json]:
        """A snapshot first, then changes; ends or raises when the link drops."""
        ...


class FleetActions(Protocol):
    def stop_worker(self, worker_id: str) -> Json: ...

    def start_worker(self, node: str, model_ref: str) -> Json: ...

    def add_node(self, node: Json) -> Json: ...

    def log_tail(self, node: str, worker_id: str) -> list[str]: ...


class QueenSource:
    """`GET /v2/events`, read asynchronously so that quitting cancels it at once."""

    def __init__(self, queen_url: str) -> None:
        self.queen_url = queen_url

    async def events(self) -> AsyncIterator[Json]:
        async with (
            httpx.AsyncClient(base_url=self.queen_url, auth=BearerToken()) as http,
            http.stream("GET", "/v2/events", timeout=EVENTS_TIMEOUT) as response,
        ):
            response.raise_for_status()
            async for line in response.aiter_lines():
                # The queen sends one `data:` line per event; see rbee_keeper.sse.
                for data in iter_sse_data([line, ""]):
                    event = json.loads(data)
                    if isinstance(event, dict):
                        yield event


class QueenActions:
    def __init__(self, queen_url: str) -> None:
        self.queen_url = queen_url

    def stop_worker(self, worker_id: str) -> Json:
        with QueenClient(self.queen_url) as queen:
            return queen.shutdown_worker(worker_id)

    def start_worker(self, node: str, model_ref: str) -> Json:
        # A one-token task starts (or finds) a worker for the model on the node.
        task = {"node": node, "model": model_ref, "prompt": "warm up", "max_tokens": 1}
        with QueenClient(self.queen_url) as queen, queen.start_task(task) as stream:
            return {"events": list(stream.events())}

    def add_node(self, node: Json) -> Json:
        # The route `rbee-keeper setup add-node` calls: the same preflight runs.
        with QueenClient(self.queen_url) as queen:
            return queen.add_node(node)

    def log_tail(self, node: str, worker_id: str) -> list[str]:
        with QueenClient(self.queen_url) as queen:
            answer = queen.logs(worker_id=worker_id, lines=50)
        return [str(line) for line in answer.get("lines", [])]
