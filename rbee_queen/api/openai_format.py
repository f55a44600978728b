"""OpenAI's wire shapes: responses, stream chunks, usage and errors.

Pure functions over the worker's events, so the routes stay small and the
shapes are checked in one place.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import JSONResponse

from rbee_queen.api.errors import retry_after
from rbee_queen.errors import RbeeError

FINISH_REASONS = {
    "MAX_TOKENS": "length",
    "EOS": "stop",
    "STOP_SEQUENCE": "stop",
    "CANCELLED": "stop",
}
DONE = b"data: [DONE]\n\n"
_HOLE = "\x00"  # stands for a token's text in a chunk template; JSON writes it "\u0000"
_HOLE_JSON = json.dumps(_HOLE).encode()
# A worker's token event, as rbee_wire.codec writes it, around its text.
_TOKEN_HEAD = b'{"type": "token", "t": '
_TOKEN_INDEX = b', "i": '


def error_body(exc: RbeeError, correlation_id: str) -> dict[str, Any]:
    fields = exc.details.get("fields") or []
    kind = "invalid_request_error" if exc.status < 500 else "server_error"
    if exc.status == 401:
        kind = "authentication_error"
    return {
        "error": {
            "message": exc.message,
            "type": kind,
            "param": fields[0]["field"] if fields else None,
            "code": exc.code.lower(),
            "correlation_id": correlation_id,
        }
    }


def error_response(exc: RbeeError, correlation_id: str) -> JSONResponse:
    headers = {"x-correlation-id": correlation_id, **retry_after(exc)}
    return JSONResponse(error_body(exc, correlation_id), status_code=exc.status, headers=headers)


def usage(end: dict[str, Any]) -> dict[str, int]:
    worker = end.get("usage") or {}
    prompt = int(worker.get("prompt_tokens") or 0)
    completion = int(worker.get("completion_tokens") or end.get("tokens_out") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def finish_reason(end: dict[str, Any]) -> str:
    return FINISH_REASONS.get(str(end.get("stop_reason")), "stop")


class Shape:
    """The fields one completion shares across its chunks."""

    def __init__(self, kind: str, model: str, job_id: str) -> None:
        self.chat = kind == "chat"
        self.id = ("chatcmpl-" if self.chat else "cmpl-") + job_id.removeprefix("job-")
        self.model = model
        self.created = int(time.time())
        self.object = "chat.completion" if self.chat else "text_completion"
        self.chunk_object = "chat.completion.chunk" if self.chat else "text_completion"
        # Every token's chunk is the same but for its text: encode the rest once,
        # so each token costs one string encode instead of a whole chunk's.
        before, after = self.chunk(_HOLE).split(_HOLE_JSON)
        self._token_template = (before, after)
        first_before, first_after = self.chunk(_HOLE, first=True).split(_HOLE_JSON)
        self._first_template = (first_before, first_after)  # the first token's
        self._finish_template: tuple[bytes, bytes] | None = None  # prepare_end()'s
        self._usage_template: list[bytes] | None = None

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def whole(self, text: str, end: dict[str, Any]) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish_reason(end)}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice |= {"text": text, "logprobs": None}
        return {**self._head(self.object), "choices": [choice], "usage": usage(end)}

    def chunk(self, text: str | None, finish: str | None = None, first: bool = False) -> bytes:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
            if text is not None:
                delta["content"] = text
            choice["delta"] = delta
        else:
            choice |= {"text": text or "", "logprobs": None}
        return sse({**self._head(self.chunk_object), "choices": [choice]})

    def token_chunk(self, text: str) -> bytes:
        """`chunk(text)`, byte for byte, from the template."""
        return self.token_chunk_of(json.dumps(text, ensure_ascii=False).encode())

    def token_chunk_of(self, literal: bytes, first: bool = False) -> bytes:
        """The same from the text's JSON string as the worker wrote it (the
        same encoding: rbee_wire.codec), spliced in without a decode; `first`:
        `chunk(text, first=True)`'s, with the role."""
        before, after = self._first_template if first else self._token_template
        return before + literal + after

    def usage_chunk(self, end: dict[str, Any]) -> bytes:
        counts = usage(end)
        if self._usage_template is None:
            return sse({**self._head(self.chunk_object), "choices": [], "usage": counts})
        # usage()'s own keys and order, which the template was made from.
        numbers = (str(n).encode() for n in counts.values())
        parts = self._usage_template
        return parts[0] + b"".join(n + part for n, part in zip(numbers, parts[1:], strict=True))

    def finish_chunk(self, reason: str, first: bool = False) -> bytes:
        """`chunk(None, reason, first)`, from the template where there is one."""
        if self._finish_template is None or first:
            return self.chunk(None, reason, first=first)
        before, after = self._finish_template
        return before + json.dumps(reason).encode() + after

    def prepare_end(self) -> None:
        """Templates for the finish and usage chunks, so that a stream's end
        costs a splice as its tokens do (whole, they took 0.1 ms on the
        stream's last bytes). Made between tokens, off the first one's path."""
        before, after = self.chunk(None, _HOLE).split(_HOLE_JSON)
        self._finish_template = (before, after)
        counts = dict.fromkeys(usage({}), _HOLE)
        usage_chunk = {**self._head(self.chunk_object), "choices": [], "usage": counts}
        self._usage_template = sse(usage_chunk).split(_HOLE_JSON)


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


async def worker_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    """The worker's SSE byte stream as event dicts, up to (not including) [DONE]."""
    async for batch in worker_event_batches(chunks):
        for event in batch:
            yield event


async def worker_event_batches(
    chunks: AsyncIterator[bytes], sliced: bool = False
) -> AsyncIterator[list[dict[str, Any]]]:
    """The same, as the events each piece of the stream completed: a route that
    answers a batch with one write sends once for what arrived at once (the
    last token, the end and [DONE] of a stream often come together).
    `sliced`: a token event comes as {"type": "token", "literal": <its text's
    JSON string>}, cut out of the worker's bytes instead of decoded."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        if b"\n\n" not in buffer:
            continue
        *frames, buffer = buffer.split(b"\n\n")
        batch: list[dict[str, Any]] = []
        for frame in frames:
            if not frame.startswith(b"data: "):
                continue
            data = frame[len(b"data: ") :]
            if data == b"[DONE]":
                if batch:
                    yield batch
                return
            literal = token_literal(data) if sliced else None
            batch.append({"type": "token", "literal": literal} if literal else json.loads(data))
        if batch:
            yield batch


def token_literal(data: bytes) -> bytes | None:
    """A token event's text as the JSON string the worker wrote, sliced out of
    `{"type": "token", "t": "...", "i": N}` (rbee_wire's encoding, fields in
    that order); None for any other shape, which is then decoded whole."""
    if not data.startswith(_TOKEN_HEAD) or not data.endswith(b"}"):
        return None
    end = data.rfind(_TOKEN_INDEX)
    literal = data[len(_TOKEN_HEAD) : end]
    if end < 0 or len(literal) < 2 or not literal.startswith(b'"') or not literal.endswith(b'"'):
        return None
    return literal
