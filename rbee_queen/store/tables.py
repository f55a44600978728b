"""The database's tables (peewee models): the node inventory, the worker
registry, worker events, the model catalog and the models on each node.

No database is named here: `store.db.open_database` binds these tables to the
queen's database when it opens it, so nothing module-level holds a connection.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from peewee import (
    SQL,
    BigIntegerField,
    CharField,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)


def utcnow() -> datetime:
    return datetime.now(UTC)


class JsonField(TextField):
    def db_value(self, value: Any) -> str:
        return json.dumps(value)

    def python_value(self, value: Any) -> Any:
        return json.loads(value) if value is not None else None


class UtcDateTimeField(DateTimeField):
    """A UTC time, read back with its zone on both backends: SQLite keeps the
    offset in its text; PostgreSQL's TIMESTAMP returns it bare (the queen's
    sessions run in UTC, store/postgres.py)."""

    def python_value(self, value: Any) -> Any:
        value = super().python_value(value)
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class BaseTable(Model):
    pass


class Node(BaseTable):
    name = CharField(primary_key=True, max_length=64)
    ssh_host = CharField(max_length=253)
    ssh_port = IntegerField(default=22)
    ssh_user = CharField(max_length=64)
    ssh_key_path = TextField()
    install_path = TextField()
    worker_python = TextField(null=True)
    model_source = CharField(max_length=8, default="queen")  # "queen" | "hub"; m004
    worker_access = CharField(max_length=16, default="ssh")  # "ssh" | "direct"; m005
    # Its workers' RAM bound in MiB (0: the queen's setting; -1: none); m009
    worker_memory_limit_mib = IntegerField(default=0, constraints=[SQL("DEFAULT 0")])
    status = CharField(default="unknown")
    last_connected = UtcDateTimeField(null=True)
    last_error = TextField(null=True)
    backends = JsonField(default=list)
    devices = JsonField(default=dict)
    created_at = UtcDateTimeField(default=utcnow)

    class Meta:
        table_name = "nodes"


class Worker(BaseTable):
    worker_id = CharField(primary_key=True, max_length=256)
    node = ForeignKeyField(Node, backref="workers", on_delete="CASCADE", column_name="node")
    model_ref = CharField(max_length=512)
    backend = CharField(default="torch")
    device = CharField(default="cpu")
    state = CharField()
    pid = IntegerField(null=True)
    port = IntegerField(null=True)
    last_error = TextField(null=True)
    started_at = UtcDateTimeField(default=utcnow)
    updated_at = UtcDateTimeField(default=utcnow)
    # What a CUDA worker reported holding once loaded, and on which GPU model;
    # the next start's VRAM check uses it instead of the estimate. m007
    vram_bytes = BigIntegerField(null=True)  # past 2**31: BIGINT on PostgreSQL
    gpu_name = CharField(max_length=128, null=True)
    # The RAM bound it was given (0: none) and which setting chose it; m009
    memory_limit_bytes = BigIntegerField(null=True)
    memory_limit_source = CharField(max_length=16, null=True)

    class Meta:
        table_name = "workers"


class WorkerEvent(BaseTable):
    worker_id = CharField(max_length=256, index=True)
    from_state = CharField(null=True)
    to_state = CharField()
    reason = TextField(default="")
    at = UtcDateTimeField(default=utcnow)

    class Meta:
        table_name = "worker_events"


class ModelEntry(BaseTable):
    """A model the OpenAI-compatible API serves by name, and the nodes it may run on."""

    name = CharField(primary_key=True, max_length=64)
    model_ref = CharField(max_length=512)
    nodes = JsonField(default=list)  # node names, in order of preference
    slots = IntegerField(default=1)  # requests one worker serves at once
    device = CharField(max_length=16, default="cpu")  # cpu | cuda | cuda:N; m006
    # its workers' RAM bound (0: unset); m009
    memory_limit_mib = IntegerField(default=0, constraints=[SQL("DEFAULT 0")])
    created_at = UtcDateTimeField(default=utcnow)

    class Meta:
        table_name = "models"


class NodeModel(BaseTable):
    """A model folder on one node, as the queen last wrote or verified it.

    A row exists only for a folder that was renamed into place complete, every
    file checked by size and SHA-256; `status` turns to `missing` or `modified`
    when a check against the node's disk disagrees.
    """

    node = ForeignKeyField(Node, backref="models", on_delete="CASCADE", column_name="node")
    ref = CharField(max_length=512)
    provider = CharField(max_length=16)
    local_path = TextField()
    size_bytes = BigIntegerField(default=0)  # past 2**31: BIGINT on PostgreSQL
    files = JsonField(default=list)  # [{"name", "size", "sha256"}]
    status = CharField(default="complete")
    downloaded_at = UtcDateTimeField(default=utcnow)
    last_used = UtcDateTimeField(null=True)

    class Meta:
        table_name = "node_models"
        indexes = ((("node", "ref"), True),)


class NodeLease(BaseTable):
    """Which queen drives a node's sessions and workers, until when (epoch
    milliseconds on the holder's clock); renewed by the holder, taken over by
    another queen only once it has lapsed (nodes/lease.py). m008"""

    node = ForeignKeyField(
        Node, primary_key=True, on_delete="CASCADE", column_name="node", backref="lease"
    )
    holder = CharField(max_length=128)
    expires_at = BigIntegerField()

    class Meta:
        table_name = "node_leases"


class WorkerToken(BaseTable):
    """A worker's bearer token, so whichever queen takes its node over can call
    it (the worker deletes its own copy once read). m008"""

    worker_id = CharField(primary_key=True, max_length=256)
    token = CharField(max_length=128)

    class Meta:
        table_name = "worker_tokens"


class RaisedMemoryBound(BaseTable):
    """The RAM bound the next worker of a model on a node gets after the node's
    OOM killer ended one: kept, so a restarted queen never starts it again at
    the size it died at. m009"""

    node = ForeignKeyField(Node, on_delete="CASCADE", column_name="node")
    model_ref = CharField(max_length=512)
    limit_bytes = BigIntegerField()
    raised_at = UtcDateTimeField(default=utcnow)

    class Meta:
        table_name = "raised_memory_bounds"
        indexes = ((("node", "model_ref"), True),)


ALL_TABLES = [
    Node,
    Worker,
    WorkerEvent,
    ModelEntry,
    NodeModel,
    NodeLease,
    WorkerToken,
    RaisedMemoryBound,
]
