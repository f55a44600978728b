"""/v2/nodes/preflight: add-node's named checks, run now on nodes already added.

`rbee-keeper doctor` asks this: the checks add-node runs (key through disk),
each node's as a report with the failed check and what to do, so one node's
failure sits next to the others' results. Read-only: nothing is saved.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from rbee_queen.nodes.inventory import get_node, target_of
from rbee_queen.nodes.preflight import preflight_report
from rbee_queen.services import services
from rbee_queen.store.tables import Node
from rbee_queen.validation import IDENTIFIER, Fields

# Beyond the connect: the preflight's own ping (15 s) and probe (30 s) at most.
CHECKS_TIMEOUT_S = 45.0


async def preflight(request: Request) -> JSONResponse:
    f = Fields(dict(request.query_params))
    name = f.string("node", pattern=IDENTIFIER, max_len=64, required=False)
    f.raise_if_any()
    nodes = [get_node(name)] if name else list(Node.select().order_by(Node.name))
    svc = services(request)
    timeout = svc.config.ssh_connect_timeout_s + CHECKS_TIMEOUT_S
    reports = await asyncio.gather(
        *(preflight_report(svc.pool, target_of(node), timeout) for node in nodes)
    )
    return JSONResponse({"nodes": list(reports)})


routes = [Route("/v2/nodes/preflight", preflight, methods=["GET"])]
