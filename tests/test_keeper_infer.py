"""rbee-keeper infer against a stand-in for the queen's HTTP surface
(tests/keeper_support.py): tokens printed as they arrive, the task sent, errors
before and during the stream, retries while all slots are busy, Ctrl-C and a
closed pipe.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from rbee_keeper.cli import main
from tests.keeper_support import (
    StandinQueen,
    keeper,
    one_error_line,
    read_until,
    running_standin,
    tokens_then_end,
)


@pytest.fixture
def queen() -> Iterator[StandinQueen]:
    with running_standin() as state:
        yield state


# --- infer ------------------------------------------------------------------


def test_infer_prints_tokens_as_they_arrive(queen: StandinQueen) -> None:
    first_token_seen = threading.Event()
    queen.stream = tokens_then_end("Hello", " world")
    queen.stream.insert(2, first_token_seen)  # hold the rest until the test saw "Hello"
    argv = ["infer", "--node", "gpu1", "--model", "file:/models/tiny", "--prompt", "hi"]
    with keeper(*argv, "--queen-url", queen.url) as process:
        try:
            assert read_until(process.stdout, b"Hello") == b"Hello"
            assert [event["type"] for event in queen.sent] == ["started", "token"]
            first_token_seen.set()
            out, err = process.communicate(timeout=30)
        finally:
            process.kill()

    assert process.returncode == 0
    assert out == b" world\n"
    assert err.decode().strip() == "2 tokens, stop_reason EOS, decode 50 ms (40.0 tokens/s)"


def test_infer_sends_the_task(queen: StandinQueen, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["infer", "--node", "gpu1", "--model", "file:/models/tiny", "--prompt", "hi"]
    argv += ["--max-tokens", "3", "--temperature", "0", "--seed", "7", "--queen-url", queen.url]
    assert main(argv) == 0

    task = {"node": "gpu1", "model": "file:/models/tiny", "prompt": "hi", "max_tokens": 3}
    assert queen.requests[-1] == ("POST", "/v2/tasks", {**task, "temperature": 0.0, "seed": 7})
    assert capsys.readouterr().out == "Hello, world\n"


def test_infer_sends_sampling_flags_and_may_leave_the_node_to_routing(
    queen: StandinQueen, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["infer", "--model", "tiny", "--prompt", "hi", "--top-p", "0.9", "--top-k", "40"]
    argv += ["--min-p", "0.05", "--repetition-penalty", "1.1", "--stop", "\n", "--stop", "END"]
    assert main([*argv, "--queen-url", queen.url]) == 0

    sent = queen.requests[-1][2]
    assert "node" not in sent and sent["model"] == "tiny"
    assert (sent["top_p"], sent["top_k"], sent["min_p"]) == (0.9, 40, 0.05)
    assert (sent["repetition_penalty"], sent["stop"]) == (1.1, ["\n", "END"])


def test_infer_json_prints_one_event_a_line(
    queen: StandinQueen, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["infer", "--node", "gpu1", "--model", "m:x", "--prompt", "hi", "--json"]
    assert main([*argv, "--queen-url", queen.url]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events == queen.stream


def test_infer_error_event_exits_1(queen: StandinQueen) -> None:
    queen.stream = tokens_then_end("Hel")[:2]
    queen.stream.append({"type": "error", "code": "INFERENCE_FAILED", "message": "CUDA\nOOM"})
    argv = ["infer", "--node", "gpu1", "--model", "m:x", "--prompt", "hi"]
    run = subprocess.run(
        [sys.executable, "-m", "rbee_keeper", *argv, "--queen-url", queen.url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 1
    assert run.stdout == "Hel\n"
    assert one_error_line(run.stderr) == "error: [INFERENCE_FAILED] CUDA OOM"


def test_infer_stream_cut_short_exits_1(
    queen: StandinQueen, capsys: pytest.CaptureFixture[str]
) -> None:
    queen.stream, queen.send_done = tokens_then_end("Hel")[:2], False
    argv = ["infer", "--node", "gpu1", "--model", "m:x", "--prompt", "hi"]
    assert main([*argv, "--queen-url", queen.url]) == 1
    captured = capsys.readouterr()
    assert captured.out == "Hel\n"
    expected = f"error: [QUEEN_UNAVAILABLE] the queen at {queen.url} closed the stream"
    assert one_error_line(captured.err) == f"{expected} before it finished"


def test_infer_error_before_the_stream(
    queen: StandinQueen, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["infer", "--node", "gpu7", "--model", "m:x", "--prompt", "hi"]
    assert main([*argv, "--queen-url", queen.url]) == 1
    assert one_error_line(capsys.readouterr().err) == "error: [NODE_NOT_FOUND] no node named gpu7"


def test_infer_retries_when_all_slots_are_busy(
    queen: StandinQueen, capsys: pytest.CaptureFixture[str]
) -> None:
    queen.busy_answers = 1
    argv = ["infer", "--node", "gpu1", "--model", "m:x", "--prompt", "hi"]
    assert main([*argv, "--queen-url", queen.url]) == 0
    captured = capsys.readouterr()
    assert captured.out == "Hello, world\n"
    assert "all slots on gpu1 are busy; retrying in 1 s" in captured.err
    assert queen.paths().count("/v2/tasks") == 2


def test_infer_ctrl_c_closes_the_stream_and_exits_130(queen: StandinQueen) -> None:
    never = threading.Event()
    queen.stream = [*tokens_then_end("Hello")[:2], never, *tokens_then_end("late")[1:]]
    argv = ["infer", "--node", "gpu1", "--model", "m:x", "--prompt", "hi", "--queen-url", queen.url]
    with keeper(*argv) as process:
        try:
            read_until(process.stdout, b"Hello")
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=30)
        finally:
            process.kill()

    assert process.returncode == 130
    assert out == b"\n"  # the line of tokens is ended
    assert err.decode().strip() == "interrupted"
    assert queen.stream_abandoned.wait(timeout=10), "the stand-in never saw the disconnect"
    assert [event["type"] for event in queen.sent] == ["started", "token"]


def test_infer_into_a_closed_pipe_stops_quietly(queen: StandinQueen) -> None:
    first_token_seen = threading.Event()
    queen.stream = tokens_then_end("Hello", " world")
    queen.stream.insert(2, first_token_seen)
    argv = ["infer", "--node", "gpu1", "--model", "m:x", "--prompt", "hi", "--queen-url", queen.url]
    with keeper(*argv) as process:
        assert process.stdout is not None and process.stderr is not None
        try:
            read_until(process.stdout, b"Hello")
            process.stdout.close()  # like `| head -c 5` exiting
            first_token_seen.set()
            process.wait(timeout=30)
        finally:
            process.kill()
        err = process.stderr.read().decode()

    assert process.returncode == 1
    assert "Traceback" not in err and "BrokenPipe" not in err
