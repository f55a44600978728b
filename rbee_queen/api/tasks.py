"""POST /v2/tasks: run one inference on a node, streamed back as SSE."""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from rbee_queen.api.body import json_body
from rbee_queen.services import services
from rbee_queen.validation import IDENTIFIER, MODEL_REF, Fields


async def create_task(request: Request) -> StreamingResponse:
    f = Fields(await json_body(request))
    node = f.string("node", pattern=IDENTIFIER, max_len=64)
    model = f.string("model", pattern=MODEL_REF, max_len=512)
    prompt = f.prompt()
    max_tokens = f.integer("max_tokens", lo=1, hi=2048, default=20)
    temperature = f.number("temperature", lo=0.0, hi=2.0, default=0.7)
    seed = f.integer("seed", lo=0, hi=2**63 - 1)
    f.raise_if_any()
    assert node is not None and model is not None
    workers = services(request).workers
    live = await workers.ensure_worker(node, model)
    payload = {
        "job_id": f"job-{secrets.token_hex(8)}",
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "seed": seed,
    }
    response = await workers.open_stream(live, payload)
    return StreamingResponse(
        workers.relay(live, response),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


routes = [Route("/v2/tasks", create_task, methods=["POST"])]
