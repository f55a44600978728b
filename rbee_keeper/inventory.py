"""Inventory files for `setup import`: TOML, one table per node.

    [defaults]                  # optional: applies to every node below
    ssh_user = "alice"
    ssh_key = "~/.ssh/id_ed25519"

    [nodes.gpu1]                # the table's name is the node's name
    ssh_host = "10.0.0.5"

`inventory.example.toml` at the repository root documents every key.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from rbee_queen.errors import InvalidRequest
from rbee_wire.error_text import shown

# key in the file -> field of the queen's add request, and its type
KEYS: dict[str, tuple[str, type]] = {
    "ssh_host": ("ssh_host", str),
    "ssh_port": ("ssh_port", int),
    "ssh_user": ("ssh_user", str),
    "ssh_key": ("ssh_key_path", str),
    "install_path": ("install_path", str),
    "worker_python": ("worker_python", str),
    "worker_access": ("worker_access", str),
    "model_source": ("model_source", str),
    "worker_memory_limit_mib": ("worker_memory_limit_mib", int),
}

# [models.NAME]: the model catalog (`models add`), written by `setup export` too
MODEL_KEYS: dict[str, tuple[str, type]] = {
    "model_ref": ("model_ref", str),
    "nodes": ("nodes", list),
    "slots": ("slots", int),
    "device": ("device", str),
    "memory_limit_mib": ("memory_limit_mib", int),
}


def load_inventory(path: Path) -> list[dict[str, Any]]:
    """The add requests the file describes, in file order."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise InvalidRequest(f"cannot read {path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"{path} is not valid TOML: {exc}") from exc
    except RecursionError:  # tomllib recurses once per nested array or table
        raise InvalidRequest(f"{path} nests arrays or tables too deeply") from None
    unknown = set(data) - {"defaults", "nodes", "models"}
    if unknown:
        raise InvalidRequest(f"{path}: unknown section {shown(sorted(unknown)[0])}")
    defaults = _fields(data.get("defaults", {}), f"{path} [defaults]")
    nodes = data.get("nodes")
    if not isinstance(nodes, dict) or not nodes:
        raise InvalidRequest(f"{path}: no [nodes.NAME] tables")
    requests = []
    for name, table in nodes.items():
        fields = {**defaults, **_fields(table, f"{path} [nodes.{shown(name, quote=False)}]")}
        if "ssh_key_path" in fields:
            fields["ssh_key_path"] = str(
                Path(os.path.expanduser(fields["ssh_key_path"])).absolute()
            )
        requests.append({"node_name": name, **fields})
    return requests


def load_catalog(path: Path) -> list[dict[str, Any]]:
    """The catalog entries of the file's [models.NAME] tables (read after
    load_inventory, which has checked the file), as `models add` bodies."""
    models = tomllib.loads(path.read_text()).get("models", {})
    if not isinstance(models, dict):
        raise InvalidRequest(f"{path}: [models] must hold [models.NAME] tables")
    bodies = []
    for name, table in models.items():
        fields = _fields(table, f"{path} [models.{shown(name, quote=False)}]", MODEL_KEYS)
        device = _device_fields(fields.pop("device", None))
        bodies.append({"name": name, **fields, **device})
    return bodies


def _device_fields(device: str | None) -> dict[str, Any]:
    """The add request's `backend` and `device` (an ordinal) for `cpu`, `cuda`, `cuda:N`."""
    if device is None:
        return {}
    backend, _, ordinal = device.partition(":")
    return {"backend": backend, **({"device": int(ordinal)} if ordinal.isdigit() else {})}


def _fields(table: Any, where: str, known: dict[str, tuple[str, type]] = KEYS) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise InvalidRequest(f"{where} must be a table")
    fields = {}
    for key, value in table.items():
        if key not in known:
            raise InvalidRequest(f"{where}: unknown key {shown(key)} (known: {', '.join(known)})")
        field, kind = known[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise InvalidRequest(f"{where}: {key} must be a {kind.__name__}")
        fields[field] = value
    return fields
