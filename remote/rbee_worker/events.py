"""The token stream's events, built as `rbee_wire.worker_events` defines them."""

from __future__ import annotations

from rbee_wire import codec
from rbee_wire.worker_events import End, Error, Started, Token, Usage, encode
from rbee_worker.backends.base import GenerationResult

DONE = codec.SSE_DONE


def started(job_id: str, model: str) -> bytes:
    return encode(Started(type="started", job_id=job_id, model=model))


def token(text: str, index: int) -> bytes:
    return encode(Token(type="token", t=text, i=index))


def end(result: GenerationResult, decode_time_ms: int, first_token_ms: int | None) -> bytes:
    seconds = decode_time_ms / 1000
    usage = Usage(
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.tokens_out,
        total_tokens=result.prompt_tokens + result.tokens_out,
        time_to_first_token_ms=first_token_ms,
        tokens_per_second=round(result.tokens_out / seconds, 1) if seconds > 0 else None,
    )
    event = End(
        type="end",
        tokens_out=result.tokens_out,
        decode_time_ms=decode_time_ms,
        stop_reason=result.stop_reason.value,
        usage=usage,
    )
    if result.stop_sequence is not None:
        event["stop_sequence_matched"] = result.stop_sequence
    return encode(event)


def error(code: str, message: str) -> bytes:
    return encode(Error(type="error", code=code, message=message))
