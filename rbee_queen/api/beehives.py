"""/v2/registry/beehives: the node inventory."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from rbee_queen.api.auth import principal_of
from rbee_queen.api.body import json_body
from rbee_queen.orchestration.nodes import NodeSpec, get_node, node_json, parse_many
from rbee_queen.services import services
from rbee_queen.store.models import Node
from rbee_queen.validation import IDENTIFIER, Fields


async def add(request: Request) -> JSONResponse:
    spec = NodeSpec.parse(await json_body(request))
    inventory = services(request).inventory
    node = await inventory.add(spec)
    services(request).audit.record("node.added", node=spec.name, by=principal_of(request).name)
    preflight = inventory.last_preflight.pop(node.name, [])
    return JSONResponse({"node": node_json(node), "preflight": preflight}, status_code=201)


async def import_nodes(request: Request) -> JSONResponse:
    specs = parse_many(await json_body(request))
    svc = services(request)
    answer = await svc.inventory.import_many(specs)
    for node in answer["added"]:
        svc.inventory.last_preflight.pop(node["node_name"], None)
        svc.audit.record("node.added", node=node["node_name"], by=principal_of(request).name)
    return JSONResponse(answer)


async def list_nodes(request: Request) -> JSONResponse:
    nodes = Node.select().order_by(Node.name)
    health = services(request).health
    answer = [{**node_json(n), "latency_ms": health.health(n.name).latency_ms} for n in nodes]
    return JSONResponse({"nodes": answer})


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
    svc.audit.record("node.removed", node=name, by=principal_of(request).name)
    return JSONResponse({"removed": name, "workers_stopped": stopped})


routes = [
    Route("/v2/registry/beehives/add", add, methods=["POST"]),
    Route("/v2/registry/beehives/import", import_nodes, methods=["POST"]),
    Route("/v2/registry/beehives/list", list_nodes, methods=["GET"]),
    Route("/v2/registry/beehives/remove", remove, methods=["POST"]),
]
