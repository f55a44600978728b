"""The model catalog: names the OpenAI-compatible API serves, each with its model
reference, the nodes it may run on (in order of preference) and its slots."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from rbee_queen import deferred
from rbee_queen.errors import InvalidRequest, ModelAlreadyExists, ModelNotFound
from rbee_queen.nodes.inventory import get_node
from rbee_queen.store.tables import ModelEntry
from rbee_queen.validation import shown

T = TypeVar("T")
log = logging.getLogger("rbee.queen.catalog")


@dataclass(frozen=True)
class Placement:
    """Where a request may run: the model reference, the nodes allowed (in order
    of preference), the slots a new worker gets and the device it runs on."""

    model_ref: str
    nodes: list[str]
    slots: int
    device: str


class ModelCatalog:
    """The catalog's rows, with what requests look up kept in memory: every
    inference resolves its model here, and a query costs more than all the rest
    of its routing. `add`, `update` and `remove` forget what was remembered. An answer
    older than `max_age_s` (a change made through another queen on the same
    database) is read again a moment later (rbee_queen/deferred.py), once the request
    that found it old has gone on to its worker: that request, and only it,
    still gets the old answer, and no request waits for the database (a read
    was 0.1-0.2 ms on the path of every first token that came after a pause).
    One per queen, built by its services."""

    def __init__(self, max_age_s: float = 1.0) -> None:
        self._lookups: dict[tuple[str, str], tuple[Any, float]] = {}
        self._rereading: set[tuple[str, str]] = set()
        self.max_age_s = max_age_s

    def add(
        self,
        name: str,
        model_ref: str,
        nodes: list[str],
        slots: int,
        device: str = "cpu",
        *,
        memory_limit_mib: int = 0,
    ) -> ModelEntry:
        if ModelEntry.get_or_none(ModelEntry.name == name) is not None:
            raise ModelAlreadyExists(f"a model named {shown(name)} exists; remove it first")
        for node in nodes:
            get_node(node)  # NODE_NOT_FOUND before anything is written
        entry: ModelEntry = ModelEntry.create(
            name=name,
            model_ref=model_ref,
            nodes=nodes,
            slots=slots,
            device=device,
            memory_limit_mib=memory_limit_mib,
        )
        self._lookups.clear()
        return entry

    def update(self, name: str, changes: dict[str, Any]) -> ModelEntry:
        """Change the settings given (nodes, slots, device, memory_limit_mib) in
        one UPDATE. Workers already running keep what they started with; the
        next placement and the workers started after it see the new settings."""
        entry = get_model(name)
        for node in changes.get("nodes") or []:
            get_node(node)  # NODE_NOT_FOUND before anything is written
        for field, value in changes.items():
            setattr(entry, field, value)
        entry.save(only=[getattr(ModelEntry, field) for field in changes])
        self._lookups.clear()
        return entry

    def remove(self, name: str) -> None:
        get_model(name).delete_instance()
        self._lookups.clear()

    def placement(
        self, model: str, nodes: list[str] | None, device: str | None, node_field: str = "node"
    ) -> Placement:
        """A request's placement: `model` is a reference (`file:`/`hf:`, which needs
        `nodes`) or a catalog name (its nodes unless `nodes` narrows them); `device`
        from the request wins over the catalog's."""
        if model.startswith(("file:", "hf:")):
            if not nodes:
                raise InvalidRequest(
                    f"a model reference needs `{node_field}`; or add it to the catalog, "
                    "use its name",
                    fields=[
                        {
                            "field": node_field,
                            "constraint": "required",
                            "message": f"{node_field} is required",
                        }
                    ],
                )
            return Placement(model, nodes, self.slots_for(model), device or "cpu")
        ref, entry_nodes, slots, entry_device = self._remembered(
            "name", model, lambda: _placed(model)
        )
        return Placement(ref, nodes or list(entry_nodes), slots, device or entry_device)

    def slots_for(self, model_ref: str) -> int:
        """The slots configured for a model reference (1 when it is not in the catalog)."""

        def load() -> int:
            entry = ModelEntry.get_or_none(ModelEntry.model_ref == model_ref)
            return int(entry.slots) if entry is not None else 1

        return self._remembered("slots", model_ref, load)

    def _remembered(self, kind: str, key: str, load: Callable[[], T]) -> T:
        remembered = self._lookups.get((kind, key))
        if remembered is None:
            return self._read(kind, key, load)
        found: T = remembered[0]
        if time.monotonic() - remembered[1] > self.max_age_s:
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # no loop to do it later (a script, a test): now
                return self._read(kind, key, load)
            if (kind, key) not in self._rereading:
                self._rereading.add((kind, key))
                deferred.later(lambda: self._reread(kind, key, load))
        return found

    def _read(self, kind: str, key: str, load: Callable[[], T]) -> T:
        found = load()  # MODEL_NOT_FOUND (or a store error) is not remembered
        self._lookups[kind, key] = (found, time.monotonic())
        return found

    def _reread(self, kind: str, key: str, load: Callable[[], Any]) -> None:
        self._rereading.discard((kind, key))
        try:
            self._read(kind, key, load)
        except Exception as exc:  # removed elsewhere, or the store is out: ask again next time
            self._lookups.pop((kind, key), None)
            log.debug("catalog %s %s not read again: %s", kind, key, exc)


def _placed(name: str) -> tuple[str, tuple[str, ...], int, str]:
    entry = get_model(name)  # MODEL_NOT_FOUND is not remembered
    return entry.model_ref, tuple(entry.nodes), int(entry.slots), entry.device


def get_model(name: str) -> ModelEntry:
    entry = ModelEntry.get_or_none(ModelEntry.name == name)
    if entry is None:
        raise ModelNotFound(f"no model named {shown(name)}; GET /v1/models lists them")
    return entry


def list_models() -> list[ModelEntry]:
    return list(ModelEntry.select().order_by(ModelEntry.name))


def model_json(entry: ModelEntry) -> dict[str, Any]:
    return {
        "name": entry.name,
        "model_ref": entry.model_ref,
        "nodes": list(entry.nodes),
        "slots": entry.slots,
        "device": entry.device,
        "memory_limit_mib": entry.memory_limit_mib,  # 0: the node's or queen's setting
        "created_at": entry.created_at.isoformat(),
    }
