"""/v2/keys: named API keys (admin only, enforced by the auth in the queen's front).

A new key's token is in the answer to `add` and nowhere else: the queen keeps
its digest only.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from rbee_queen.api.auth import principal_of
from rbee_queen.api.body import json_body
from rbee_queen.services import services
from rbee_queen.validation import IDENTIFIER, MODEL_REF, Fields


async def list_keys(request: Request) -> JSONResponse:
    entries = services(request).keys.entries()
    return JSONResponse({"keys": [e.public() for e in entries]})


async def add(request: Request) -> JSONResponse:
    f = Fields(await json_body(request))
    name = f.string("name", pattern=IDENTIFIER, max_len=64)
    admin = f.boolean("admin")
    models = f.string_list("models", pattern=MODEL_REF, max_len=512)
    f.raise_if_any()
    assert name is not None
    svc = services(request)
    token = svc.keys.add(name, admin=admin, models=models)
    by = principal_of(request).name
    svc.audit.record("key.added", name=name, admin=admin, by=by)
    entry = next(e for e in svc.keys.entries() if e.name == name)
    return JSONResponse({"key": entry.public(), "token": token}, status_code=201)


async def revoke(request: Request) -> JSONResponse:
    f = Fields(await json_body(request))
    name = f.string("name", pattern=IDENTIFIER, max_len=64)
    f.raise_if_any()
    assert name is not None
    svc = services(request)
    svc.keys.revoke(name)
    svc.audit.record("key.revoked", name=name, by=principal_of(request).name)
    return JSONResponse({"revoked": name})


routes = [
    Route("/v2/keys/list", list_keys, methods=["GET"]),
    Route("/v2/keys/add", add, methods=["POST"]),
    Route("/v2/keys/revoke", revoke, methods=["POST"]),
]
