"""The model catalog: /v2/registry/models/{add,list,remove,update}."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from rbee_queen.api import inference
from rbee_queen.api.body import json_body
from rbee_queen.errors import InvalidRequest
from rbee_queen.models import catalog
from rbee_queen.models.node_models import is_catalog_ref, parse_ref
from rbee_queen.nodes.inventory import memory_limit_mib
from rbee_queen.services import services
from rbee_queen.validation import IDENTIFIER, MODEL_REF, Fields, model_path

# OpenAI clients show model names; dots are common in them ("llama-3.1-8b").
MODEL_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def model_settings(f: Fields, *, partial: bool) -> dict[str, Any]:
    """The settings `add` and `update` take, read and checked the same way: for
    `add` each one (defaults filled in), for `update` only those given."""
    nodes = f.string_list("nodes", pattern=IDENTIFIER, max_len=64, max_items=64)
    slots = f.integer("slots", lo=1, hi=64)
    device = inference.device(f)
    memory = memory_limit_mib(f, "memory_limit_mib")
    if nodes == [] or (nodes is None and not partial):
        f.fail("nodes", "required", "nodes must list at least one node")
    settings: dict[str, Any] = {"nodes": nodes, "slots": slots, "device": device}
    settings["memory_limit_mib"] = memory
    if not partial:  # add's defaults
        defaults = {"slots": 1, "device": "cpu", "memory_limit_mib": 0}
        settings |= {k: v for k, v in defaults.items() if settings[k] is None}
    return {k: v for k, v in settings.items() if v is not None}


async def add_model(request: Request) -> JSONResponse:
    f = Fields(await json_body(request))
    name = f.string("name", pattern=MODEL_NAME, max_len=64)
    model_ref = f.string("model_ref", pattern=MODEL_REF, max_len=512)
    settings = model_settings(f, partial=False)
    if model_ref is not None and model_path(model_ref) is None and not is_catalog_ref(model_ref):
        f.fail("model_ref", "pattern", "model_ref must be file:/absolute/path or hf:Org/Repo")
    f.raise_if_any()
    assert name and model_ref
    if is_catalog_ref(model_ref):
        parse_ref(model_ref)  # INVALID_REQUEST for a malformed hf: reference
    entry = services(request).catalog.add(
        name,
        model_ref,
        settings["nodes"],
        settings["slots"],
        settings["device"],
        memory_limit_mib=settings["memory_limit_mib"],
    )
    return JSONResponse({"model": catalog.model_json(entry)}, status_code=201)


async def update_model(request: Request) -> JSONResponse:
    f = Fields(await json_body(request))
    name = f.string("name", pattern=MODEL_NAME, max_len=64)
    changes = model_settings(f, partial=True)
    if not f.problems and not changes:
        raise InvalidRequest(
            "nothing to change: give nodes, slots, backend/device or memory_limit_mib"
        )
    f.raise_if_any()
    assert name is not None
    entry = services(request).catalog.update(name, changes)
    return JSONResponse({"model": catalog.model_json(entry)})


async def list_models(request: Request) -> JSONResponse:
    return JSONResponse({"models": [catalog.model_json(e) for e in catalog.list_models()]})


async def remove_model(request: Request) -> JSONResponse:
    f = Fields(await json_body(request))
    name = f.string("name", pattern=MODEL_NAME, max_len=64)
    f.raise_if_any()
    assert name is not None
    services(request).catalog.remove(name)
    return JSONResponse({"removed": name})


routes = [
    Route("/v2/registry/models/add", add_model, methods=["POST"]),
    Route("/v2/registry/models/list", list_models, methods=["GET"]),
    Route("/v2/registry/models/remove", remove_model, methods=["POST"]),
    Route("/v2/registry/models/update", update_model, methods=["POST"]),
]
