"""rbee_wire: the run-time check of a message against its TypedDict, and the
definitions against the code that produces them."""

from __future__ import annotations

from typing import get_args

from rbee_wire import codec, helper_ops, queen_events, worker_events
from rbee_wire.typecheck import problems
from rbee_worker import events
from rbee_worker.backends.base import GenerationResult, StopReason


def test_the_check_finds_a_wrong_type_a_missing_key_and_a_stray_one() -> None:
    good = {"stopped": True, "forced": False, "was_running": True}
    assert problems(good, helper_ops.StopWorkerResult) == []
    assert problems({**good, "forced": 1}, helper_ops.StopWorkerResult) == [
        "StopWorkerResult.forced: expected bool, got 1"
    ]
    assert problems({"stopped": True, "forced": False}, helper_ops.StopWorkerResult) == [
        "StopWorkerResult: missing 'was_running'"
    ]
    assert problems({**good, "extra": 1}, helper_ops.StopWorkerResult) == [
        "StopWorkerResult: unexpected 'extra'"
    ]


def test_optional_keys_literals_and_numbers() -> None:
    node = {"type": "node", "node": "n1", "status": "ok", "latency_ms": 1, "last_error": None}
    assert queen_events.problems(node) == []  # `gpus` is optional; an int is a number
    assert queen_events.problems({**node, "gpus": [{"index": 0}]}) == []
    assert queen_events.problems({**node, "latency_ms": True}) != []  # a bool is no number
    assert queen_events.problems({**node, "type": "nodes"}) == ["queen event: unknown type 'nodes'"]
    bad_end = {"type": "end", "tokens_out": 1, "decode_time_ms": 1, "stop_reason": "DONE"}
    assert "End.stop_reason: 'DONE' not allowed" in worker_events.problems(bad_end)


def test_the_workers_stop_reasons_are_the_definitions() -> None:
    assert {r.value for r in StopReason} == set(get_args(worker_events.StopReason))


def test_every_event_the_worker_builds_fits_its_definition() -> None:
    result = GenerationResult(
        tokens_out=2,
        prompt_tokens=3,
        stop_reason=StopReason.STOP_SEQUENCE,
        stop_sequence="\n",
    )
    stream = b"".join(
        [
            events.started("job-1", "tiny"),
            events.token("hi", 0),
            events.end(result, decode_time_ms=5, first_token_ms=None),
            events.error("INFERENCE_FAILED", "boom"),
            events.DONE,
        ]
    )
    messages = codec.sse_messages(stream)
    assert [m["type"] for m in messages] == ["started", "token", "end", "error"]
    assert [worker_events.problems(m) for m in messages] == [[], [], [], []]
    assert worker_events.last_of(stream, "end") == messages[2]


def test_the_queens_own_error_event_fits_and_ends_the_stream() -> None:
    body = worker_events.error("WORKER_DIED", "gone")
    assert body.endswith(codec.SSE_DONE)
    (message,) = codec.sse_messages(body)
    assert worker_events.problems(message) == []
