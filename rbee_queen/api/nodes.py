"""/v2/nodes: live status of the fleet, probed now."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from rbee_queen.nodes.inventory import get_node
from rbee_queen.nodes.status import fleet_status
from rbee_queen.services import services
from rbee_queen.store.tables import Node
from rbee_queen.validation import IDENTIFIER, Fields


async def status(request: Request) -> JSONResponse:
    f = Fields(dict(request.query_params))
    name = f.string("node", pattern=IDENTIFIER, max_len=64, required=False)
    f.raise_if_any()
    nodes = [get_node(name)] if name else list(Node.select().order_by(Node.name))
    svc = services(request)
    timeout = svc.config.ssh_connect_timeout_s + 5.0
    reports = await fleet_status(svc.pool, svc.health, nodes, timeout)
    # notices: what the user must know about the queen itself (a restored database)
    return JSONResponse({"nodes": reports, "notices": svc.notices.current()})


routes = [Route("/v2/nodes/status", status, methods=["GET"])]
