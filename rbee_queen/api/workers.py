"""/v2/workers: list and shut down workers."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from rbee_queen.api.body import json_body
from rbee_queen.errors import WorkerNotFound
from rbee_queen.services import services
from rbee_queen.store.tables import Worker, WorkerEvent
from rbee_queen.validation import WORKER_ID, Fields, shown
from rbee_queen.workers.listing import worker_json
from rbee_queen.workers.states import LISTED


async def list_workers(request: Request) -> JSONResponse:
    live = services(request).workers.registry.live
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
    return JSONResponse(await services(request).workers.stopper.shutdown(worker_id))


async def worker_events(request: Request) -> JSONResponse:
    """A worker's history: every state it went through, when, and why."""
    worker_id = request.path_params["worker_id"]
    if not WORKER_ID.match(worker_id) or Worker.get_or_none(Worker.worker_id == worker_id) is None:
        raise WorkerNotFound(f"no worker {shown(worker_id)}")
    rows = WorkerEvent.select().where(WorkerEvent.worker_id == worker_id).order_by(WorkerEvent.at)
    return JSONResponse(
        {
            "worker_id": worker_id,
            "events": [
                {
                    "at": e.at.isoformat(),
                    "from_state": e.from_state,
                    "to_state": e.to_state,
                    "reason": e.reason,
                }
                for e in rows
            ],
        }
    )


routes = [
    Route("/v2/workers/{worker_id}/events", worker_events, methods=["GET"]),
    Route("/v2/workers/list", list_workers, methods=["GET"]),
    Route("/v2/workers/shutdown", shutdown, methods=["POST"]),
]
