"""OpenAI-compatible routes: GET /v1/models, POST /v1/completions and
POST /v1/chat/completions, streaming or not, with OpenAI's error shape.

`model` names a catalog entry; the request is routed to the least loaded worker
serving it, and a worker is started on one of its nodes when none has a free
slot. An extra `nodes` field (a list of node names) overrides the catalog's
mapping for one request, and then `model` may also be a `file:` reference.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rbee_queen import requestcontext as ctx
from rbee_queen.api import inference
from rbee_queen.api import openai_format as fmt
from rbee_queen.api.auth import require_model
from rbee_queen.api.body import json_body
from rbee_queen.api.event_stream import EventStreamResponse
from rbee_queen.errors import (
    InferenceFailed,
    QueueFull,
    RbeeError,
    RequestTimeout,
    VramOom,
    WorkerOom,
)
from rbee_queen.models import catalog
from rbee_queen.services import services
from rbee_queen.validation import IDENTIFIER, MODEL_REF, Fields
from rbee_queen.workers import failover
from rbee_queen.workers.routing import before_deadline

Handler = Callable[[Request], Awaitable[Response]]


def openai_errors(handler: Handler) -> Handler:
    """Render rbee errors in OpenAI's shape on this surface."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except RbeeError as exc:
            response = fmt.error_response(exc, ctx.correlation_id.get())
            if isinstance(exc, QueueFull):  # the OpenAI clients wait this long and retry
                response.headers["Retry-After"] = str(exc.retry_after_s)
            return response

    return wrapped


@openai_errors
async def list_models(request: Request) -> Response:
    data = [
        {
            "id": entry.name,
            "object": "model",
            "created": int(entry.created_at.timestamp()),
            "owned_by": "rbee",
        }
        for entry in catalog.list_models()
    ]
    return JSONResponse({"object": "list", "data": data})


@openai_errors
async def completions(request: Request) -> Response:
    f = Fields(await json_body(request))
    prompt = _completion_prompt(f)
    return await _complete(request, f, "text", {"prompt": prompt})


@openai_errors
async def chat_completions(request: Request) -> Response:
    f = Fields(await json_body(request))
    if f.body.get("max_tokens") is None and f.body.get("max_completion_tokens") is not None:
        f.body["max_tokens"] = f.body["max_completion_tokens"]
    messages = inference.messages(f)
    return await _complete(request, f, "chat", {"messages": messages})


def _completion_prompt(f: Fields) -> str:
    value = f.body.get("prompt")
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        f.body["prompt"] = value[0]  # the client libraries send a one-item list too
    return f.prompt()


async def _complete(request: Request, f: Fields, kind: str, content: dict[str, Any]) -> Response:
    model = f.string("model", pattern=MODEL_REF, max_len=512)
    nodes = f.string_list("nodes", pattern=IDENTIFIER, max_len=64, max_items=64)
    params = inference.sampling(f, "chat" if kind == "chat" else "completions")
    device = inference.device(f)  # rbee's own fields; OpenAI clients send neither
    stream = f.boolean("stream")
    include_usage = _include_usage(f)
    if f.body.get("n") not in (None, 1):
        f.fail("n", "range", "only n=1 is supported")
    f.raise_if_any()
    assert model is not None
    require_model(request, model)
    where = services(request).catalog.placement(model, nodes, device, node_field="nodes")
    job_id = inference.new_job_id()
    svc = services(request)
    attempt = failover.FailoverStream(
        svc.router,
        svc.workers.relay,
        where,
        {"job_id": job_id, **content, **params},
        key=request.state.principal.name,  # the queue's turns are per key
    )
    async with before_deadline():
        # The body is read: what comes next on `receive` is the client leaving.
        await attempt.open(gone=request.receive)
    relay = attempt.stream()
    shape = fmt.Shape(kind, model, job_id)
    if stream:
        body = _stream(shape, relay, include_usage)
        return EventStreamResponse(body, on_error=_error_chunk, release=attempt.close)
    try:
        text, end = await _collect(relay)
    finally:
        await relay.aclose()
        await attempt.close()
    return JSONResponse(shape.whole(text, end))


def _error_chunk(exc: RbeeError) -> bytes:
    """A request that failed after its head had left: OpenAI's error shape as
    the stream's one event, then [DONE]."""
    return fmt.sse(fmt.error_body(exc, ctx.correlation_id.get())) + fmt.DONE


def _include_usage(f: Fields) -> bool:
    options = f.body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


async def _collect(relay: AsyncGenerator[bytes, None]) -> tuple[str, dict[str, Any]]:
    pieces: list[str] = []
    async for event in fmt.worker_events(relay):
        kind = event.get("type")
        if kind == "token":
            pieces.append(str(event.get("t", "")))
        elif kind == "end":
            # The worker's [DONE] and its body's end may come a moment later:
            # read them, so that its connection is kept for the next request.
            async for _ in relay:
                pass
            return "".join(pieces), event
        elif kind == "error":
            raise _stream_error(event)
    raise InferenceFailed("the worker's stream ended without an end event")


async def _stream(
    shape: fmt.Shape, relay: AsyncGenerator[bytes, None], include_usage: bool
) -> AsyncGenerator[bytes, None]:
    """The worker's events as OpenAI's chunks: what arrived together leaves in
    one write, [DONE] with the last."""
    first, prepared = True, False
    try:
        async for batch in fmt.worker_event_batches(relay, sliced=True):
            out: list[bytes] = []
            for event in batch:
                kind = event.get("type")
                if kind == "token":
                    out.append(_token_chunk(shape, event, first))
                    first = False
                elif kind == "end":
                    out.append(shape.finish_chunk(fmt.finish_reason(event), first=first))
                    if include_usage:
                        out.append(shape.usage_chunk(event))
                    break
                elif kind == "error":
                    error = fmt.error_body(_stream_error(event), ctx.correlation_id.get())
                    out.append(fmt.sse(error))
                    break
            else:
                if out:
                    yield b"".join(out)
                    if not prepared:  # the first piece is out: the end's templates now
                        shape.prepare_end()
                        prepared = True
                continue
            yield b"".join(out) + fmt.DONE
            break
        else:
            yield fmt.DONE
        # The client has it all: read the worker's [DONE] and its body's end,
        # which may come a moment after its `end`, so that its connection is
        # kept for the next request (closed early, the next one opens another).
        async for _ in relay:
            pass
    finally:
        await relay.aclose()


def _token_chunk(shape: fmt.Shape, event: dict[str, Any], first: bool) -> bytes:
    """A token's chunk: from the worker's own JSON string of its text where the
    reader sliced one out (no decode and encode per token), else from the text."""
    literal = event.get("literal")
    if literal is not None:
        return shape.token_chunk_of(literal, first)
    text = str(event.get("t", ""))
    return shape.chunk(text, first=True) if first else shape.token_chunk(text)


def _stream_error(event: dict[str, Any]) -> RbeeError:
    message = str(event.get("message") or "the worker failed")
    code = event.get("code")
    for known in (RequestTimeout, VramOom, WorkerOom):  # a client may act on these
        if code == known.code:
            return known(message, **(event.get("details") or {}))
    return InferenceFailed(message, worker_code=code)


inference_routes = [
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
]
routes = [Route("/v1/models", list_models, methods=["GET"]), *inference_routes]
