"""The queen's deferred bookkeeping (rbee_queen/deferred.py): done a moment
later, in order, held back while a request is unanswered (within a bound), at
once when flushed; and the event bus and the audit log on top of it."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
import weakref
from pathlib import Path
from types import SimpleNamespace

import pytest
from starlette.types import Message, Receive, Scope, Send

from rbee_queen import deferred
from rbee_queen.api.front import Front
from rbee_queen.audit import AuditLog, verify
from rbee_queen.eventbus import EventBus
from rbee_wire.queen_events import HealthFailed


def tick(n: int) -> HealthFailed:
    return HealthFailed(type="health_failed", worker_id=f"w-{n}", reason="tick")


def test_outside_an_event_loop_the_work_is_done_at_once() -> None:
    done: list[int] = []
    deferred.later(lambda: done.append(1))
    assert done == [1]


async def test_the_work_is_done_a_moment_later_in_the_order_asked() -> None:
    done: list[int] = []
    for n in range(5):
        deferred.later(lambda n=n: done.append(n))
    await asyncio.sleep(0)
    assert done == []  # not at the loop's next turn: the client's CPU first
    await asyncio.sleep(deferred.DELAY_S * 5)
    assert done == [0, 1, 2, 3, 4]


async def test_an_unanswered_request_holds_the_work_until_its_answer_starts() -> None:
    done: list[str] = []
    hold = deferred.Hold()
    deferred.later(lambda: done.append("figures"))
    await asyncio.sleep(deferred.DELAY_S * 5)
    assert done == []
    hold.release()
    hold.release()  # once or more: the count is right either way
    await asyncio.sleep(deferred.DELAY_S * 5)
    assert done == ["figures"]


async def test_a_request_that_never_answers_holds_the_work_no_longer_than_the_bound() -> None:
    done: list[float] = []
    hold = deferred.Hold()
    started = time.monotonic()
    deferred.later(lambda: done.append(time.monotonic() - started))
    try:
        await asyncio.sleep(deferred.MAX_DELAY_S * 4)
    finally:
        hold.release()
    assert len(done) == 1
    assert deferred.MAX_DELAY_S <= done[0] < deferred.MAX_DELAY_S * 4


async def test_flush_does_it_now_and_a_failing_call_stops_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    done: list[int] = []
    deferred.later(lambda: done.append(1))
    deferred.later(lambda: 1 / 0)
    deferred.later(lambda: done.append(3))
    with caplog.at_level(logging.ERROR, "rbee.queen.deferred"):
        deferred.flush()
    assert done == [1, 3]
    assert "deferred bookkeeping failed" in caplog.text
    await asyncio.sleep(deferred.DELAY_S * 5)
    assert done == [1, 3]  # nothing runs twice


async def test_events_are_numbered_when_published_and_handed_on_in_that_order() -> None:
    bus = EventBus()
    seen: list[tuple[int, str]] = []
    bus.add_listener(lambda e: seen.append((e["seq"], e["worker_id"])))
    built: list[str] = []

    def build() -> HealthFailed:
        built.append("now")
        return tick(2)

    assert bus.publish(tick(1))["seq"] == 1
    bus.publish_built(build)  # its place is taken now, its making waits
    bus.publish(tick(3))
    assert seen == [] and built == []
    await asyncio.sleep(deferred.DELAY_S * 5)
    assert seen == [(1, "w-1"), (2, "w-2"), (3, "w-3")]
    assert built == ["now"]


async def test_a_new_subscriber_gets_only_what_is_published_after_it() -> None:
    bus = EventBus()
    bus.publish(tick(1))  # before: delivered to the subscribers there were
    sub = bus.subscribe()
    bus.publish(tick(2))
    await asyncio.sleep(deferred.DELAY_S * 5)
    first = await asyncio.wait_for(anext(aiter(sub.events())), 1)
    assert first["worker_id"] == "w-2"


async def test_an_audit_entry_written_now_comes_after_the_ones_deferred_before_it(
    tmp_path: Path,
) -> None:
    audit = AuditLog(tmp_path / "audit")
    audit.record_soon("inference.started", job_id="j1")
    audit.record("key.created", key="k")  # synchronous: the deferred one first
    text = next((tmp_path / "audit").iterdir()).read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert [e["event"] for e in lines] == ["inference.started", "key.created"]
    assert verify(tmp_path / "audit").ok  # the chain is whole


async def test_a_stream_holds_the_work_until_its_first_body_bytes_not_its_head() -> None:
    """A stream's head leaves while the worker prefills; its first token is
    the body's first piece: bookkeeping held until then stays off its path."""
    done: list[str] = []
    first_token = asyncio.Event()

    async def stream(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        deferred.later(lambda: done.append("bookkeeping"))
        await first_token.wait()
        await send({"type": "http.response.body", "body": b"data: token\n\n", "more_body": True})
        await asyncio.sleep(deferred.DELAY_S * 5)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and message["body"]:
            assert done == []  # not run between the head and the first piece

    # A public path: the queen's front holds the work without a key to check.
    scope = {"type": "http", "method": "GET", "path": "/health", "headers": []}
    app = asyncio.create_task(Front(stream)(scope, receive, send))
    await asyncio.sleep(deferred.DELAY_S * 5)
    assert done == []  # the head has left; the body has not begun
    first_token.set()
    await app
    assert done == ["bookkeeping"]


async def test_a_request_is_timed_to_its_last_byte_and_counted_once() -> None:
    """Its duration ends at its last byte's write, not after the teardown that
    follows it (a stream's: the relay's end, the response's), and it is
    counted once however its app ends."""
    observed: list[tuple[int, float]] = []

    class Metrics:
        def observe_http(
            self, route: str, method: str, status: int, error: str | None, took: float
        ) -> None:
            observed.append((status, took))

    async def answer_then_teardown(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok", "more_body": False})
        await asyncio.sleep(0.3)  # the teardown, after the client has it all

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        pass

    services = SimpleNamespace(metrics=Metrics())
    app = SimpleNamespace(state=SimpleNamespace(services=services), routes=[])
    scope = {"type": "http", "method": "GET", "path": "/health", "headers": [], "app": app}
    await Front(answer_then_teardown)(scope, receive, send)
    deferred.flush()
    assert len(observed) == 1
    assert observed[0][0] == 200 and observed[0][1] < 0.2


def test_a_loop_that_ends_is_not_kept_alive_by_its_queue() -> None:
    async def queue_one() -> None:
        deferred.later(lambda: None)
        deferred.flush()

    loop = asyncio.new_event_loop()
    loop.run_until_complete(queue_one())
    loop.close()
    gone = weakref.ref(loop)
    del loop
    gc.collect()
    assert gone() is None
