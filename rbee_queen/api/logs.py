"""GET /v2/logs: the tail of worker logs on a node, read through its helper."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from rbee_queen.errors import WorkerNotFound
from rbee_queen.nodes.inventory import get_node
from rbee_queen.services import services
from rbee_queen.store.tables import Worker
from rbee_queen.validation import IDENTIFIER, WORKER_ID, Fields, shown


async def logs(request: Request) -> JSONResponse:
    f = Fields(dict(request.query_params))
    node_name = f.string("node", pattern=IDENTIFIER, max_len=64, required=False)
    worker_id = f.string("worker_id", pattern=WORKER_ID, max_len=256, required=False)
    lines_text = f.string("lines", max_len=4, required=False, default="100") or "100"
    if not lines_text.isdigit() or not 1 <= int(lines_text) <= 1000:
        f.fail("lines", "range", "lines must be between 1 and 1000")
    if node_name is None and worker_id is None:
        f.fail("node", "required", "give node or worker_id")
    f.raise_if_any()
    query = Worker.select().order_by(Worker.started_at)
    if worker_id is not None:
        query = query.where(Worker.worker_id == worker_id)
    if node_name is not None:
        query = query.where(Worker.node == get_node(node_name).name)
    rows = list(query)
    if worker_id is not None and not rows:
        raise WorkerNotFound(f"no worker {shown(worker_id)}")
    inventory = services(request).inventory
    out: list[dict[str, object]] = []
    for row in rows[-10:]:  # the most recent workers of the node
        session = await inventory.session_for(row.node)
        tail = await session.ops.log_tail(
            worker_id=row.worker_id, run_dir=session.run_dir, lines=int(lines_text)
        )
        out.extend({"worker_id": row.worker_id, "line": line} for line in tail["lines"])
    return JSONResponse({"lines": [entry["line"] for entry in out], "entries": out})


routes = [Route("/v2/logs", logs, methods=["GET"])]
