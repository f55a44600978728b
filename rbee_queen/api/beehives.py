"""/v2/registry/beehives: the node inventory."""

from __future__ import annotations

import contextlib

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from rbee_queen.api.auth import principal_of
from rbee_queen.api.body import json_body
from rbee_queen.errors import NodeHeldElsewhere
from rbee_queen.nodes.install import InstallOptions
from rbee_queen.nodes.inventory import (
    MODEL_SOURCES,
    WORKER_ACCESS,
    NodeSpec,
    get_node,
    memory_limit_mib,
    node_json,
    parse_many,
    setting,
)
from rbee_queen.services import Services, services
from rbee_queen.store.tables import Node
from rbee_queen.validation import HOSTNAME, IDENTIFIER, SSH_USER, Fields


async def add(request: Request) -> JSONResponse:
    spec = NodeSpec.parse(await json_body(request))  # before anything connects or is written
    inventory = services(request).inventory
    node = await inventory.add(spec)
    services(request).audit.record("node.added", node=spec.name, by=principal_of(request).name)
    await take_lease(services(request), node.name)
    preflight = inventory.last_preflight.pop(node.name, [])
    return JSONResponse({"node": node_json(node), "preflight": preflight}, status_code=201)


async def import_nodes(request: Request) -> JSONResponse:
    specs = parse_many(await json_body(request))
    svc = services(request)
    answer = await svc.inventory.import_many(specs)
    for node in answer["added"]:
        svc.inventory.last_preflight.pop(node["node_name"], None)
        svc.audit.record("node.added", node=node["node_name"], by=principal_of(request).name)
        await take_lease(svc, node["node_name"])
    return JSONResponse(answer)


async def take_lease(svc: Services, node: str) -> None:
    """The queen a node is added through drives it, unless another queen on the
    same database took its lease first (see nodes/lease.py)."""
    with contextlib.suppress(NodeHeldElsewhere):
        await svc.leases.ensure(node)


async def update(request: Request) -> JSONResponse:
    f = Fields(await json_body(request))
    name = f.string("node_name", pattern=IDENTIFIER, max_len=64)
    changes = {
        "ssh_host": f.string("ssh_host", pattern=HOSTNAME, max_len=253, required=False),
        "ssh_port": f.integer("ssh_port", lo=1, hi=65535),
        "ssh_user": f.string("ssh_user", pattern=SSH_USER, max_len=64, required=False),
        "ssh_key_path": f.string("ssh_key_path", max_len=4096, required=False),
        "install_path": f.string("install_path", max_len=4096, required=False),
        "worker_python": f.string("worker_python", max_len=4096, required=False),
    }
    accept = f.boolean("accept_new_host_key")
    access = setting(f, "worker_access", WORKER_ACCESS)
    source = setting(f, "model_source", MODEL_SOURCES)
    memory = memory_limit_mib(f, "worker_memory_limit_mib")
    f.raise_if_any()
    assert name is not None
    svc = services(request)
    node, fingerprint = await svc.inventory.update(name, changes, accept_new_host_key=accept)
    if access is not None:  # applies to workers started from now on
        node.worker_access = access
        node.save()
    if source is not None:  # applies to downloads started from now on
        node.model_source = source
        node.save()
    if memory is not None:  # applies to workers started from now on
        node.worker_memory_limit_mib = memory
        node.save()
    svc.audit.record(
        "node.updated", node=name, by=principal_of(request).name, host_key_replaced=accept
    )
    return JSONResponse({"node": node_json(node), "accepted_host_key": fingerprint})


async def install(request: Request) -> JSONResponse:
    """Build the node's worker venv; long (pip), so the keeper waits with a long timeout."""
    f = Fields(await json_body(request))
    name = f.string("node_name", pattern=IDENTIFIER, max_len=64)
    python = f.string("python", max_len=4096, required=False)
    index_url = f.string("index_url", max_len=4096, required=False)
    options = InstallOptions(
        python=python or "",
        system_site_packages=bool(f.boolean("system_site_packages")),
        no_deps=bool(f.boolean("no_deps")),
        index_url=index_url or "",
    )
    f.raise_if_any()
    assert name is not None
    svc = services(request)
    answer = await svc.installer.install(name, options)
    if answer["changed"]:
        svc.audit.record(
            "node.installed",
            node=name,
            by=principal_of(request).name,
            worker_python=answer["worker_python"],
        )
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
    stopped = await svc.workers.stopper.stop_all(node_name=name)
    await svc.pool.drop(name)
    node.delete_instance(recursive=True)
    svc.audit.record("node.removed", node=name, by=principal_of(request).name)
    return JSONResponse({"removed": name, "workers_stopped": stopped})


routes = [
    Route("/v2/registry/beehives/add", add, methods=["POST"]),
    Route("/v2/registry/beehives/import", import_nodes, methods=["POST"]),
    Route("/v2/registry/beehives/install", install, methods=["POST"]),
    Route("/v2/registry/beehives/list", list_nodes, methods=["GET"]),
    Route("/v2/registry/beehives/remove", remove, methods=["POST"]),
    Route("/v2/registry/beehives/update", update, methods=["POST"]),
]
