"""Steps about one worker: what the queen records of it, what its node holds."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import httpx
from behave import given, then, when
from behave.runner import Context

from features.steps.http_steps import fill, owner_token, send
from tests.plugins.procs import worker_pids


def listed(context: Context) -> list[dict[str, Any]]:
    return list(context.response.json()["workers"])


@then(
    'the one worker listed is {state} on "{node}" serving file:{{model}} with {backend} on the CPU'
)
def step_listed(context: Context, state: str, node: str, backend: str) -> None:
    (worker,) = listed(context)
    assert worker["state"] == state and worker["node"] == node, worker
    assert worker["model_ref"] == f"file:{context.model_dir}", worker
    assert worker["backend"] == backend and worker["device"] == "cpu", worker
    assert worker["url"].startswith("http://127.0.0.1:"), worker
    context.worker = worker


@then("its pid is a live worker process on the node")
def step_pid(context: Context) -> None:
    assert worker_pids(context.worker["worker_id"]) == [context.worker["pid"]]


@then('the output mentions the worker\'s id and "{text}"')
def step_table_row(context: Context, text: str) -> None:
    wid = context.worker["worker_id"]
    row = [line for line in context.result.stdout.splitlines() if wid in line]
    assert len(row) == 1 and text in row[0], context.result.stdout


@when("I ask for the worker's history")
def step_worker_events(context: Context) -> None:
    send(context, "GET", f"/v2/workers/{context.worker['worker_id']}/events")


def history(context: Context) -> list[dict[str, Any]]:
    return list(context.response.json()["events"])


@then("its states went {states} in that order")
def step_states(context: Context, states: str) -> None:
    wanted = states.split(", ")
    seen = [e["to_state"] for e in history(context)]
    at = [seen.index(state) for state in wanted]
    assert at == sorted(at), seen


@then("every change has a time and a reason")
def step_reasons(context: Context) -> None:
    for event in history(context):
        assert event["at"] and event["reason"], event


@then("the worker is listed as stopped")
def step_stopped(context: Context) -> None:
    rows = [w for w in listed(context) if w["worker_id"] == context.worker["worker_id"]]
    assert len(rows) == 1 and rows[0]["state"] == "stopped", rows


def node_run_dir(context: Context) -> Path:
    return context.home / "node" / "run"


@then("the node keeps a pid file, a log and a state file for the worker")
def step_run_files(context: Context) -> None:
    run = node_run_dir(context)
    wid = context.worker["worker_id"]
    pid_file = json.loads((run / f"{wid}.pid").read_text())
    assert pid_file["pid"] == context.worker["pid"], pid_file
    assert (run / f"{wid}.log").stat().st_size > 0
    state = json.loads((run / f"{wid}.state.json").read_text())
    assert state["port"] == context.worker["port"], state


@then("its process leads a session of its own")
def step_own_session(context: Context) -> None:
    pid = context.worker["pid"]
    assert os.getsid(pid) == pid and os.getpgid(pid) == pid


def worker_port(context: Context) -> int:
    state = node_run_dir(context) / f"{context.worker['worker_id']}.state.json"
    return int(json.loads(state.read_text())["port"])


def listeners(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp spells them) listening on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.append(address)
    return found


@then("its port is open on 127.0.0.1 and on no other address")
def step_loopback_only(context: Context) -> None:
    assert listeners(worker_port(context)) == ["0100007F"]


@then("its /health answers 200 without a token")
def step_worker_health(context: Context) -> None:
    r = httpx.get(f"http://127.0.0.1:{worker_port(context)}/health", timeout=10)
    assert r.status_code == 200, r.text


@then("its /v1/ready answers 401 without a token and with the queen's token")
def step_worker_refuses(context: Context) -> None:
    url = f"http://127.0.0.1:{worker_port(context)}/v1/ready"
    assert httpx.get(url, timeout=10).status_code == 401
    owner = {"Authorization": f"Bearer {owner_token(context)}"}
    assert httpx.get(url, headers=owner, timeout=10).status_code == 401


@given("a copy of the tiny model whose config.json is cut short")
def step_broken_model(context: Context) -> None:
    broken = context.home / "broken-model"
    shutil.copytree(context.model_dir, broken, dirs_exist_ok=True)
    (broken / "config.json").write_text('{"model_type": "llama", ')


@then('no worker process is left for "{path}"')
def step_no_process(context: Context, path: str) -> None:
    assert worker_pids(under=fill(context, path)) == []


@when("I shut down the worker through the API")
def step_api_shutdown(context: Context) -> None:
    body = json.dumps({"worker_id": context.worker["worker_id"]})
    r = send(context, "POST", "/v2/workers/shutdown", body=body)
    assert r.status_code == 200, r.text


@then("the answer says it stopped {how} force")
def step_forced(context: Context, how: str) -> None:
    answer = context.response.json()
    assert answer["stopped"] is True, answer
    assert answer["forced"] is (how == "with"), answer


@then("its process is gone")
def step_gone(context: Context) -> None:
    assert worker_pids(context.worker["worker_id"]) == []


@when("the worker is frozen so it cannot act on SIGTERM")
def step_frozen(context: Context) -> None:
    os.kill(context.worker["pid"], signal.SIGSTOP)  # SIGKILL still ends it


@when("the worker's process is killed with SIGKILL")
def step_sigkill(context: Context) -> None:
    os.kill(context.worker["pid"], signal.SIGKILL)


@then("within {seconds:d} seconds the worker is idle again under the same id, in a new process")
def step_restarted(context: Context, seconds: int) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rows = send(context, "GET", "/v2/workers/list").json()["workers"]
        mine = [w for w in rows if w["worker_id"] == context.worker["worker_id"]]
        if mine and mine[0]["state"] == "idle" and mine[0]["pid"] != context.worker["pid"]:
            assert worker_pids(context.worker["worker_id"]) == [mine[0]["pid"]]
            return
        time.sleep(0.2)
    raise AssertionError(f"not restarted: {rows}")


@then("its history shows it failed, was restarted and became idle again")
def step_restart_history(context: Context) -> None:
    send(context, "GET", f"/v2/workers/{context.worker['worker_id']}/events")
    seen = [e["to_state"] for e in history(context)]
    after = seen[seen.index("failed") :]
    assert "restarting" in after and after[-1] == "idle", seen


@then("the pid file's start time is the start time of the worker's process")
def step_start_time(context: Context) -> None:
    wid, pid = context.worker["worker_id"], context.worker["pid"]
    recorded = json.loads((node_run_dir(context) / f"{wid}.pid").read_text())
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    started = int(fields[19])  # field 22 of stat: start time in clock ticks
    assert int(recorded["start_ticks"]) == started, (recorded, started)


@then("the output has the worker's own log lines")
def step_worker_log_lines(context: Context) -> None:
    wid = context.worker["worker_id"]
    log = (node_run_dir(context) / f"{wid}.log").read_text().splitlines()
    shown = context.result.stdout
    assert wid in shown, shown
    assert any(line.strip() and line.strip() in shown for line in log[-5:]), (log[-5:], shown)


@when('I send a task with the correlation id "{cid}"')
def step_task_with_cid(context: Context, cid: str) -> None:
    body = json.dumps(
        {"node": "local", "model": f"file:{context.model_dir}", "prompt": "hi", "max_tokens": 5}
    )
    send(context, "POST", "/v2/tasks", body=body, headers={"x-correlation-id": cid})
    assert context.response.status_code == 200, context.response.text
    lines = [line[6:] for line in context.response.text.splitlines() if line.startswith("data: ")]
    context.stream = [{"type": "DONE"} if d == "[DONE]" else json.loads(d) for d in lines]


@then("the stream ended with MAX_TOKENS and [DONE]")
def step_stream_end(context: Context) -> None:
    *_, end, done = context.stream
    assert end["type"] == "end" and end["stop_reason"] == "MAX_TOKENS", end
    assert done == {"type": "DONE"}


@then("the worker's log has the job with cid={cid}")
def step_cid_in_worker_log(context: Context, cid: str) -> None:
    deadline = time.monotonic() + 10
    path = node_run_dir(context) / f"{context.worker['worker_id']}.log"
    while f"cid={cid}" not in path.read_text():
        assert time.monotonic() < deadline, path.read_text()[-2000:]
        time.sleep(0.1)


@then("the end event's usage counts the prompt and {count:d} completion tokens")
def step_usage(context: Context, count: int) -> None:
    usage = context.stream[-2]["usage"]
    assert usage["completion_tokens"] == count and usage["prompt_tokens"] > 0, usage
    assert usage["total_tokens"] == usage["prompt_tokens"] + count, usage


@given('the model "{name}" in the catalog, served on "{node}"')
def step_catalog_model(context: Context, name: str, node: str) -> None:
    listed_now = send(context, "GET", "/v2/registry/models/list").json()["models"]
    if name in [m["name"] for m in listed_now]:
        return  # added by an earlier scenario of the feature
    entry = {"name": name, "model_ref": f"file:{context.model_dir}", "nodes": [node]}
    r = send(context, "POST", "/v2/registry/models/add", body=json.dumps(entry))
    assert r.status_code == 201, r.text


@then('the OpenAI model list has "{name}"')
def step_openai_models(context: Context, name: str) -> None:
    body = context.response.json()
    assert body["object"] == "list", body
    assert name in [m["id"] for m in body["data"]], body


@then("the task's stream ended after {count:d} tokens")
def step_task_tokens(context: Context, count: int) -> None:
    lines = [line[6:] for line in context.response.text.splitlines() if line.startswith("data: ")]
    end = json.loads(lines[-2])
    assert end["type"] == "end" and end["tokens_out"] == count, end
