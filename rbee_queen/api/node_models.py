"""/v2/models: the model folders on each node (list, download, copy, remove).

Download and copy check everything they can first and answer a plain error
envelope when that fails (MODEL_NOT_FOUND, HF_TOKEN_REQUIRED, INSUFFICIENT_DISK);
then they stream `text/event-stream` progress events ending in `done` or
`error`, and `[DONE]`. A client that goes away cancels the transfer; what was
written stays in the node's partial folder and the next run resumes from it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from rbee_queen.api.body import json_body
from rbee_queen.errors import RbeeError
from rbee_queen.nodes.inventory import get_node
from rbee_queen.services import services
from rbee_queen.validation import IDENTIFIER, MODEL_REF, Fields

log = logging.getLogger("rbee.queen.models")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def list_models(request: Request) -> JSONResponse:
    node = request.query_params.get("node")
    if node is not None:
        f = Fields({"node": node})
        f.string("node", pattern=IDENTIFIER, max_len=64)
        f.raise_if_any()
    return JSONResponse({"models": await services(request).models.list_models(node)})


async def download(request: Request) -> StreamingResponse:
    f = Fields(await json_body(request))
    node = f.string("node", pattern=IDENTIFIER, max_len=64)
    model = f.string("model", pattern=MODEL_REF, max_len=512)
    allow_bin = f.boolean("allow_bin")
    f.raise_if_any()
    assert node and model
    manager = services(request).models
    plan, listing = await manager.plan_download(node, model, allow_bin)
    await writes_to(request, node)
    return _stream(manager.download(plan, listing))


async def copy(request: Request) -> StreamingResponse:
    f = Fields(await json_body(request))
    source = f.string("from", pattern=IDENTIFIER, max_len=64)
    dest = f.string("to", pattern=IDENTIFIER, max_len=64)
    model = f.string("model", pattern=MODEL_REF, max_len=512)
    if source is not None and source == dest:
        f.fail("to", "distinct", "from and to must be different nodes")
    f.raise_if_any()
    assert source and dest and model
    manager = services(request).models
    plan, row, source_session = await manager.plan_copy(source, dest, model)
    await writes_to(request, dest)
    return _stream(manager.copy(plan, row, source_session))


async def remove(request: Request) -> JSONResponse:
    f = Fields(await json_body(request))
    node = f.string("node", pattern=IDENTIFIER, max_len=64)
    model = f.string("model", pattern=MODEL_REF, max_len=512)
    f.raise_if_any()
    assert node and model
    await writes_to(request, node)
    return JSONResponse(await services(request).models.remove(node, model))


async def writes_to(request: Request, node: str) -> None:
    """Only the queen that drives a node (its lease: two queens on one
    database) writes to its model store: one transfer per model at a time, and
    MODEL_IN_USE knows that queen's workers. NODE_HELD_ELSEWHERE otherwise."""
    get_node(node)  # NODE_NOT_FOUND first
    await services(request).leases.ensure(node)


def _stream(events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        try:
            async for event in events:
                yield _frame(event)
        except RbeeError as exc:
            yield _frame({"type": "error", "code": exc.code, "message": exc.message})
        except Exception as exc:  # the stream has started: report, never a bare cut
            log.exception("model transfer failed")
            yield _frame({"type": "error", "code": "DOWNLOAD_FAILED", "message": repr(exc)})
        yield b"data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream", headers=SSE_HEADERS)


def _frame(event: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(event).encode() + b"\n\n"


routes = [
    Route("/v2/models", list_models, methods=["GET"]),
    Route("/v2/models/download", download, methods=["POST"]),
    Route("/v2/models/copy", copy, methods=["POST"]),
    Route("/v2/models/remove", remove, methods=["POST"]),
]
