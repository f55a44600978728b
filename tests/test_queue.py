"""The request queue against a real queen, node and one-slot worker: requests
that find the slot busy wait in arrival order, a full queue answers 429 with
Retry-After (which the official openai client honours and gets through), and
a waiting request whose client leaves or whose deadline passes leaves at once.

The worker is held busy by freezing it (SIGSTOP) mid-stream, so "busy" lasts
exactly as long as the test needs, whatever the machine's speed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest

from tests.plugins.procs import worker_pids
from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.sshd import SshServer
from tests.pressure_support import frozen_slot_of, in_thread, metric, wait_until

SHORT = {"model": "one", "prompt": "Hi", "max_tokens": 3, "temperature": 0}


@pytest.fixture(scope="module")
def one_slot(
    tmp_path_factory: pytest.TempPathFactory, sshd: SshServer, tiny_model_dir: Path
) -> Iterator[QueenProcess]:
    """A queen whose model `one` runs on one node with one slot, its worker warm."""
    home = tmp_path_factory.mktemp("queue-home")
    queen = start_queen(home)
    try:
        queen.add_node(sshd.node_body("a", home / "node", accept_new_host_key=True))
        entry = {"name": "one", "model_ref": f"file:{tiny_model_dir}", "nodes": ["a"], "slots": 1}
        with queen.client() as c:
            assert c.post("/v2/registry/models/add", json=entry).status_code == 201
            assert c.post("/v1/completions", json=SHORT).status_code == 200  # starts it
        yield queen
    finally:
        stop_queen(queen)


def set_queue(queen: QueenProcess, max_length: int, max_wait_s: float = 60) -> None:
    """The queue's bounds through queen.toml and a reload (both are reloadable)."""
    text = f"[queue]\nmax_length = {max_length}\nmax_wait_s = {max_wait_s}\n"
    (queen.home / "queen.toml").write_text(text)
    with queen.client() as c:
        answer = c.post("/v2/admin/reload").json()
    assert answer["ok"], answer


@contextmanager
def frozen_slot(queen: QueenProcess) -> Iterator[list[str]]:
    """The one slot taken by a stream whose worker is frozen (see pressure_support)."""
    (pid,) = worker_pids(under=str(queen.home))
    with frozen_slot_of(queen, pid, "one") as lines:
        yield lines


def depth(queen: QueenProcess) -> float:
    return metric(queen, "rbee_queue_depth")


def left(queen: QueenProcess, outcome: str) -> float:
    return metric(queen, rf'rbee_queue_wait_seconds_count\{{model="[^"]+",outcome="{outcome}"\}}')


def post(queen: QueenProcess, body: dict[str, object]) -> httpx.Response:
    with queen.client() as c:
        return c.post("/v1/completions", json=body)


def test_waiting_requests_are_served_in_arrival_order(one_slot: QueenProcess) -> None:
    set_queue(one_slot, max_length=16)
    done: list[int] = []

    def ask(i: int) -> int:
        with one_slot.client() as c:
            r = c.post("/v1/completions", json={**SHORT, "max_tokens": 2 + i})
        done.append(i)
        return r.status_code

    threads = []
    with frozen_slot(one_slot) as first:
        for i in range(7):
            threads.append(in_thread(lambda i=i: ask(i)))
            wait_until(lambda i=i: depth(one_slot) == i + 1, f"request {i} queued")
    for thread, _ in threads:
        thread.join(60)
    assert any('"type": "end"' in line for line in first)  # the held one completed too
    assert [out for _, out in threads] == [[200]] * 7
    assert done == list(range(7))
    assert depth(one_slot) == 0 and left(one_slot, "served") >= 7


def test_full_queue_answers_429_with_retry_after(one_slot: QueenProcess) -> None:
    set_queue(one_slot, max_length=1)
    with frozen_slot(one_slot):
        waiting, out = in_thread(lambda: post(one_slot, SHORT))
        wait_until(lambda: depth(one_slot) == 1, "one request queued")
        with one_slot.client() as c:
            chat = {"model": "one", "messages": [{"role": "user", "content": "Hi"}]}
            refused = c.post("/v1/chat/completions", json={**chat, "max_tokens": 3})
            tasks = c.post("/v2/tasks", json=SHORT)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "queue_full"  # OpenAI's shape: lower case
    assert tasks.status_code == 429 and tasks.json()["error"]["code"] == "QUEUE_FULL"
    assert tasks.json()["error"]["details"] == {"depth": 1, "max_length": 1}
    waiting.join(60)
    assert out[0].status_code == 200  # type: ignore[attr-defined]


def test_the_openai_clients_own_retry_gets_through(one_slot: QueenProcess) -> None:
    set_queue(one_slot, max_length=1)
    client = openai.OpenAI(base_url=f"{one_slot.url}/v1", api_key=one_slot.token, max_retries=3)
    refused_before = left(one_slot, "full")
    with frozen_slot(one_slot):
        waiting, _ = in_thread(lambda: post(one_slot, SHORT))
        wait_until(lambda: depth(one_slot) == 1, "one request queued")
        asking, answer = in_thread(
            lambda: client.completions.create(model="one", prompt="Hi", max_tokens=3)
        )
        wait_until(lambda: left(one_slot, "full") > refused_before, "the client refused once")
    asking.join(60)
    waiting.join(60)
    assert answer and answer[0].choices[0].text is not None  # type: ignore[attr-defined]
    assert answer[0].usage.completion_tokens > 0  # type: ignore[attr-defined]


def test_a_waiting_request_whose_client_leaves_or_deadline_passes_leaves(
    one_slot: QueenProcess,
) -> None:
    set_queue(one_slot, max_length=8)
    gone_before, cancelled_before = left(one_slot, "gone"), left(one_slot, "cancelled")
    with frozen_slot(one_slot), one_slot.client() as c:
        with pytest.raises(httpx.ReadTimeout):
            c.post("/v1/completions", json=SHORT, timeout=httpx.Timeout(10, read=0.5))
        wait_until(lambda: left(one_slot, "gone") == gone_before + 1, "the left request gone")
        assert depth(one_slot) == 0
        deadline_ms = str(int((time.time() + 0.5) * 1000))
        late = c.post("/v2/tasks", json=SHORT, headers={"x-request-deadline": deadline_ms})
        assert late.status_code == 504 and late.json()["error"]["code"] == "REQUEST_TIMEOUT"
        assert depth(one_slot) == 0
        assert left(one_slot, "cancelled") == cancelled_before + 1
