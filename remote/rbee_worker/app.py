"""The worker's HTTP API: health, readiness, inference as a token stream, cancel.

All state lives on app.state (the backend holder and the slots), so tests and
the entry point build as many apps as they like.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rbee_worker import headers
from rbee_worker.backends.base import ChatTemplateMissing
from rbee_worker.errors import (
    ALL_SLOTS_BUSY,
    INVALID_REQUEST,
    REQUEST_TIMEOUT,
    WORKER_LOADING,
    error_response,
)
from rbee_worker.jobs import Job, Slots
from rbee_worker.loading import BackendHolder, LoadState
from rbee_worker.metrics import worker_metrics
from rbee_worker.params import FieldError, InferenceRequest, InvalidRequest, parse_inference
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


def _invalid(exc: InvalidRequest, cid: str) -> Response:
    fields = [asdict(f) for f in exc.fields]
    return error_response(400, INVALID_REQUEST, str(exc), {"fields": fields}, cid)


def _with_chat_prompt(holder: BackendHolder, spec: InferenceRequest) -> InferenceRequest:
    """Messages become the prompt through the model's own chat template."""
    if spec.messages is None:
        return spec
    try:
        prompt = holder.backend.render_chat(spec.messages)
    except ChatTemplateMissing as exc:
        raise InvalidRequest([FieldError("messages", "chat_template", str(exc))]) from None
    return replace(spec, prompt=prompt)


async def health(request: Request) -> Response:
    holder: BackendHolder = request.app.state.holder
    if holder.state is LoadState.READY:
        return JSONResponse({"status": "ok"})
    if holder.state is LoadState.FAILED:
        body = {"status": "error", "code": holder.error_code, "message": holder.error}
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
    failure = {"code": holder.error_code, "message": holder.error} if holder.error else None
    return JSONResponse(
        {
            "ready": holder.state is LoadState.READY,
            "state": state,
            "progress": asdict(holder.progress),
            "slots_total": slots.total,
            "slots_busy": busy,
            "vram_bytes": holder.vram_bytes,
            **({"error": failure} if failure else {}),
        }
    )


async def start_inference(request: Request) -> Response:
    holder: BackendHolder = request.app.state.holder
    slots: Slots = request.app.state.slots
    cid = headers.correlation_id(request.headers.get("x-correlation-id"))
    try:
        deadline = headers.deadline(request.headers.get(headers.DEADLINE_HEADER))
        spec = parse_inference(await _read_json(request))
    except InvalidRequest as exc:
        return _invalid(exc, cid)
    except BodyTooLarge:
        return error_response(413, INVALID_REQUEST, "the request body is over 1 MiB", None, cid)
    if deadline is not None and deadline <= time.time():
        return error_response(504, REQUEST_TIMEOUT, "the request deadline has passed", None, cid)
    if holder.state is LoadState.LOADING:
        progress = {"progress": asdict(holder.progress)}
        return error_response(503, WORKER_LOADING, "the model is still loading", progress, cid)
    if holder.state is LoadState.FAILED:
        message = holder.error or "model load failed"
        return error_response(500, holder.error_code, message, None, cid)
    try:
        spec = _with_chat_prompt(holder, spec)
    except InvalidRequest as exc:
        return _invalid(exc, cid)
    job = Job(spec.job_id, correlation_id=cid or "-")
    if not slots.try_claim(job):
        details = {"slots_total": slots.total, "slots_busy": slots.busy}
        return error_response(503, ALL_SLOTS_BUSY, "all slots are busy", details, cid)
    p = spec.params
    log.info(
        "job %s cid=%s started: prompt_chars=%d chat=%s max_tokens=%d temperature=%g "
        "top_p=%g top_k=%d min_p=%g repetition_penalty=%g stops=%d seed=%s",
        spec.job_id,
        cid or "-",
        len(spec.prompt),
        spec.messages is not None,
        p.max_tokens,
        p.temperature,
        p.top_p,
        p.top_k,
        p.min_p,
        p.repetition_penalty,
        len(p.stop),
        p.seed,
    )
    stream = JobStream(holder.backend, spec, job, slots, deadline)
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
            Route("/metrics", worker_metrics, methods=["GET"]),
            Route("/v1/inference", start_inference, methods=["POST"]),
            Route("/v1/inference/{job_id}", cancel_inference, methods=["DELETE"]),
        ]
    )
    app.state.holder = holder
    app.state.slots = Slots(slots_total)
    return app
