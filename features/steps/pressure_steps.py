"""Steps for a fleet under pressure: the request queue, failover and bounded
shutdown (features 200 and 210), on a real queen, real workers and the tiny
model behind the loopback sshd. A worker is held busy by freezing it (SIGSTOP)
mid-stream, so "busy" lasts exactly as long as a scenario needs."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from behave import given, then, when
from behave.runner import Context

from features.steps.inference_steps import expand, queen, sse_events, task
from features.steps.keeper_steps import add_local_node
from tests.plugins.procs import worker_pids
from tests.pressure_support import in_thread, wait_until


def metric(context: Context, name: str) -> float:
    with queen(context) as c:
        text = c.get("/metrics").text
    samples = [line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")]
    return float(samples[0]) if samples else 0.0


def run_task(
    context: Context, body: dict[str, Any], on_first_token: Callable[[], object] = lambda: None
) -> tuple[int, list[dict[str, Any]]]:
    """The task's status and its events, without the closing [DONE];
    `on_first_token` runs as its first token arrives (when it was served: with
    one slot, a task's first token comes only after the task before it ended,
    where the moments the clients finish reading may cross)."""
    with queen(context) as c, c.stream("POST", "/v2/tasks", json=body) as r:
        if r.status_code != 200:
            return r.status_code, [json.loads(r.read())]
        events: list[dict[str, Any]] = []
        for line in r.iter_lines():  # one at a time: the first token is noted as it comes
            for event in sse_events([line]):
                if event["type"] == "token" and not any(e["type"] == "token" for e in events):
                    on_first_token()
                if event["type"] != "DONE":
                    events.append(event)
        return r.status_code, events


@given("the request queue holds at most {count:d} request")
@given("the request queue holds at most {count:d} requests")
def step_queue_length(context: Context, count: int) -> None:
    (context.home / "queen.toml").write_text(f"[queue]\nmax_length = {count}\n")
    with queen(context) as c:
        assert c.post("/v2/admin/reload").json()["ok"]


@when('{count:d} more tasks for {ref} on "{node}" arrive one after another')
@given('{count:d} more task for {ref} on "{node}" waits in the queue')
def step_more_tasks(context: Context, count: int, ref: str, node: str) -> None:
    context.served: list[int] = []  # in the order their first token reached them
    context.waiting = []
    for i in range(count):

        def one(i: int = i) -> tuple[int, list[dict[str, Any]]]:
            # Greedy: sampled, the tiny model may end at EOS before any token.
            body = task(expand(context, ref), node, max_tokens=3, temperature=0)
            return run_task(context, body, on_first_token=lambda: context.served.append(i))

        context.waiting.append(in_thread(one))
        wait_until(lambda i=i: metric(context, "rbee_queue_depth") == i + 1, f"task {i} queued")


@then("the queue holds {count:d} requests")
def step_queue_holds(context: Context, count: int) -> None:
    assert metric(context, "rbee_queue_depth") == count


@when("the worker runs again")
def step_thaw(context: Context) -> None:
    os.kill(context.worker["pid"], signal.SIGCONT)


@then("the long job and all {count:d} tasks end with their tokens")
def step_all_end(context: Context, count: int) -> None:
    context.long_job.join(60)
    assert context.long_job.events[-2]["type"] == "end", context.long_job.events[-3:]
    for thread, _ in context.waiting:
        thread.join(60)
    answers = [out[0] for _, out in context.waiting]
    assert len(answers) == count
    for status, events in answers:  # type: ignore[misc]
        assert status == 200 and events[-1]["type"] == "end", events[-2:]
        assert any(e["type"] == "token" for e in events)


@then("the {count:d} tasks were served in the order they arrived")
def step_in_order(context: Context, count: int) -> None:
    assert context.served == list(range(count)), context.served


@when('I ask the OpenAI route for a completion of {ref} on "{node}"')
def step_openai(context: Context, ref: str, node: str) -> None:
    body = {"model": expand(context, ref), "nodes": [node], "prompt": "Hi", "max_tokens": 3}
    with queen(context) as c:
        context.response = c.post("/v1/completions", json=body)


@then('its error code is "{code}"')
def step_openai_code(context: Context, code: str) -> None:
    assert context.response.json()["error"]["code"] == code, context.response.text


@when("three clients add the same loopback node at once")
def step_three_adds(context: Context) -> None:
    body = {
        "node_name": "same",
        "ssh_host": "127.0.0.1",
        "ssh_port": context.sshd.port,
        "ssh_user": context.sshd.user,
        "ssh_key_path": str(context.sshd.client_key),
        "install_path": str(context.home / "node"),
        "accept_new_host_key": True,
    }
    barrier = threading.Barrier(3)

    def add() -> int:
        barrier.wait()
        with queen(context) as c:
            r = c.post("/v2/registry/beehives/add", json=body)
        return r.status_code if r.status_code == 201 else r.json()["error"]["code"]

    threads = [in_thread(add) for _ in range(3)]
    for thread, _ in threads:
        thread.join(60)
    context.adds = sorted(str(out[0]) for _, out in threads)


@then("one add succeeds and two get {code}")
def step_one_add(context: Context, code: str) -> None:
    assert context.adds == ["201", code, code], context.adds


@then("the node is listed once")
def step_listed_once(context: Context) -> None:
    with queen(context) as c:
        nodes = c.get("/v2/registry/beehives/list").json()["nodes"]
    assert [n["node_name"] for n in nodes].count("same") == 1, nodes


# --- failover (210) -------------------------------------------------------------------


@given('the model "{name}" is served on the loopback nodes "{first}" and "{second}"')
def step_two_nodes(context: Context, name: str, first: str, second: str) -> None:
    run = add_local_node(context, first, "--accept-new-host-key")  # starts the queen too
    assert run.code == 0, run.stderr
    context.installs = {first: context.home / "node", second: context.home / second}
    body = {
        "node_name": second,
        "ssh_host": "127.0.0.1",
        "ssh_port": context.sshd.port,
        "ssh_user": context.sshd.user,
        "ssh_key_path": str(context.sshd.client_key),
        "install_path": str(context.installs[second]),
        "worker_python": sys.executable,
        "accept_new_host_key": True,
    }
    entry = {"name": name, "model_ref": f"file:{context.model_dir}", "nodes": [first, second]}
    with queen(context) as c:
        assert c.post("/v2/registry/beehives/add", json=body).status_code == 201
        assert c.post("/v2/registry/models/add", json=entry).status_code == 201
    context.pair = (first, second)


@given('a worker of "{name}" is ready on each')
def step_ready_on_each(context: Context, name: str) -> None:
    for node in context.pair:
        body = {"node": node, "model": f"file:{context.model_dir}", "prompt": "Hi", "max_tokens": 1}
        status, events = run_task(context, body)
        assert status == 200 and events[-1]["type"] == "end", (status, events)
    context.pids = {n: worker_pids(under=str(context.installs[n])) for n in context.pair}
    assert all(len(p) == 1 for p in context.pids.values()), context.pids


@when('the worker on "{node}" freezes, a request for "{name}" reaches it, and it is killed')
def step_kill_at_accept(context: Context, node: str, name: str) -> None:
    (pid,) = context.pids[node]
    os.kill(pid, signal.SIGSTOP)
    body = {"model": name, "prompt": "Hi", "max_tokens": 8, "temperature": 0}
    asking, context.answer = in_thread(lambda: run_task(context, body))
    wait_until(lambda: metric(context, "rbee_requests_in_flight") == 1, "the request claimed it")
    time.sleep(0.2)  # its bytes are on the frozen worker's socket
    os.kill(pid, signal.SIGKILL)
    asking.join(60)


@then("the request ends with its tokens and no error")
def step_no_error(context: Context) -> None:
    status, events = context.answer[0]
    assert status == 200 and events[-1]["type"] == "end", events[-2:]
    assert not any(e["type"] == "error" for e in events)
    context.job_id = events[0]["job_id"]


@then('the worker on "{node}" served it')
def step_served_by(context: Context, node: str) -> None:
    log = (context.home / "logs" / "queen.log").read_text()
    lines = [line for line in log.splitlines() if context.job_id in line]
    assert any("failing over" in line for line in lines), lines
    assert any("streaming from worker" in line and f" on {node}" in line for line in lines), lines


# --- bounded shutdown (210, F7) ----------------------------------------------------------


@when("one worker is frozen and I send the queen SIGTERM")
def step_sigterm(context: Context) -> None:
    (pid,) = context.pids[context.pair[0]]
    os.kill(pid, signal.SIGSTOP)
    queen_pid = json.loads((context.home / "queen.pid").read_text())["pid"]
    context.stop_started = time.monotonic()
    os.kill(queen_pid, signal.SIGTERM)
    context.queen_pid = queen_pid


@then("the queen is gone within {seconds:d} s and no worker process of it is left")
def step_gone(context: Context, seconds: int) -> None:
    def gone() -> bool:
        try:
            os.kill(context.queen_pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_until(gone, f"the queen still runs after {seconds} s", timeout=seconds)
    assert worker_pids(under=str(context.home)) == []


@then("its log counts {graceful:d} graceful stop and {forced:d} forced")
def step_counts(context: Context, graceful: int, forced: int) -> None:
    log = (context.home / "logs" / "queen.log").read_text()
    assert f"stopped workers: {graceful} graceful, {forced} forced, 0 failed" in log, log[-2000:]
