"""How a token stream leaves the queen and the worker: the queen's response
sends its head before it asks for the first piece (the worker prefills
meanwhile), renders an error raised before the first piece in the route's
shape, lets the accepted worker go when the body never started, sends the piece that ends the
stream (`[DONE]`) with the body's end in one message, reads its stream to the
end after that (the worker's connection is kept), and ends the stream when its
client leaves; the worker's response ends its body with its last piece too.
The chat route splices the worker's own JSON string of a token's text into
the chunk, which must be the chunk a decode and encode would make, and its
end's finish and usage chunks into templates made after the first token."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from rbee_queen.api.event_stream import EventStreamResponse
from rbee_queen.api.openai_format import Shape, finish_reason, token_literal
from rbee_queen.errors import AllSlotsBusy, RbeeError
from rbee_wire.codec import SSE_DONE
from rbee_wire.worker_events import Token, encode
from rbee_worker import events
from rbee_worker.backends.base import GenerationResult, StopReason
from rbee_worker.streaming import JobStream, JobStreamResponse
from tests.test_relay_format import PIECES

SCOPE = {"type": "http", "asgi": {"spec_version": "2.3"}}


class Stream:
    """A relay's pieces, noting when each is taken and whether it was read to its end."""

    def __init__(self, pieces: list[bytes], then_wait: bool = False) -> None:
        self.pieces = pieces
        self.then_wait = then_wait
        self.log: list[str] = []
        self.finished = False  # ran past its last piece, as a stream read to its end
        self.closed = False

    async def body(self) -> AsyncGenerator[bytes, None]:
        try:
            for piece in self.pieces:
                self.log.append("piece")
                yield piece
            if self.then_wait:
                await asyncio.Event().wait()  # a worker that goes on; the client leaves
            self.finished = True
        finally:
            self.closed = True


async def _quiet_receive() -> dict[str, Any]:
    await asyncio.Event().wait()
    return {}


def _sender(log: list[str], sent: list[dict[str, Any]]) -> Any:
    async def send(message: dict[str, Any]) -> None:
        log.append(message["type"])
        sent.append(message)

    return send


def _no_error(exc: RbeeError) -> bytes:
    raise AssertionError(f"on_error called for a stream that raised nothing: {exc!r}")


def _response(body: AsyncGenerator[bytes, None], **kw: Any) -> EventStreamResponse:
    return EventStreamResponse(body, on_error=kw.pop("on_error", _no_error), **kw)


def _bodies(sent: list[dict[str, Any]]) -> list[tuple[bytes, bool]]:
    return [(m["body"], m["more_body"]) for m in sent if m["type"] == "http.response.body"]


async def test_queen_sends_its_head_before_the_first_piece_and_the_end_with_the_last() -> None:
    last = b"data: {}\n\n" + SSE_DONE
    stream = Stream([b"data: 1\n\n", b"data: 2\n\n", last])
    sent: list[dict[str, Any]] = []
    await _response(stream.body())(SCOPE, _quiet_receive, _sender(stream.log, sent))
    assert stream.log[:2] == ["http.response.start", "piece"]
    assert sent[0]["status"] == 200
    assert (b"content-type", b"text/event-stream; charset=utf-8") in sent[0]["headers"]
    assert _bodies(sent) == [(b"data: 1\n\n", True), (b"data: 2\n\n", True), (last, False)]
    assert stream.finished and stream.closed


async def test_queen_ends_a_stream_answered_in_one_piece_with_it() -> None:
    only = b"data: 1\n\n" + SSE_DONE  # a one-token answer comes whole
    stream = Stream([only])
    sent: list[dict[str, Any]] = []
    await _response(stream.body())(SCOPE, _quiet_receive, _sender(stream.log, sent))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert _bodies(sent) == [(only, False)]


async def test_queen_stream_without_done_ends_with_an_empty_piece() -> None:
    stream = Stream([b"data: 1\n\n"])
    sent: list[dict[str, Any]] = []
    await _response(stream.body())(SCOPE, _quiet_receive, _sender(stream.log, sent))
    assert _bodies(sent) == [(b"data: 1\n\n", True), (b"", False)]


async def test_an_error_before_the_first_piece_is_the_streams_one_event() -> None:
    async def fails() -> AsyncGenerator[bytes, None]:
        raise AllSlotsBusy("every slot is busy")
        yield b""  # an async generator that raises at its first step

    rendered: list[str] = []

    def render(exc: RbeeError) -> bytes:
        rendered.append(exc.code)
        return b"data: {}\n\n" + SSE_DONE

    sent: list[dict[str, Any]] = []
    await _response(fails(), on_error=render)(SCOPE, _quiet_receive, _sender([], sent))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert rendered == ["ALL_SLOTS_BUSY"]
    assert _bodies(sent) == [(b"data: {}\n\n" + SSE_DONE, False)]


async def test_release_runs_when_the_body_never_started() -> None:
    stream = Stream([b"data: 1\n\n"])
    released: list[bool] = []

    async def release() -> None:
        released.append(stream.log == [])  # the body never asked for a piece

    async def refused(message: dict[str, Any]) -> None:
        raise OSError("the client is gone")  # the head's write fails

    with pytest.raises(OSError):
        await _response(stream.body(), release=release)(SCOPE, _quiet_receive, refused)
    assert released == [True]


async def test_a_client_that_leaves_ends_the_queen_stream() -> None:
    stream = Stream([b"data: 1\n\n"], then_wait=True)
    sent: list[dict[str, Any]] = []

    async def leaves() -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"type": "http.disconnect"}

    response = _response(stream.body())
    async with asyncio.timeout(5):  # in this task: its cancel must be taken back
        await response(SCOPE, leaves, _sender(stream.log, sent))
    assert stream.closed and not stream.finished
    assert _bodies(sent) == [(b"data: 1\n\n", True)]
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0


async def test_worker_ends_its_body_with_the_piece_that_holds_done() -> None:
    last = b"data: {}\n\n" + SSE_DONE
    stream = Stream([b"data: started\n\n", last])
    events = SimpleNamespace(events=stream.body)
    response = JobStreamResponse(cast(JobStream, events), cast(Any, None))
    sent: list[dict[str, Any]] = []
    await response.stream_response(_sender(stream.log, sent))
    assert _bodies(sent) == [(b"data: started\n\n", True), (last, False)]
    assert stream.finished


@pytest.mark.parametrize("kind", ["chat", "text"])
@pytest.mark.parametrize("piece", [*PIECES, 'a", "i": 5', "back\\"])
def test_sliced_token_makes_the_chunk_a_decode_would(kind: str, piece: str) -> None:
    shape = Shape(kind, "tiny", "job-0123")
    event = encode(Token(type="token", t=piece, i=7))
    literal = token_literal(event.removeprefix(b"data: ").removesuffix(b"\n\n"))
    assert literal is not None
    assert shape.token_chunk_of(literal) == shape.chunk(piece)
    assert shape.token_chunk_of(literal, first=True) == shape.chunk(piece, first=True)


@pytest.mark.parametrize(
    "data",
    [b'{"type": "end", "tokens_out": 1}', b'{"type": "token", "i": 1, "t": "x"}', b"[DONE]"],
)
def test_other_events_are_not_sliced(data: bytes) -> None:
    assert token_literal(data) is None


@pytest.mark.parametrize("kind", ["chat", "text"])
@pytest.mark.parametrize(("reason", "tokens", "prompt"), [("MAX_TOKENS", 64, 7), ("EOS", 0, 0)])
def test_the_ends_templates_make_the_chunks_a_whole_encode_would(
    kind: str, reason: str, tokens: int, prompt: int
) -> None:
    """The finish and usage chunks spliced into templates made after the
    first token, from the worker's own `end` event, against the same encoded
    whole (the first token's finish chunk, with its role, is always whole)."""
    data = events.end(GenerationResult(StopReason(reason), tokens, prompt), 34, 3)
    end = json.loads(data.removeprefix(b"data: "))
    shape = Shape(kind, "tiny", "job-0123")
    finish = finish_reason(end)
    whole = (shape.finish_chunk(finish), shape.usage_chunk(end))
    shape.prepare_end()
    assert (shape.finish_chunk(finish), shape.usage_chunk(end)) == whole
    assert whole[0] == shape.chunk(None, finish)
    assert shape.finish_chunk(finish, first=True) == shape.chunk(None, finish, first=True)
    assert json.loads(whole[1].removeprefix(b"data: "))["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": tokens,
        "total_tokens": prompt + tokens,
    }
