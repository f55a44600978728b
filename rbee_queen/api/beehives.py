"""/v2/registry/beehives: the node inventory."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from rbee_queen.api.auth import principal_of
from rbee_queen.api.body import json_body
from rbee_queen.orchestration.install import InstallOptions
from rbee_queen.orchestration.nodes import NodeSpec, get_node, node_json, parse_many
from rbee_queen.services import services
from rbee_queen.store.models import Node
from rbee_queen.validation import HOSTNAME, IDENTIFIER, SSH_USER, Fields

WORKER_ACCESS = ("ssh", "direct")
MODEL_SOURCES = ("queen", "hub")


async def add(request: Request) -> JSONResponse:
    body = await json_body(request)
    access = worker_access(body)  # checked before anything connects or is written
    source = model_source(body)
    spec = NodeSpec.parse(body)
    inventory = services(request).inventory
    node = await inventory.add(spec)
    if access is not None:
        node.worker_access = access
        node.save()
    if source is not None:
        node.model_source = source
        node.save()
    services(request).audit.record("node.added", node=spec.name, by=principal_of(request).name)
    preflight = inventory.last_preflight.pop(node.name, [])
    return JSONResponse({"node": with_access(node), "preflight": preflight}, status_code=201)


async def import_nodes(request: Request) -> JSONResponse:
    specs = parse_many(await json_body(request))
    svc = services(request)
    answer = await svc.inventory.import_many(specs)
    for node in answer["added"]:
        svc.inventory.last_preflight.pop(node["node_name"], None)
        svc.audit.record("node.added", node=node["node_name"], by=principal_of(request).name)
    return JSONResponse(answer)


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
    access = worker_access(f.body, f)
    source = model_source(f.body, f)
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
    svc.audit.record(
        "node.updated", node=name, by=principal_of(request).name, host_key_replaced=accept
    )
    return JSONResponse({"node": with_access(node), "accepted_host_key": fingerprint})


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
    answer = [{**with_access(n), "latency_ms": health.health(n.name).latency_ms} for n in nodes]
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


def worker_access(body: Any, f: Fields | None = None) -> str | None:
    """`worker_access`: "ssh" (a port forward on the node's connection, the
    default) or "direct" (the worker's port on the node's address); None when
    the request leaves it out. Reported with the request's other bad fields."""
    fields = f or Fields(body)
    value = fields.string("worker_access", max_len=16, required=False)
    if value is not None and value not in WORKER_ACCESS:
        fields.fail("worker_access", "enum", "worker_access must be ssh or direct")
        value = None
    if f is None:
        fields.raise_if_any()
    return value


def with_access(node: Node) -> dict[str, Any]:
    return {
        **node_json(node),
        "worker_access": node.worker_access,
        "model_source": node.model_source,
    }


def model_source(body: Any, f: Fields | None = None) -> str | None:
    """`model_source`: where the node's hub downloads run, "queen" (there, then
    copied over SFTP; the default) or "hub" (on the node, which must reach the
    hub); None when the request leaves it out."""
    fields = f or Fields(body)
    value = fields.string("model_source", max_len=8, required=False)
    if value is not None and value not in MODEL_SOURCES:
        fields.fail("model_source", "enum", "model_source must be queen or hub")
        value = None
    if f is None:
        fields.raise_if_any()
    return value


routes = [
    Route("/v2/registry/beehives/add", add, methods=["POST"]),
    Route("/v2/registry/beehives/import", import_nodes, methods=["POST"]),
    Route("/v2/registry/beehives/install", install, methods=["POST"]),
    Route("/v2/registry/beehives/list", list_nodes, methods=["GET"]),
    Route("/v2/registry/beehives/remove", remove, methods=["POST"]),
    Route("/v2/registry/beehives/update", update, methods=["POST"]),
]
