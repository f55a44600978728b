"""The node inventory: add (with a real connection and probe first), list, remove."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

from peewee import IntegrityError

from rbee_queen.errors import (
    InvalidRequest,
    NodeAlreadyExists,
    NodeNotFound,
    RbeeError,
    SshKeyNotFound,
)
from rbee_queen.fleet import ssh_config
from rbee_queen.fleet.key_files import check_is_private_key
from rbee_queen.fleet.pool import SessionPool
from rbee_queen.fleet.session import NodeSession, NodeTarget, accept_changed_host_key
from rbee_queen.nodes.preflight import run_preflight
from rbee_queen.store.tables import Node, utcnow
from rbee_queen.validation import HOSTNAME, IDENTIFIER, SSH_USER, Fields, shown
from rbee_wire.helper_ops import ProbeResult

WORKER_ACCESS = ("ssh", "direct")  # how the queen reaches the node's workers
# A worker's RAM bound in MiB, as the node and catalog settings take it: 0 leaves
# it to the next level (model, node, queen, estimate), -1 means no bound.
MEMORY_LIMIT_MIB = (-1, 16 * 1024 * 1024)
MODEL_SOURCES = ("queen", "hub")  # where the node's hf: downloads run


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
    worker_access: str = "ssh"  # "direct": workers listen on the node's address too
    model_source: str = "queen"  # "hub": the node downloads hf: models itself
    worker_memory_limit_mib: int = 0  # its workers' RAM bound (0: the queen's)

    @classmethod
    def parse(cls, body: Any) -> NodeSpec:
        """Validate a request; a host that is a `~/.ssh/config` alias is resolved
        to its HostName, and its Port, User and IdentityFile fill what the
        request left out (what the request gives wins)."""
        f = Fields(body)
        name = f.string("node_name", pattern=IDENTIFIER, max_len=64)
        host = f.string("ssh_host", pattern=HOSTNAME, max_len=253)
        port = f.integer("ssh_port", lo=1, hi=65535)
        user = f.string("ssh_user", pattern=SSH_USER, max_len=64, required=False)
        key = f.string("ssh_key_path", max_len=4096, required=False)
        install = f.string("install_path", max_len=4096, required=False, default="~/.rbee")
        python = f.string("worker_python", max_len=4096, required=False)
        accept = f.boolean("accept_new_host_key")
        access = _one_of(f, "worker_access", WORKER_ACCESS)
        source = _one_of(f, "model_source", MODEL_SOURCES)
        memory = memory_limit_mib(f, "worker_memory_limit_mib") or 0
        alias = ssh_config.resolve(host) if host else None
        if alias is not None:
            if not HOSTNAME.match(alias.host):
                f.fail("ssh_host", "pattern", "the HostName in ~/.ssh/config is not allowed")
            host = alias.host
            port = port or alias.port
            user = user or (alias.user if alias.user and SSH_USER.match(alias.user) else None)
            key = key or alias.identity_file
        if user is None and "ssh_user" not in {p["field"] for p in f.problems}:
            f.fail("ssh_user", "required", "ssh_user is required (or set in ~/.ssh/config)")
        f.raise_if_any()
        assert name and host and user and install
        # No key file (and none in ~/.ssh/config): authenticate with the ssh-agent.
        key = os.path.expanduser(key) if key else ""
        return cls(
            name, host, port or 22, user, key, install, python, accept, access, source, memory
        )


def _exists(name: str) -> NodeAlreadyExists:
    return NodeAlreadyExists(
        f"node {shown(name)} already exists; use update-node or remove-node first", node=name
    )


def _save(spec: NodeSpec, probe: ProbeResult) -> Node:
    return Node.create(
        name=spec.name,
        ssh_host=spec.host,
        ssh_port=spec.port,
        ssh_user=spec.user,
        ssh_key_path=spec.key_path,
        install_path=spec.install_path,
        worker_python=spec.worker_python,
        worker_access=spec.worker_access,
        model_source=spec.model_source,
        worker_memory_limit_mib=spec.worker_memory_limit_mib,
        status="reachable",
        last_connected=utcnow(),
        backends=probe["backends"],
        devices=probe["devices"],
    )


def _one_of(f: Fields, field: str, allowed: tuple[str, ...]) -> str:
    """An optional setting that takes one of `allowed`; the first is the default."""
    return setting(f, field, allowed) or allowed[0]


def setting(f: Fields, field: str, allowed: tuple[str, ...]) -> str | None:
    """One of `allowed`, or None when the request leaves the field out (an
    update then keeps the node's value); a bad value is reported with the
    request's other bad fields."""
    value = f.string(field, max_len=16, required=False)
    if value is not None and value not in allowed:
        f.fail(field, "enum", f"{field} must be {' or '.join(allowed)}")
        return None
    return value


def memory_limit_mib(f: Fields, field: str) -> int | None:
    """A RAM bound setting in MiB; None when the request leaves it out."""
    return f.integer(field, lo=MEMORY_LIMIT_MIB[0], hi=MEMORY_LIMIT_MIB[1])


def parse_many(body: Any) -> list[NodeSpec]:
    """`{"nodes": [NODE, ...]}`; every bad field of every node reported at once,
    named `nodes[i].field`."""
    nodes = body.get("nodes") if isinstance(body, dict) else None
    if not isinstance(nodes, list) or not 1 <= len(nodes) <= 1000:
        raise InvalidRequest("nodes must be a list of 1 to 1000 nodes")
    specs, problems = [], []
    for i, item in enumerate(nodes):
        if not isinstance(item, dict):
            problems.append(
                {"field": f"nodes[{i}]", "constraint": "type", "message": "must be an object"}
            )
            continue
        try:
            specs.append(NodeSpec.parse(item))
        except InvalidRequest as exc:
            for problem in exc.details.get("fields") or [{"field": "", "message": exc.message}]:
                problems.append({**problem, "field": f"nodes[{i}].{problem['field']}"})
    names = [s.name for s in specs]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(
            {"field": "nodes", "constraint": "unique", "message": f"{shown(name)} appears twice"}
        )
    if problems:
        raise InvalidRequest(
            f"invalid fields: {', '.join(p['field'] for p in problems)}", fields=problems
        )
    return specs


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
        "worker_access": node.worker_access,
        "model_source": node.model_source,
        "worker_memory_limit_mib": node.worker_memory_limit_mib,
        "status": node.status,
        "last_connected": node.last_connected.isoformat() if node.last_connected else None,
        "last_error": node.last_error,
        "backends": node.backends or [],
        "devices": node.devices or {},
    }


def get_node(name: str) -> Node:
    node = Node.get_or_none(Node.name == name)
    if node is None:
        raise NodeNotFound(f"no node named {shown(name)}")
    return node


class NodeInventory:
    def __init__(self, pool: SessionPool) -> None:
        self.pool = pool
        # The checks of each node's last add, for the add's answer.
        self.last_preflight: dict[str, list[dict[str, Any]]] = {}
        # Names whose add is connecting now: a second add of one waits for none.
        self._adding: set[str] = set()

    async def add(self, spec: NodeSpec) -> Node:
        if spec.key_path and not os.path.isfile(spec.key_path):
            raise SshKeyNotFound(f"SSH key not found: {shown(spec.key_path)}", field="ssh_key_path")
        if spec.key_path:
            check_is_private_key(spec.key_path)
        if spec.name in self._adding or Node.get_or_none(Node.name == spec.name) is not None:
            raise _exists(spec.name)
        self._adding.add(spec.name)
        try:
            return await self._connect_and_save(spec)
        finally:
            self._adding.discard(spec.name)

    async def _connect_and_save(self, spec: NodeSpec) -> Node:
        target = NodeTarget(
            spec.name, spec.host, spec.port, spec.user, spec.key_path, spec.install_path
        )
        # Connect and probe before writing anything: a node that cannot be
        # reached, trusted or used never lands half-configured in the inventory.
        try:
            checked = await run_preflight(
                self.pool, target, accept_new_host_key=spec.accept_new_host_key
            )
        except RbeeError:
            await self.pool.drop(spec.name)
            raise
        probe = checked.probe
        self.last_preflight[spec.name] = [c.to_json() for c in checked.checks]
        try:
            return _save(spec, probe)
        except IntegrityError:  # another queen process wrote the name meanwhile
            raise _exists(spec.name) from None

    async def import_many(self, specs: list[NodeSpec]) -> dict[str, Any]:
        """Add every node at once; a name already in the inventory is reported
        under `existing` and left as it is, a node that fails under `failed`."""
        existing = [s.name for s in specs if Node.get_or_none(Node.name == s.name) is not None]
        todo = [s for s in specs if s.name not in existing]

        async def add_one(spec: NodeSpec) -> Node:
            async with self.pool.slot(spec.name):
                return await self.add(spec)

        results = await asyncio.gather(*(add_one(s) for s in todo), return_exceptions=True)
        added, failed = [], {}
        for spec, result in zip(todo, results, strict=True):
            if isinstance(result, RbeeError):
                failed[spec.name] = {"code": result.code, "message": result.message}
            elif isinstance(result, BaseException):
                raise result
            else:
                added.append(node_json(result))
        return {"added": added, "existing": existing, "failed": failed}

    async def update(
        self, name: str, changes: dict[str, Any], *, accept_new_host_key: bool
    ) -> tuple[Node, str | None]:
        """Change a node's connection settings and/or accept its new host key,
        then connect and probe again; nothing is saved unless that succeeds."""
        node = get_node(name)
        target = NodeTarget(
            name,
            changes.get("ssh_host") or node.ssh_host,
            changes.get("ssh_port") or node.ssh_port,
            changes.get("ssh_user") or node.ssh_user,
            os.path.expanduser(changes.get("ssh_key_path") or node.ssh_key_path),
            changes.get("install_path") or node.install_path,
        )
        await self.pool.drop(name)
        fingerprint = None
        if accept_new_host_key:
            fingerprint = await accept_changed_host_key(
                target, self.pool.host_keys, self.pool.connect_timeout
            )
        checked = await run_preflight(self.pool, target, accept_new_host_key=False)
        node.ssh_host, node.ssh_port, node.ssh_user = target.host, target.port, target.user
        node.ssh_key_path, node.install_path = target.key_path, target.install_path
        if changes.get("worker_python"):
            node.worker_python = changes["worker_python"]
        node.backends = checked.probe["backends"]
        node.devices = checked.probe["devices"]
        self.mark(node, error=None)
        return node, fingerprint

    async def session_for(self, node: Node) -> NodeSession:
        """The node's session (connecting if need be); its row follows: an error
        marks it unreachable, success reachable again."""
        try:
            session = await self.pool.get(target_of(node))
        except RbeeError as exc:
            self.mark(node, error=exc)
            raise
        if node.status != "reachable":
            self.mark(node, error=None)
        return session

    def mark(self, node: Node, *, error: RbeeError | None) -> None:
        node.status = "unreachable" if error else "reachable"
        node.last_error = error.message if error else None
        if error is None:
            node.last_connected = utcnow()
        node.save()
