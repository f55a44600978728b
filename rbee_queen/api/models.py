"""The model catalog: /v2/registry/models/{add,list,remove}."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from rbee_queen.api import inference
from rbee_queen.api.body import json_body
from rbee_queen.models import catalog
from rbee_queen.models.node_models import is_catalog_ref, parse_ref
from rbee_queen.nodes.inventory import memory_limit_mib
from rbee_queen.services import services
from rbee_queen.validation import IDENTIFIER, MODEL_REF, Fields, model_path

# OpenAI clients show model names; dots are common in them ("llama-3.1-8b").
MODEL_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


async def add_model(request: Request) -> JSONResponse:
    f = Fields(await json_body(request))
    name = f.string("name", pattern=MODEL_NAME, max_len=64)
    model_ref = f.string("model_ref", pattern=MODEL_REF, max_len=512)
    nodes = f.string_list("nodes", pattern=IDENTIFIER, max_len=64, max_items=64)
    slots = f.integer("slots", lo=1, hi=64, default=1)
    device = inference.device(f)
    memory = memory_limit_mib(f, "memory_limit_mib") or 0
    if model_ref is not None and model_path(model_ref) is None and not is_catalog_ref(model_ref):
        f.fail("model_ref", "pattern", "model_ref must be file:/absolute/path or hf:Org/Repo")
    if not nodes:
        f.fail("nodes", "required", "nodes must list at least one node")
    f.raise_if_any()
    assert name and model_ref and nodes and slots
    if is_catalog_ref(model_ref):
        parse_ref(model_ref)  # INVALID_REQUEST for a malformed hf: reference
    entry = services(request).catalog.add(
        name, model_ref, nodes, slots, device or "cpu", memory_limit_mib=memory
    )
    return JSONResponse({"model": catalog.model_json(entry)}, status_code=201)


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
]
