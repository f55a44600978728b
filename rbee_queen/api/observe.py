"""/v2/events (the fleet as a live SSE stream) and /metrics (Prometheus)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from rbee_queen import deferred
from rbee_queen.eventbus import Event, Subscription
from rbee_queen.metrics import CONTENT_TYPE
from rbee_queen.nodes.inventory import node_json
from rbee_queen.services import services
from rbee_queen.store.tables import Node, Worker
from rbee_queen.workers.listing import worker_json
from rbee_queen.workers.states import LIVE


def snapshot(request: Request) -> Event:
    svc = services(request)
    live = svc.workers.registry.live
    workers = Worker.select().where(Worker.state.in_([s.value for s in LIVE]))
    return {
        "type": "snapshot",
        "nodes": [node_json(n) for n in Node.select().order_by(Node.name)],
        "workers": [worker_json(w, live.get(w.worker_id)) for w in workers],
        # A notice published before this subscriber came (a database restored
        # at start) still reaches its screen.
        "notices": svc.notices.current(),
    }


async def _stream(first: Event, sub: Subscription) -> AsyncIterator[bytes]:
    yield f"data: {json.dumps(first)}\n\n".encode()
    async for event in sub.events():
        yield f"data: {json.dumps(event)}\n\n".encode()


async def events(request: Request) -> StreamingResponse:
    # Subscribe before reading the snapshot so no change falls between the two.
    sub = services(request).bus.subscribe()
    return StreamingResponse(
        _stream(snapshot(request), sub),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


async def metrics(request: Request) -> Response:
    deferred.flush()  # the figures of the requests that ended a moment ago
    return Response(services(request).metrics.render(), media_type=CONTENT_TYPE)


routes = [
    Route("/v2/events", events, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
