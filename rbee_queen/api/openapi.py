"""GET /openapi.json: the queen's API described as OpenAPI 3.1, written as data.

The request schemas state what the validators in `rbee_queen.validation`
enforce (patterns are taken from the same compiled expressions), so a client
generated from this document sends what the queen accepts. A test compares
the paths here with the routes the app registers, so the two cannot drift.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from rbee_queen import __version__
from rbee_queen.api.body import MAX_BODY_BYTES
from rbee_queen.api.models import MODEL_NAME
from rbee_queen.api.openapi_schemas import (
    BOOL,
    COMPONENTS,
    DEVICE,
    LOG_LINES,
    MESSAGE,
    MODEL,
    NAME,
    NODE_QUERY,
    NODE_SPEC,
    OPENAI_COMMON,
    PROMPT,
    SSE_OK,
    WORKER,
    Schema,
    int_range,
    obj,
    operation,
    query,
    ref,
    sampling,
    string,
)
from rbee_queen.nodes.inventory import MEMORY_LIMIT_MIB
from rbee_wire.limits import LIMITS

# What `add` sets and `update` changes (rbee_queen.api.models.model_settings).
MODEL_SETTINGS: dict[str, Schema] = {
    "nodes": {"type": "array", "items": NAME, "minItems": 1, "maxItems": 64},
    "slots": int_range(1, 64),
    "memory_limit_mib": int_range(*MEMORY_LIMIT_MIB),
    **DEVICE,
}

PATHS: Schema = {
    "/health": {"get": operation("Liveness and version", public=True)},
    "/openapi.json": {"get": operation("This document")},
    "/metrics": {
        "get": operation(
            "Prometheus metrics", content={"text/plain": {"schema": {"type": "string"}}}
        )
    },
    "/v2/events": {
        "get": operation("The fleet as a live SSE stream (a snapshot first)", content=SSE_OK)
    },
    "/v2/registry/beehives/add": {
        "post": operation("Add a node (admin)", body=ref("NodeSpec"), status=201)
    },
    "/v2/registry/beehives/import": {
        "post": operation(
            "Add several nodes at once (admin)",
            body=obj(
                {
                    "nodes": {
                        "type": "array",
                        "items": ref("NodeSpec"),
                        "minItems": 1,
                        "maxItems": 1000,
                    }
                },
                ("nodes",),
            ),
        )
    },
    "/v2/registry/beehives/install": {
        "post": operation(
            "Build the node's worker venv (admin)",
            body=obj(
                {
                    "node_name": NAME,
                    "python": string(),
                    "index_url": string(),
                    "system_site_packages": BOOL,
                    "no_deps": BOOL,
                },
                ("node_name",),
            ),
        )
    },
    "/v2/registry/beehives/list": {"get": operation("The node inventory")},
    "/v2/registry/beehives/remove": {
        "post": operation(
            "Remove a node and stop its workers (admin)",
            body=obj({"node_name": NAME}, ("node_name",)),
        )
    },
    "/v2/registry/beehives/update": {
        "post": operation(
            "Change a node's connection settings (admin)",
            body=obj(dict(NODE_SPEC["properties"]), ("node_name",)),
        )
    },
    "/v2/nodes/status": {"get": operation("Probe the fleet now", params=[NODE_QUERY])},
    "/v2/nodes/preflight": {"get": operation("add-node's checks, run now", params=[NODE_QUERY])},
    "/v2/workers/list": {
        "get": operation(
            "Workers (`all=1` includes stopped ones)",
            params=[query("all", {"type": "string", "enum": ["0", "1"]})],
        )
    },
    "/v2/workers/shutdown": {
        "post": operation(
            "Stop a worker (admin)",
            body=obj({"worker_id": WORKER}, ("worker_id",)),
        )
    },
    "/v2/workers/{worker_id}/events": {
        "get": operation(
            "A worker's state history",
            params=[{"name": "worker_id", "in": "path", "required": True, "schema": WORKER}],
        )
    },
    "/v2/tasks": {
        "post": operation(
            "Run one inference, streamed as SSE",
            body=obj(
                {"node": NAME, "model": MODEL, "prompt": PROMPT, **sampling("tasks"), **DEVICE},
                ("model", "prompt"),
            ),
            content=SSE_OK,
        )
    },
    "/v2/registry/models/add": {
        "post": operation(
            "Add a catalog model (admin)",
            body=obj(
                {
                    "name": string(MODEL_NAME.pattern, 64),
                    "model_ref": string(r"^(file:/|hf:)[A-Za-z0-9\-_/:.@]+$", 512),
                    **MODEL_SETTINGS,
                },
                ("name", "model_ref", "nodes"),
            ),
            status=201,
        )
    },
    "/v2/registry/models/list": {"get": operation("The model catalog")},
    "/v2/registry/models/update": {
        "post": operation(
            "Change a catalog model's settings, those given only (admin)",
            body={
                **obj({"name": string(MODEL_NAME.pattern, 64), **MODEL_SETTINGS}, ("name",)),
                "anyOf": [{"required": [field]} for field in MODEL_SETTINGS],
            },
        )
    },
    "/v2/registry/models/remove": {
        "post": operation(
            "Remove a catalog model (admin)",
            body=obj({"name": string(MODEL_NAME.pattern, 64)}, ("name",)),
        )
    },
    "/v2/models": {"get": operation("Model folders on the nodes", params=[NODE_QUERY])},
    "/v2/models/download": {
        "post": operation(
            "Download a model to a node (admin), progress as SSE",
            body=obj({"node": NAME, "model": MODEL, "allow_bin": BOOL}, ("node", "model")),
            content=SSE_OK,
        )
    },
    "/v2/models/copy": {
        "post": operation(
            "Copy a model between nodes (admin), progress as SSE",
            body=obj({"from": NAME, "to": NAME, "model": MODEL}, ("from", "to", "model")),
            content=SSE_OK,
        )
    },
    "/v2/models/remove": {
        "post": operation(
            "Delete a model folder on a node (admin)",
            body=obj({"node": NAME, "model": MODEL}, ("node", "model")),
        )
    },
    "/v2/logs": {
        "get": operation(
            "The tail of worker logs (give node or worker_id)",
            params=[NODE_QUERY, query("worker_id", WORKER), query("lines", LOG_LINES)],
        )
    },
    "/v2/admin/config": {"get": operation("The settings in force, each with its source (admin)")},
    "/v2/admin/reload": {
        "post": operation("Re-read the config file; apply what may change (admin)")
    },
    "/v2/keys/list": {"get": operation("Named keys (admin)")},
    "/v2/keys/add": {
        "post": operation(
            "Create a named key; its token is in this answer only (admin)",
            body=obj(
                {"name": NAME, "admin": BOOL, "models": {"type": "array", "items": MODEL}},
                ("name",),
            ),
            status=201,
        )
    },
    "/v2/keys/revoke": {
        "post": operation("Revoke a named key (admin)", body=obj({"name": NAME}, ("name",)))
    },
    "/v1/models": {"get": operation("OpenAI: catalog models", openai=True)},
    "/v1/completions": {
        "post": operation(
            "OpenAI: text completion",
            body=obj(
                {
                    "prompt": {
                        "oneOf": [
                            PROMPT,
                            {"type": "array", "items": PROMPT, "minItems": 1, "maxItems": 1},
                        ]
                    },
                    **OPENAI_COMMON,
                    **sampling("completions"),
                },
                ("model", "prompt"),
            ),
            openai=True,
        )
    },
    "/v1/chat/completions": {
        "post": operation(
            "OpenAI: chat completion",
            body=obj(
                {
                    "messages": {**LIMITS["messages"].schema(), "items": MESSAGE},
                    "max_completion_tokens": LIMITS["max_tokens"].schema(),
                    **OPENAI_COMMON,
                    **sampling("chat"),
                },
                ("model", "messages"),
            ),
            openai=True,
        )
    },
}

DOCUMENT: Schema = {
    "openapi": "3.1.0",
    "info": {
        "title": "rbee queen",
        "version": __version__,
        "description": (
            "Every route but /health needs `Authorization: Bearer <token>`; routes marked "
            "(admin) need an admin key. Every error but those of /v1 is the envelope "
            f"`Error`. Request bodies over {MAX_BODY_BYTES} bytes get 413."
        ),
    },
    "security": [{"bearer": []}],
    "paths": PATHS,
    "components": COMPONENTS,
}


async def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(DOCUMENT)


routes = [Route("/openapi.json", openapi_json, methods=["GET"])]
