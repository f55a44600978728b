"""The chat route's stream reads the worker's stream to its end once its
client has the whole answer: the worker's `[DONE]` and its body's end often
come a moment after its `end` event, and a worker connection closed before
them cannot be kept, so the next request to that worker would open another
(an SSH channel or a TCP connection) before it could be written; the answer
that is not streamed does the same. A client that leaves mid-stream still
closes the worker's stream at once."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from rbee_queen.api import openai
from rbee_queen.api import openai_format as fmt
from rbee_queen.api.event_stream import EventStreamResponse
from rbee_wire.codec import SSE_DONE
from rbee_wire.worker_events import End, Token, encode
from tests.test_event_stream import SCOPE, Stream, _bodies, _quiet_receive, _sender

END = encode(
    End(
        type="end",
        tokens_out=2,
        decode_time_ms=3,
        stop_reason="EOS",
        usage={
            "prompt_tokens": 1,
            "completion_tokens": 2,
            "total_tokens": 3,
            "time_to_first_token_ms": 1,
            "tokens_per_second": 600.0,
        },
    )
)


def _token(text: str, index: int) -> bytes:
    return encode(Token(type="token", t=text, i=index))


async def _answer(stream: Stream) -> list[tuple[bytes, bool]]:
    shape = fmt.Shape("chat", "tiny", "job-0123")
    sent: list[dict[str, Any]] = []
    body = openai._stream(shape, stream.body(), include_usage=False)
    async with asyncio.timeout(5):
        response = EventStreamResponse(body, on_error=openai._error_chunk)
        await response(SCOPE, _quiet_receive, _sender([], sent))
    return _bodies(sent)


async def test_chat_stream_reads_the_worker_stream_past_its_end_event() -> None:
    stream = Stream([_token("a", 0), _token("b", 1), END, SSE_DONE])
    bodies = await _answer(stream)
    assert bodies[-1][0].endswith(SSE_DONE) and bodies[-1][1] is False
    last_chunk = json.loads(bodies[-1][0].split(b"\n\n")[0].removeprefix(b"data: "))
    assert last_chunk["choices"][0]["finish_reason"] == "stop"
    assert stream.finished and stream.closed  # read to its end: the connection is kept


async def test_chat_stream_whose_end_and_done_come_together_is_read_to_its_end() -> None:
    stream = Stream([_token("a", 0), END + SSE_DONE])
    bodies = await _answer(stream)
    assert [more for _, more in bodies] == [True, False]
    assert stream.finished and stream.closed


async def test_chat_answer_not_streamed_reads_the_worker_stream_past_its_end_event() -> None:
    stream = Stream([_token("a", 0), _token("b", 1), END, SSE_DONE])
    async with asyncio.timeout(5):
        text, end = await openai._collect(stream.body())
    assert text == "ab" and end["type"] == "end"
    assert stream.finished  # read to its end: the connection is kept


async def test_a_client_that_leaves_still_closes_the_worker_stream_at_once() -> None:
    stream = Stream([_token("a", 0)], then_wait=True)
    shape = fmt.Shape("chat", "tiny", "job-0123")
    sent: list[dict[str, Any]] = []

    async def leaves() -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"type": "http.disconnect"}

    body = openai._stream(shape, stream.body(), include_usage=False)
    async with asyncio.timeout(5):
        response = EventStreamResponse(body, on_error=openai._error_chunk)
        await response(SCOPE, leaves, _sender([], sent))
    assert stream.closed and not stream.finished
