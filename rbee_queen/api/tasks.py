"""POST /v2/tasks: run one inference, streamed back as SSE in the worker's events.

`model` is a `file:` reference or a name from the model catalog; `node` picks
the node, and may be left out for a catalog name, which is then routed like
the OpenAI routes (least loaded, load on demand).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from rbee_queen.api import inference
from rbee_queen.api.auth import require_model
from rbee_queen.api.body import json_body
from rbee_queen.api.event_stream import EventStreamResponse
from rbee_queen.errors import RbeeError
from rbee_queen.services import services
from rbee_queen.validation import IDENTIFIER, MODEL_REF, Fields
from rbee_queen.workers import failover
from rbee_queen.workers.routing import before_deadline
from rbee_wire import worker_events


async def create_task(request: Request) -> EventStreamResponse:
    f = Fields(await json_body(request))
    node = f.string("node", pattern=IDENTIFIER, max_len=64, required=False)
    model = f.string("model", pattern=MODEL_REF, max_len=512)
    prompt = f.prompt()
    params = inference.sampling(f, "tasks")
    device = inference.device(f)
    f.raise_if_any()
    assert model is not None
    require_model(request, model)  # the key's model allow-list
    where = services(request).catalog.placement(model, [node] if node else None, device)
    payload = {"job_id": inference.new_job_id(), "prompt": prompt, **params}
    svc = services(request)
    attempt = failover.FailoverStream(
        svc.router,
        svc.workers.relay,
        where,
        payload,
        key=request.state.principal.name,  # the queue's turns are per key
    )
    async with before_deadline():
        # The body is read: what comes next on `receive` is the client leaving.
        await attempt.open(gone=request.receive)
    return EventStreamResponse(attempt.stream(), on_error=error_event, release=attempt.close)


def error_event(exc: RbeeError) -> bytes:
    """A request that failed after its head had left: the worker's own `error`
    event, with the queen's code."""
    return worker_events.error(exc.code, exc.message, exc.details)


routes = [Route("/v2/tasks", create_task, methods=["POST"])]
