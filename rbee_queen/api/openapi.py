"""GET /openapi.json: the queen's API described as OpenAPI 3.1, written as data.

The request schemas state what the validators in `rbee_queen.validation`
enforce (patterns are taken from the same compiled expressions), so a client
generated from this document sends what the queen accepts. A test compares
the paths here with the routes the app registers, so the two cannot drift.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from rbee_queen import __version__
from rbee_queen.api.body import MAX_BODY_BYTES
from rbee_queen.api.inference import ROLES, SAMPLED
from rbee_queen.api.models import MODEL_NAME
from rbee_queen.nodes.inventory import MEMORY_LIMIT_MIB
from rbee_queen.validation import HOSTNAME, IDENTIFIER, MODEL_REF, SSH_USER, WORKER_ID
from rbee_wire.limits import LIMITS, SURFACE_DEFAULTS

Schema = dict[str, Any]

# Fields.string: a non-empty string on one line, without NUL.
ONE_LINE = r"^[^\x00\n]+$"


def _string(pattern: str = ONE_LINE, max_len: int = 4096) -> Schema:
    return {"type": "string", "minLength": 1, "maxLength": max_len, "pattern": pattern}


def _obj(properties: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


NAME = _string(IDENTIFIER.pattern, 64)
MODEL = _string(MODEL_REF.pattern, 512)
WORKER = _string(WORKER_ID.pattern, 256)
LOG_LINES = {"type": "string", "pattern": "^[0-9]{1,4}$"}
BOOL: Schema = {"type": "boolean"}
# Fields.prompt: no control characters other than tab/newline/CR, no bidi overrides.
PROMPT: Schema = {
    **LIMITS["prompt"].schema(),
    "pattern": r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069]+$",
}


def _int(lo: int, hi: int) -> Schema:
    return {"type": "integer", "minimum": lo, "maximum": hi}


NODE_SPEC = _obj(
    {
        "node_name": NAME,
        "ssh_host": _string(HOSTNAME.pattern, 253),
        "ssh_port": _int(1, 65535),
        "ssh_user": _string(SSH_USER.pattern, 64),
        "ssh_key_path": _string(),
        "install_path": _string(),
        "worker_python": _string(),
        "accept_new_host_key": BOOL,
        "worker_memory_limit_mib": _int(*MEMORY_LIMIT_MIB),
    },
    ("node_name", "ssh_host"),
)


def _sampling(surface: str) -> dict[str, Schema]:
    """The sampling fields, with the defaults of one surface of SURFACE_DEFAULTS."""
    defaults = SURFACE_DEFAULTS[surface]
    fields = {name: LIMITS[name].schema(defaults.get(name)) for name in SAMPLED}
    stop = LIMITS["stop"]  # one string, or a list of them
    one = (stop.item or stop).schema()
    fields["stop"] = {"description": stop.description, "oneOf": [one, stop.schema()]}
    return fields


# The original's device fields: cuda runs exllamav2 workers, cpu torch workers.
DEVICE: dict[str, Schema] = {
    "backend": {"type": "string", "enum": ["cpu", "cuda"]},
    "device": LIMITS["device"].schema(),
}
OPENAI_COMMON: dict[str, Schema] = {
    "model": MODEL,
    "nodes": {"type": "array", "items": NAME, "maxItems": 64},
    "stream": BOOL,
    "stream_options": _obj({"include_usage": BOOL}),
    "n": {"type": "integer", "enum": [1]},
    **DEVICE,
}
MESSAGE = _obj(
    {"role": {"type": "string", "enum": sorted(ROLES)}, "content": PROMPT},
    ("role", "content"),
)

COMPONENTS: Schema = {
    "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    "schemas": {
        "Error": _obj(
            {
                "error": _obj(
                    {
                        "code": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]*$"},
                        "message": {"type": "string"},
                        "details": {"type": "object"},
                        "correlation_id": {"type": "string"},
                    },
                    ("code", "message", "details", "correlation_id"),
                )
            },
            ("error",),
        ),
        "OpenAIError": _obj(
            {
                "error": _obj(
                    {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "code": {"type": ["string", "null"]},
                    },
                    ("message", "type"),
                )
            },
            ("error",),
        ),
        "NodeSpec": NODE_SPEC,
        "Object": {"type": "object"},
    },
    "responses": {
        "Error": {
            "description": "The error envelope (`details.fields` lists each bad field on 400)",
            "content": {"application/json": {"schema": _ref("Error")}},
        },
        "Unauthorized": {
            "description": "MISSING_API_KEY or INVALID_API_KEY",
            "headers": {"WWW-Authenticate": {"schema": {"type": "string", "const": "Bearer"}}},
            "content": {"application/json": {"schema": _ref("Error")}},
        },
        "OpenAIError": {
            "description": "An error in OpenAI's shape",
            "content": {"application/json": {"schema": _ref("OpenAIError")}},
        },
    },
}

JSON_OK = {"application/json": {"schema": _ref("Object")}}
SSE_OK = {"text/event-stream": {"schema": {"type": "string"}}}


def _op(
    summary: str,
    *,
    body: Schema | None = None,
    params: list[Schema] | None = None,
    status: int = 200,
    content: dict[str, Any] | None = None,
    public: bool = False,
    openai: bool = False,
) -> Schema:
    error = {"$ref": "#/components/responses/" + ("OpenAIError" if openai else "Error")}
    responses: Schema = {str(status): {"description": "Success", "content": content or JSON_OK}}
    if not public:
        responses["401"] = {"$ref": "#/components/responses/Unauthorized"}
    if body is not None:
        responses["413"] = error
    responses |= {"4XX": error, "5XX": error}
    op: Schema = {"summary": summary, "responses": responses}
    if public:
        op["security"] = []
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def _query(name: str, schema: Schema, required: bool = False) -> Schema:
    return {"name": name, "in": "query", "required": required, "schema": schema}


NODE_QUERY = _query("node", NAME)

PATHS: Schema = {
    "/health": {"get": _op("Liveness and version", public=True)},
    "/openapi.json": {"get": _op("This document")},
    "/metrics": {
        "get": _op("Prometheus metrics", content={"text/plain": {"schema": {"type": "string"}}})
    },
    "/v2/events": {"get": _op("The fleet as a live SSE stream (a snapshot first)", content=SSE_OK)},
    "/v2/registry/beehives/add": {
        "post": _op("Add a node (admin)", body=_ref("NodeSpec"), status=201)
    },
    "/v2/registry/beehives/import": {
        "post": _op(
            "Add several nodes at once (admin)",
            body=_obj(
                {
                    "nodes": {
                        "type": "array",
                        "items": _ref("NodeSpec"),
                        "minItems": 1,
                        "maxItems": 1000,
                    }
                },
                ("nodes",),
            ),
        )
    },
    "/v2/registry/beehives/install": {
        "post": _op(
            "Build the node's worker venv (admin)",
            body=_obj(
                {
                    "node_name": NAME,
                    "python": _string(),
                    "index_url": _string(),
                    "system_site_packages": BOOL,
                    "no_deps": BOOL,
                },
                ("node_name",),
            ),
        )
    },
    "/v2/registry/beehives/list": {"get": _op("The node inventory")},
    "/v2/registry/beehives/remove": {
        "post": _op(
            "Remove a node and stop its workers (admin)",
            body=_obj({"node_name": NAME}, ("node_name",)),
        )
    },
    "/v2/registry/beehives/update": {
        "post": _op(
            "Change a node's connection settings (admin)",
            body=_obj(dict(NODE_SPEC["properties"]), ("node_name",)),
        )
    },
    "/v2/nodes/status": {"get": _op("Probe the fleet now", params=[NODE_QUERY])},
    "/v2/nodes/preflight": {"get": _op("add-node's checks, run now", params=[NODE_QUERY])},
    "/v2/workers/list": {
        "get": _op(
            "Workers (`all=1` includes stopped ones)",
            params=[_query("all", {"type": "string", "enum": ["0", "1"]})],
        )
    },
    "/v2/workers/shutdown": {
        "post": _op(
            "Stop a worker (admin)",
            body=_obj({"worker_id": WORKER}, ("worker_id",)),
        )
    },
    "/v2/workers/{worker_id}/events": {
        "get": _op(
            "A worker's state history",
            params=[{"name": "worker_id", "in": "path", "required": True, "schema": WORKER}],
        )
    },
    "/v2/tasks": {
        "post": _op(
            "Run one inference, streamed as SSE",
            body=_obj(
                {"node": NAME, "model": MODEL, "prompt": PROMPT, **_sampling("tasks"), **DEVICE},
                ("model", "prompt"),
            ),
            content=SSE_OK,
        )
    },
    "/v2/registry/models/add": {
        "post": _op(
            "Add a catalog model (admin)",
            body=_obj(
                {
                    "name": _string(MODEL_NAME.pattern, 64),
                    "model_ref": _string(r"^(file:/|hf:)[A-Za-z0-9\-_/:.@]+$", 512),
                    "nodes": {"type": "array", "items": NAME, "minItems": 1, "maxItems": 64},
                    "slots": _int(1, 64),
                    "memory_limit_mib": _int(*MEMORY_LIMIT_MIB),
                    **DEVICE,
                },
                ("name", "model_ref", "nodes"),
            ),
            status=201,
        )
    },
    "/v2/registry/models/list": {"get": _op("The model catalog")},
    "/v2/registry/models/remove": {
        "post": _op(
            "Remove a catalog model (admin)",
            body=_obj({"name": _string(MODEL_NAME.pattern, 64)}, ("name",)),
        )
    },
    "/v2/models": {"get": _op("Model folders on the nodes", params=[NODE_QUERY])},
    "/v2/models/download": {
        "post": _op(
            "Download a model to a node (admin), progress as SSE",
            body=_obj({"node": NAME, "model": MODEL, "allow_bin": BOOL}, ("node", "model")),
            content=SSE_OK,
        )
    },
    "/v2/models/copy": {
        "post": _op(
            "Copy a model between nodes (admin), progress as SSE",
            body=_obj({"from": NAME, "to": NAME, "model": MODEL}, ("from", "to", "model")),
            content=SSE_OK,
        )
    },
    "/v2/models/remove": {
        "post": _op(
            "Delete a model folder on a node (admin)",
            body=_obj({"node": NAME, "model": MODEL}, ("node", "model")),
        )
    },
    "/v2/logs": {
        "get": _op(
            "The tail of worker logs (give node or worker_id)",
            params=[NODE_QUERY, _query("worker_id", WORKER), _query("lines", LOG_LINES)],
        )
    },
    "/v2/admin/config": {"get": _op("The settings in force, each with its source (admin)")},
    "/v2/admin/reload": {"post": _op("Re-read the config file; apply what may change (admin)")},
    "/v2/keys/list": {"get": _op("Named keys (admin)")},
    "/v2/keys/add": {
        "post": _op(
            "Create a named key; its token is in this answer only (admin)",
            body=_obj(
                {"name": NAME, "admin": BOOL, "models": {"type": "array", "items": MODEL}},
                ("name",),
            ),
            status=201,
        )
    },
    "/v2/keys/revoke": {
        "post": _op("Revoke a named key (admin)", body=_obj({"name": NAME}, ("name",)))
    },
    "/v1/models": {"get": _op("OpenAI: catalog models", openai=True)},
    "/v1/completions": {
        "post": _op(
            "OpenAI: text completion",
            body=_obj(
                {
                    "prompt": {
                        "oneOf": [
                            PROMPT,
                            {"type": "array", "items": PROMPT, "minItems": 1, "maxItems": 1},
                        ]
                    },
                    **OPENAI_COMMON,
                    **_sampling("completions"),
                },
                ("model", "prompt"),
            ),
            openai=True,
        )
    },
    "/v1/chat/completions": {
        "post": _op(
            "OpenAI: chat completion",
            body=_obj(
                {
                    "messages": {**LIMITS["messages"].schema(), "items": MESSAGE},
                    "max_completion_tokens": LIMITS["max_tokens"].schema(),
                    **OPENAI_COMMON,
                    **_sampling("chat"),
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
