"""The worker's token stream (`POST /v1/inference`): server-sent events.

A stream is `started`, then `token`s, then `end`, or an `error` at any point
after `started` (or instead of it); then `data: [DONE]`. The queen passes these
bytes through to `/v2/tasks` untouched and re-shapes them for the OpenAI
routes; an `error` it writes itself (a worker lost mid-stream) has this shape.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

from rbee_wire import codec, typecheck


class Started(TypedDict):
    type: Literal["started"]
    job_id: str
    model: str


class Token(TypedDict):
    type: Literal["token"]
    t: str  # the text this token adds (may be empty while bytes are held back)
    i: int  # its index, from 0


class Usage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    time_to_first_token_ms: int | None
    tokens_per_second: float | None


StopReason = Literal["EOS", "MAX_TOKENS", "STOP_SEQUENCE", "CANCELLED"]


class End(TypedDict):
    type: Literal["end"]
    tokens_out: int
    decode_time_ms: int
    stop_reason: StopReason
    stop_sequence_matched: NotRequired[str]
    usage: Usage


class Error(TypedDict):
    type: Literal["error"]
    code: str
    message: str
    details: NotRequired[dict[str, Any]]  # e.g. WORKER_OOM's memory figures


WorkerEvent = Started | Token | End | Error
BY_TYPE: dict[str, Any] = {"started": Started, "token": Token, "end": End, "error": Error}


def encode(event: WorkerEvent) -> bytes:
    return codec.sse(event)


def error(code: str, message: str, details: dict[str, Any] | None = None) -> bytes:
    """An `error` event and the end of the stream."""
    event = Error(type="error", code=code, message=message)
    if details:
        event["details"] = details
    return encode(event) + codec.SSE_DONE


def problems(message: Any) -> list[str]:
    """What is wrong with a decoded event; empty when it is one of the above."""
    kind = message.get("type") if isinstance(message, dict) else None
    schema = BY_TYPE.get(str(kind))
    if schema is None:
        return [f"worker event: unknown type {kind!r}"]
    return typecheck.problems(message, schema)


def last_of(body: bytes, kind: str) -> dict[str, Any] | None:
    """The last whole event of `kind` in a run of events (the end of a stream).
    Only the line that names it is decoded: this runs after every request."""
    marker = codec.encode({"type": kind})[1:-1].encode()  # '"type": "end"', as encoded
    for line in reversed(body.split(b"\n")):
        if line.startswith(codec.SSE_PREFIX + b"{") and marker in line:
            return codec.decode_object(line[len(codec.SSE_PREFIX) :])
    return None
