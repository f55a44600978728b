"""/v2/workers: list and shut down workers."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from rbee_queen.api.body import json_body
from rbee_queen.orchestration.states import LISTED
from rbee_queen.orchestration.workers import worker_json
from rbee_queen.services import services
from rbee_queen.store.models import Worker
from rbee_queen.validation import WORKER_ID, Fields


async def list_workers(request: Request) -> JSONResponse:
    live = services(request).workers.live
    include_stopped = request.query_params.get("all") == "1"
    query = Worker.select().order_by(Worker.started_at)
    if not include_stopped:
        query = query.where(Worker.state.in_([s.value for s in LISTED]))
    return JSONResponse({"workers": [worker_json(w, live.get(w.worker_id)) for w in query]})


async def shutdown(request: Request) -> JSONResponse:
    f = Fields(await json_body(request))
    worker_id = f.string("worker_id", pattern=WORKER_ID, max_len=256)
    f.raise_if_any()
    assert worker_id is not None
    return JSONResponse(await services(request).workers.shutdown(worker_id))


routes = [
    Route("/v2/workers/list", list_workers, methods=["GET"]),
    Route("/v2/workers/shutdown", shutdown, methods=["POST"]),
]
