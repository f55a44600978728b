"""The worker's generation thread hands the GIL to the event loop after the
first token, until the loop has written it: a generation thread that goes
straight on to the next token kept the GIL for up to its switch interval each
time it took it back, and traces put 0.08-2.9 ms between a first token made
and its loop having it. The real JobStream and response, in a running loop;
the backend is a scripted generator that notes, when it is asked for its
second token, whether the first had been written. At the end, the thread
queues the last event and the stream's end in one call: in two, the first
handed the loop the GIL, which wrote the last event alone and `[DONE]` in a
second write (every request, 40 of 40), a second wake-up of every reader on
the way."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from rbee_worker import streaming
from rbee_worker.backends.base import GenerationParams, GenerationResult, StopReason
from rbee_worker.jobs import Job, Slots
from rbee_worker.params import InferenceRequest
from rbee_worker.streaming import JobStream, JobStreamResponse


class Scripted:
    """Two tokens; at the second, whether the first was already written."""

    model_name = "scripted"

    def __init__(self, written: list[bytes]) -> None:
        self.written = written
        self.first_was_out: bool | None = None

    def generate(
        self, prompt: str, params: GenerationParams, cancel: threading.Event
    ) -> Iterator[str]:
        yield "alpha"
        self.first_was_out = any(b'"alpha"' in body for body in list(self.written))
        yield "beta"
        return GenerationResult(StopReason.MAX_TOKENS, 2)  # type: ignore[return-value]


async def _run(backend: Scripted) -> None:
    job = Job("job-1")
    slots = Slots(1)
    assert slots.try_claim(job)
    request = InferenceRequest("job-1", "hi", GenerationParams(max_tokens=2))
    stream = JobStream(backend, request, job, slots)  # type: ignore[arg-type]
    stream.start()

    async def send(message: dict[str, Any]) -> None:
        backend.written.append(message.get("body", b""))

    await JobStreamResponse(stream, job).stream_response(send)


async def test_the_first_token_is_written_before_the_second_is_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(streaming, "FIRST_TOKEN_HANDOFF_S", 30.0)  # no timing in the test
    backend = Scripted([])
    await _run(backend)
    assert backend.first_was_out is True
    assert b'"beta"' in b"".join(backend.written)  # and the stream went on


async def test_a_stream_nobody_reads_waits_no_longer_than_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(streaming, "FIRST_TOKEN_HANDOFF_S", 0.01)
    job = Job("job-2")
    slots = Slots(1)
    assert slots.try_claim(job)
    request = InferenceRequest("job-2", "hi", GenerationParams(max_tokens=2))
    backend = Scripted([])
    JobStream(backend, request, job, slots).start()  # type: ignore[arg-type]
    for _ in range(500):  # the thread finishes without anyone reading its events
        if slots.busy == 0:
            break
        threading.Event().wait(0.01)
    assert slots.busy == 0 and backend.first_was_out is False


async def test_the_last_event_and_done_leave_in_one_write() -> None:
    for _ in range(10):
        backend = Scripted([])
        await _run(backend)
        ends = [body for body in backend.written if b'"type": "end"' in body]
        assert len(ends) == 1 and ends[0].endswith(b"data: [DONE]\n\n"), backend.written[-2:]
        assert backend.written[-1] is ends[0]
