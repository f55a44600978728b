"""The node inventory: add (with a real connection and probe first), list, remove."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from rbee_queen.errors import NodeAlreadyExists, NodeNotFound, RbeeError, SshKeyNotFound
from rbee_queen.fleet.pool import SessionPool
from rbee_queen.fleet.session import NodeTarget
from rbee_queen.store.models import Node, utcnow
from rbee_queen.validation import HOSTNAME, IDENTIFIER, SSH_USER, Fields


@dataclass(frozen=True)
class NodeSpec:
    name: str
    host: str
    port: int
    user: str
    key_path: str
    install_path: str
    worker_python: str | None
    accept_new_host_key: bool

    @classmethod
    def parse(cls, body: Any) -> NodeSpec:
        f = Fields(body)
        name = f.string("node_name", pattern=IDENTIFIER, max_len=64)
        host = f.string("ssh_host", pattern=HOSTNAME, max_len=253)
        port = f.integer("ssh_port", lo=1, hi=65535, default=22)
        user = f.string("ssh_user", pattern=SSH_USER, max_len=64)
        key = f.string("ssh_key_path", max_len=4096)
        install = f.string("install_path", max_len=4096, required=False, default="~/.rbee")
        python = f.string("worker_python", max_len=4096, required=False)
        accept = f.boolean("accept_new_host_key")
        f.raise_if_any()
        assert name and host and user and key and install and port
        return cls(name, host, port, user, os.path.expanduser(key), install, python, accept)


def target_of(node: Node) -> NodeTarget:
    return NodeTarget(
        name=node.name,
        host=node.ssh_host,
        port=node.ssh_port,
        user=node.ssh_user,
        key_path=node.ssh_key_path,
        install_path=node.install_path,
    )


def node_json(node: Node) -> dict[str, Any]:
    return {
        "node_name": node.name,
        "ssh_host": node.ssh_host,
        "ssh_port": node.ssh_port,
        "ssh_user": node.ssh_user,
        "ssh_key_path": node.ssh_key_path,
        "install_path": node.install_path,
        "worker_python": node.worker_python,
        "status": node.status,
        "last_connected": node.last_connected.isoformat() if node.last_connected else None,
        "last_error": node.last_error,
        "backends": node.backends or [],
        "devices": node.devices or {},
    }


def get_node(name: str) -> Node:
    node = Node.get_or_none(Node.name == name)
    if node is None:
        raise NodeNotFound(f"no node named {name!r}")
    return node


class NodeInventory:
    def __init__(self, pool: SessionPool) -> None:
        self.pool = pool

    async def add(self, spec: NodeSpec) -> Node:
        if not os.path.isfile(spec.key_path):
            raise SshKeyNotFound(f"SSH key not found: {spec.key_path}")
        if Node.get_or_none(Node.name == spec.name) is not None:
            raise NodeAlreadyExists(
                f"node {spec.name!r} already exists; use update-node or remove-node first"
            )
        target = NodeTarget(
            spec.name, spec.host, spec.port, spec.user, spec.key_path, spec.install_path
        )
        # Connect and probe before writing anything: a node that cannot be
        # reached or trusted never lands half-configured in the inventory.
        session = await self.pool.get(target, accept_new_host_key=spec.accept_new_host_key)
        try:
            probe = await session.call("probe", install_path=session.install_dir)
        except RbeeError:
            await self.pool.drop(spec.name)
            raise
        return Node.create(
            name=spec.name,
            ssh_host=spec.host,
            ssh_port=spec.port,
            ssh_user=spec.user,
            ssh_key_path=spec.key_path,
            install_path=spec.install_path,
            worker_python=spec.worker_python,
            status="reachable",
            last_connected=utcnow(),
            backends=probe["backends"],
            devices=probe["devices"],
        )

    def mark(self, node: Node, *, error: RbeeError | None) -> None:
        node.status = "unreachable" if error else "reachable"
        node.last_error = error.message if error else None
        if error is None:
            node.last_connected = utcnow()
        node.save()
