"""/v2/registry/beehives: the node inventory."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from rbee_queen.api.body import json_body
from rbee_queen.orchestration.nodes import NodeSpec, get_node, node_json
from rbee_queen.services import services
from rbee_queen.store.models import Node
from rbee_queen.validation import IDENTIFIER, Fields


async def add(request: Request) -> JSONResponse:
    spec = NodeSpec.parse(await json_body(request))
    node = await services(request).inventory.add(spec)
    return JSONResponse({"node": node_json(node)}, status_code=201)


async def list_nodes(request: Request) -> JSONResponse:
    nodes = Node.select().order_by(Node.name)
    return JSONResponse({"nodes": [node_json(n) for n in nodes]})


async def remove(request: Request) -> JSONResponse:
    f = Fields(await json_body(request))
    name = f.string("node_name", pattern=IDENTIFIER, max_len=64)
    f.raise_if_any()
    assert name is not None
    node = get_node(name)
    svc = services(request)
    stopped = await svc.workers.stop_all(node_name=name)
    await svc.pool.drop(name)
    node.delete_instance(recursive=True)
    return JSONResponse({"removed": name, "workers_stopped": stopped})


routes = [
    Route("/v2/registry/beehives/add", add, methods=["POST"]),
    Route("/v2/registry/beehives/list", list_nodes, methods=["GET"]),
    Route("/v2/registry/beehives/remove", remove, methods=["POST"]),
]
