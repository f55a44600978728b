"""`setup export`: the queen's inventory as the TOML file `setup import` reads.

Nodes with their settings (`[nodes.NAME]`) and the model catalog
(`[models.NAME]`), so a user can keep the fleet's description in git and
rebuild a queen from it. No secrets: a node's SSH key is named by its path,
never its content, and no token is written.
"""

from __future__ import annotations

import json
from typing import Any

from rbee_keeper.inventory import KEYS, MODEL_KEYS

HEADER = "# rbee inventory, written by `rbee-keeper setup export`; read by `setup import`.\n"


def toml_value(value: Any) -> str:
    """A TOML value for a string, an integer or a list of strings. JSON's string
    escapes are TOML's basic-string escapes, so json.dumps writes both."""
    if isinstance(value, bool) or not isinstance(value, str | int | list):
        raise TypeError(f"cannot write {type(value).__name__} to an inventory")
    return json.dumps(value, ensure_ascii=False)


def table(header: str, fields: dict[str, Any]) -> str:
    lines = [f"[{header}]"]
    lines += [f"{key} = {toml_value(value)}" for key, value in fields.items() if value is not None]
    return "\n".join(lines) + "\n"


def export_inventory(nodes: list[dict[str, Any]], models: list[dict[str, Any]]) -> str:
    """The file's text from the queen's node and catalog listings, sorted by name."""
    parts = [HEADER]
    for node in sorted(nodes, key=lambda n: n["node_name"]):
        fields = {key: node.get(field) for key, (field, _) in KEYS.items()}
        parts.append(table(f"nodes.{toml_key(node['node_name'])}", fields))
    for model in sorted(models, key=lambda m: m["name"]):
        fields = {key: model.get(field) for key, (field, _) in MODEL_KEYS.items()}
        parts.append(table(f"models.{toml_key(model['name'])}", fields))
    return "\n".join(parts)


def toml_key(name: str) -> str:
    """Node names are bare keys; catalog names may hold a dot, so they are quoted."""
    return name if name.replace("-", "").replace("_", "").isalnum() else json.dumps(name)
