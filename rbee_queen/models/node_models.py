"""The per-node model catalog: which model folders each node holds, verified.

A reference names a model (`hf:Org/Repo[@revision]`); the catalog maps it, per
node, to a folder under `<install_path>/models/`. A row is written only after
the folder was renamed into place with every file checked, so a cut-off
download or copy never shows up as a model. `check` compares the rows with the
node's disk (sizes, no hashing) and marks a folder deleted by hand `missing`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rbee_queen.errors import InvalidRequest, ModelNotFound
from rbee_queen.fleet.session import NodeSession
from rbee_queen.store.tables import Node, NodeModel, utcnow
from rbee_queen.validation import shown

HF_REF = re.compile(
    r"^hf:(?P<org>[A-Za-z0-9][A-Za-z0-9._-]{0,95})/(?P<repo>[A-Za-z0-9][A-Za-z0-9._-]{0,95})"
    r"(?:@(?P<rev>[A-Za-z0-9][A-Za-z0-9._-]{0,63}))?$"
)


@dataclass(frozen=True)
class HubRef:
    org: str
    repo: str
    revision: str | None

    @property
    def repo_id(self) -> str:
        return f"{self.org}/{self.repo}"

    @property
    def ref(self) -> str:
        return f"hf:{self.repo_id}" + (f"@{self.revision}" if self.revision else "")

    @property
    def rel_path(self) -> str:
        """The folder under the node's model store."""
        tail = f"@{self.revision}" if self.revision else ""
        return f"hf/{self.org}/{self.repo}{tail}"


def parse_ref(ref: str) -> HubRef:
    match = HF_REF.match(ref)
    if match is None or ".." in ref:
        raise InvalidRequest(
            f"model reference {shown(ref)} is not supported here: use hf:Org/Repo[@revision]",
            fields=[{"field": "model", "constraint": "pattern", "message": "hf:Org/Repo"}],
        )
    return HubRef(match["org"], match["repo"], match["rev"])


def is_catalog_ref(ref: str) -> bool:
    return ref.startswith("hf:")


def find(node_name: str, ref: str) -> NodeModel | None:
    row: NodeModel | None = NodeModel.get_or_none(
        (NodeModel.node == node_name) & (NodeModel.ref == ref)
    )
    return row


def entries(node_name: str | None = None) -> list[NodeModel]:
    query = NodeModel.select().order_by(NodeModel.node, NodeModel.ref)
    if node_name is not None:
        query = query.where(NodeModel.node == node_name)
    return list(query)


def record(
    node: Node, ref: HubRef, provider: str, path: str, files: list[dict[str, Any]]
) -> NodeModel:
    """Write (or replace) the row of a folder that was just renamed into place."""
    size = sum(int(f["size"]) for f in files)
    row = find(node.name, ref.ref)
    if row is None:
        row = NodeModel(node=node, ref=ref.ref)
    row.provider = provider
    row.local_path = path
    row.size_bytes = size
    row.files = files
    row.status = "complete"
    row.downloaded_at = utcnow()
    row.save()
    return row


def local_path_for_worker(node_name: str, ref: str) -> str | None:
    """The folder a worker loads for a catalog reference; None for other references.

    Never fetches anything: a model not downloaded to this node is MODEL_NOT_FOUND,
    never a download of this or any other model behind the user's back.
    """
    if not is_catalog_ref(ref):
        return None
    hub_ref = parse_ref(ref)
    row = find(node_name, hub_ref.ref)
    if row is None or row.status != "complete":
        raise ModelNotFound(
            f"{ref} is not on node {node_name}; "
            f"run: rbee-keeper models download --node {node_name} {ref}"
        )
    row.last_used = utcnow()
    row.save()
    return str(row.local_path)


async def check(session: NodeSession, rows: list[NodeModel]) -> None:
    """Compare rows with the node's disk; mark what is gone or changed."""
    for row in rows:
        scan = await session.ops.model_scan(
            install_path=session.install_dir, rel=parse_ref(row.ref).rel_path
        )
        on_disk = {f["name"]: f["size"] for f in scan["files"]}
        expected = {f["name"]: f["size"] for f in row.files}
        if not scan["exists"]:
            status = "missing"
        elif any(on_disk.get(name) != size for name, size in expected.items()):
            status = "modified"
        else:
            status = "complete"
        if status != row.status:
            row.status = status
            row.save()


def entry_json(row: NodeModel) -> dict[str, Any]:
    return {
        "node": row.node_id,  # type: ignore[attr-defined]
        "ref": row.ref,
        "provider": row.provider,
        "local_path": row.local_path,
        "size_bytes": row.size_bytes,
        "files": list(row.files),
        "status": row.status,
        "downloaded_at": row.downloaded_at.isoformat() if row.downloaded_at else None,
        "last_used": row.last_used.isoformat() if row.last_used else None,
    }
