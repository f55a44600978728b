"""The dashboard's fleet picture (rbee_keeper.tui.fleet) fed the events a real
queen published: the loopback node added, two inferences, the worker stopped."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rbee_keeper.tui.fleet import RATE_WINDOW_S, Fleet

if TYPE_CHECKING:
    from tests.plugins.queen_events import QueenRecording

# Not imported above: the plugin registers first, so pytest rewrites its asserts.
pytest_plugins = ["tests.plugins.queen_events"]


def replayed(events: list[dict[str, Any]]) -> Fleet:
    fleet = Fleet()
    for event in events:
        fleet.apply(event, now=float(event.get("at") or 0.0))
    return fleet


def test_the_recording_is_a_snapshot_then_the_scenario(queen_recording: QueenRecording) -> None:
    events = queen_recording.events
    assert events[0]["type"] == "snapshot"
    assert len(queen_recording.of_type("request_started")) == queen_recording.inferences
    assert len(queen_recording.of_type("request_finished")) == queen_recording.inferences
    states = [e["state"] for e in queen_recording.of_type("worker")]
    assert states[0] == "spawning" and states[-2:] == ["draining", "stopped"]


def test_worker_states_follow_the_queen_and_a_stopped_worker_goes(
    queen_recording: QueenRecording,
) -> None:
    fleet = Fleet()
    worker_id = queen_recording.worker_id
    for event in queen_recording.events:
        fleet.apply(event)
        if event["type"] != "worker":
            continue
        if event["state"] == "stopped":
            assert worker_id not in fleet.workers
        else:
            row = fleet.workers[worker_id]
            assert row.data["state"] == event["state"]
            assert row.data["node"] == queen_recording.node
            assert row.data["model_ref"] == queen_recording.model_ref


def test_after_a_real_request_finishes_no_request_is_live(
    queen_recording: QueenRecording,
) -> None:
    fleet = Fleet()
    worker_id = queen_recording.worker_id
    for event in queen_recording.events:
        fleet.apply(event)
        if event["type"] == "request_started":
            assert list(fleet.workers[worker_id].in_flight) == [event["job_id"]]
            assert fleet.requests_in_flight == 1
        elif event["type"] == "request_finished":
            assert fleet.workers[worker_id].in_flight == {}, "the finished request is still live"
            assert fleet.requests_in_flight == 0


def test_finished_requests_give_the_rates_and_time_to_first_token(
    queen_recording: QueenRecording,
) -> None:
    finished = queen_recording.of_type("request_finished")
    before_stop = queen_recording.until(lambda e: e is finished[-1])
    fleet = replayed(before_stop)
    row = fleet.workers[queen_recording.worker_id]
    assert row.requests_done == queen_recording.inferences
    assert list(row.rates) == [e["tokens_per_s"] for e in finished]
    assert row.last_ttft_ms == finished[-1]["ttft_ms"]
    tokens = sum(e["tokens_out"] for e in finished)
    assert tokens > 0
    assert fleet.tokens_per_second(now=finished[-1]["at"]) == tokens / RATE_WINDOW_S
    assert fleet.tokens_per_second(now=finished[-1]["at"] + 2 * RATE_WINDOW_S) == 0.0


def test_the_whole_recording_leaves_the_node_and_no_worker(
    queen_recording: QueenRecording,
) -> None:
    fleet = replayed(queen_recording.events)
    assert fleet.connected and fleet.last_error is None
    assert fleet.workers == {}
    assert fleet.nodes[queen_recording.node]["status"] == "reachable"
    assert fleet.workers_on(queen_recording.node) == []


def test_a_snapshot_taken_mid_scenario_holds_the_node_and_its_idle_worker(
    queen_recording: QueenRecording,
) -> None:
    fleet = replayed([queen_recording.live_snapshot])
    (row,) = fleet.workers_on(queen_recording.node)
    assert row.worker_id == queen_recording.worker_id
    assert row.data["state"] == "idle" and row.in_flight == {}
    assert fleet.nodes[queen_recording.node]["node_name"] == queen_recording.node
