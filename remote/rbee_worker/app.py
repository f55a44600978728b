"""The worker's HTTP API: health, readiness, inference as a token stream, cancel.

All state lives on app.state (the backend holder and the slots), so tests and
the entry point build as many apps as they like.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rbee_worker.errors import (
    ALL_SLOTS_BUSY,
    INVALID_REQUEST,
    MODEL_LOAD_FAILED,
    WORKER_LOADING,
    error_response,
)
from rbee_worker.jobs import Job, Slots
from rbee_worker.loading import BackendHolder, LoadState
from rbee_worker.params import FieldError, InvalidRequest, parse_inference
from rbee_worker.streaming import JobStream, JobStreamResponse

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024


class BodyTooLarge(Exception):
    pass


async def _read_json(request: Request) -> Any:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BodyTooLarge
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        raise InvalidRequest([FieldError("body", "json", "the body must be valid JSON")]) from None


def _invalid(exc: InvalidRequest) -> Response:
    fields = [asdict(f) for f in exc.fields]
    return error_response(400, INVALID_REQUEST, str(exc), {"fields": fields})


async def health(request: Request) -> Response:
    holder: BackendHolder = request.app.state.holder
    if holder.state is LoadState.READY:
        return JSONResponse({"status": "ok"})
    if holder.state is LoadState.FAILED:
        body = {"status": "error", "code": MODEL_LOAD_FAILED, "message": holder.error}
        return JSONResponse(body, status_code=500)
    return JSONResponse({"status": "loading"}, status_code=503)


async def ready(request: Request) -> Response:
    holder: BackendHolder = request.app.state.holder
    slots: Slots = request.app.state.slots
    busy = slots.busy
    if holder.state is LoadState.READY:
        state = "busy" if busy else "idle"
    else:
        state = "error" if holder.state is LoadState.FAILED else "loading"
    return JSONResponse(
        {
            "ready": holder.state is LoadState.READY,
            "state": state,
            "progress": asdict(holder.progress),
            "slots_total": slots.total,
            "slots_busy": busy,
        }
    )


async def start_inference(request: Request) -> Response:
    holder: BackendHolder = request.app.state.holder
    slots: Slots = request.app.state.slots
    try:
        spec = parse_inference(await _read_json(request))
    except InvalidRequest as exc:
        return _invalid(exc)
    except BodyTooLarge:
        return error_response(413, INVALID_REQUEST, "the request body is over 1 MiB")
    if holder.state is LoadState.LOADING:
        progress = {"progress": asdict(holder.progress)}
        return error_response(503, WORKER_LOADING, "the model is still loading", progress)
    if holder.state is LoadState.FAILED:
        return error_response(500, MODEL_LOAD_FAILED, holder.error or "model load failed")
    job = Job(spec.job_id)
    if not slots.try_claim(job):
        details = {"slots_total": slots.total, "slots_busy": slots.busy}
        return error_response(503, ALL_SLOTS_BUSY, "all slots are busy", details)
    log.info(
        "job %s started: prompt_chars=%d max_tokens=%d temperature=%g seed=%s",
        spec.job_id,
        len(spec.prompt),
        spec.params.max_tokens,
        spec.params.temperature,
        spec.params.seed,
    )
    stream = JobStream(holder.backend, spec, job, slots)
    try:
        stream.start()
    except BaseException:
        slots.release(job)
        raise
    return JobStreamResponse(stream, job)


async def cancel_inference(request: Request) -> Response:
    slots: Slots = request.app.state.slots
    job_id = request.path_params["job_id"]
    if slots.cancel(job_id):
        log.info("job %s cancel requested", job_id)
    return Response(status_code=204)


def create_app(holder: BackendHolder, *, slots_total: int = 1) -> Starlette:
    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/v1/ready", ready, methods=["GET"]),
            Route("/v1/inference", start_inference, methods=["POST"]),
            Route("/v1/inference/{job_id}", cancel_inference, methods=["DELETE"]),
        ]
    )
    app.state.holder = holder
    app.state.slots = Slots(slots_total)
    return app
