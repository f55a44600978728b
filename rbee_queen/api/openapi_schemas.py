"""The building blocks of the queen's OpenAPI document: field schemas taken
from the validators' own expressions, the shared components, and the shape of
one operation. `openapi.py` lists the paths with them."""

from __future__ import annotations

from typing import Any

from rbee_queen.api.inference import ROLES, SAMPLED
from rbee_queen.nodes.inventory import MEMORY_LIMIT_MIB
from rbee_queen.validation import HOSTNAME, IDENTIFIER, MODEL_REF, SSH_USER, WORKER_ID
from rbee_wire.limits import LIMITS, SURFACE_DEFAULTS

Schema = dict[str, Any]

# Fields.string: a non-empty string on one line, without NUL.
ONE_LINE = r"^[^\x00\n]+$"


def string(pattern: str = ONE_LINE, max_len: int = 4096) -> Schema:
    return {"type": "string", "minLength": 1, "maxLength": max_len, "pattern": pattern}


def obj(properties: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


NAME = string(IDENTIFIER.pattern, 64)
MODEL = string(MODEL_REF.pattern, 512)
WORKER = string(WORKER_ID.pattern, 256)
LOG_LINES = {"type": "string", "pattern": "^[0-9]{1,4}$"}
BOOL: Schema = {"type": "boolean"}
# Fields.prompt: no control characters other than tab/newline/CR, no bidi overrides.
PROMPT: Schema = {
    **LIMITS["prompt"].schema(),
    "pattern": r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069]+$",
}


def int_range(lo: int, hi: int) -> Schema:
    return {"type": "integer", "minimum": lo, "maximum": hi}


NODE_SPEC = obj(
    {
        "node_name": NAME,
        "ssh_host": string(HOSTNAME.pattern, 253),
        "ssh_port": int_range(1, 65535),
        "ssh_user": string(SSH_USER.pattern, 64),
        "ssh_key_path": string(),
        "install_path": string(),
        "worker_python": string(),
        "accept_new_host_key": BOOL,
        "worker_memory_limit_mib": int_range(*MEMORY_LIMIT_MIB),
    },
    ("node_name", "ssh_host"),
)


def sampling(surface: str) -> dict[str, Schema]:
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
    "stream_options": obj({"include_usage": BOOL}),
    "n": {"type": "integer", "enum": [1]},
    **DEVICE,
}
MESSAGE = obj(
    {"role": {"type": "string", "enum": sorted(ROLES)}, "content": PROMPT},
    ("role", "content"),
)

COMPONENTS: Schema = {
    "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    "schemas": {
        "Error": obj(
            {
                "error": obj(
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
        "OpenAIError": obj(
            {
                "error": obj(
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
            "content": {"application/json": {"schema": ref("Error")}},
        },
        "Unauthorized": {
            "description": "MISSING_API_KEY or INVALID_API_KEY",
            "headers": {"WWW-Authenticate": {"schema": {"type": "string", "const": "Bearer"}}},
            "content": {"application/json": {"schema": ref("Error")}},
        },
        "OpenAIError": {
            "description": "An error in OpenAI's shape",
            "content": {"application/json": {"schema": ref("OpenAIError")}},
        },
    },
}

JSON_OK = {"application/json": {"schema": ref("Object")}}
SSE_OK = {"text/event-stream": {"schema": {"type": "string"}}}


def operation(
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


def query(name: str, schema: Schema, required: bool = False) -> Schema:
    return {"name": name, "in": "query", "required": required, "schema": schema}


NODE_QUERY = query("node", NAME)
