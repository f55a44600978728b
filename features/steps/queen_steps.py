"""Steps for the queen's own lifecycle: started by the keeper, stopped by a signal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from behave import given, then, when
from behave.runner import Context

from features.steps.http_steps import send
from tests.plugins.procs import worker_pids


def queen_pid(context: Context) -> int:
    return int(json.loads((context.home / "queen.pid").read_text())["pid"])


@then("a queen runs, whose pid I remember")
def step_remember_pid(context: Context) -> None:
    context.queen_pid = queen_pid(context)
    assert alive(context.queen_pid), context.queen_pid


@then("the queen's pid is the one remembered")
def step_same_pid(context: Context) -> None:
    assert queen_pid(context) == context.queen_pid
    assert "started local queen" not in context.result.stderr + context.result.stdout


def keeper(context: Context, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rbee_keeper", *args],
        env=context.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


@when('two keepers run "{command}" at the same time')
def step_two_keepers(context: Context, command: str) -> None:
    with ThreadPoolExecutor(2) as pool:
        context.runs = list(pool.map(lambda _: keeper(context, command.split()), range(2)))


@then("both succeed")
def step_both_succeed(context: Context) -> None:
    for run in context.runs:
        assert run.returncode == 0, run.stderr


@then("exactly one of them started a queen")
def step_one_started(context: Context) -> None:
    said = ["started local queen" in run.stdout + run.stderr for run in context.runs]
    assert said.count(True) == 1, [run.stderr for run in context.runs]
    queens = [p for p in pids_with(b"rbee_queen") if home_of(p) == str(context.home)]
    assert queens == [queen_pid(context)], queens


def pids_with(word: bytes) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if any(word in a for a in argv):
                found.append(int(entry))
    return found


def home_of(pid: int) -> str | None:
    try:
        env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"RBEE_HOME="):
            return item.split(b"=", 1)[1].decode()
    return None


@when("the queen is sent SIGTERM")
def step_sigterm(context: Context) -> None:
    context.queen_pid = queen_pid(context)
    os.kill(context.queen_pid, signal.SIGTERM)


def alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@then("the queen has exited")
def step_exited(context: Context) -> None:
    deadline = time.monotonic() + 60
    while alive(context.queen_pid):
        assert time.monotonic() < deadline, "the queen did not exit"
        time.sleep(0.05)


@then("no worker process is left under the node's install path")
def step_no_workers(context: Context) -> None:
    assert worker_pids(under=str(context.home)) == []


@then("no helper runs under the node's install path")
def step_no_helper(context: Context) -> None:
    deadline = time.monotonic() + 10
    while True:
        helpers = [p for p in pids_with(b"rbee_hive") if helper_under(p, context)]
        if not helpers:
            return
        assert time.monotonic() < deadline, f"helpers still running: {helpers}"
        time.sleep(0.1)


def helper_under(pid: int, context: Context) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/cwd").startswith(str(context.home / "node"))
    except OSError:
        return False


@given("the queen keeps its workers when it stops")
def step_keep_workers(context: Context) -> None:
    context.env["RBEE_STOP_WORKERS_ON_EXIT"] = "false"  # --keep-workers, for the keeper's queen


@then("the worker's process still runs")
def step_still_runs(context: Context) -> None:
    assert worker_pids(context.worker["worker_id"]) == [context.worker["pid"]]
    # The next queen this scenario starts stops its workers when the scenario ends.
    context.env.pop("RBEE_STOP_WORKERS_ON_EXIT")


@then("the worker is listed again under the same id and pid")
def step_adopted(context: Context) -> None:
    rows = send(context, "GET", "/v2/workers/list").json()["workers"]
    assert [(w["worker_id"], w["pid"]) for w in rows] == [
        (context.worker["worker_id"], context.worker["pid"])
    ], rows


@given("the queen stops a worker idle for {idle:d} seconds, checking every {every:g} s")
def step_idle_stop(context: Context, idle: int, every: float) -> None:
    context.env["RBEE_IDLE_STOP"] = str(idle)
    context.env["RBEE_SUPERVISOR_INTERVAL"] = str(every)


@then("within {seconds:d} seconds no worker is listed")
def step_none_listed(context: Context, seconds: int) -> None:
    deadline = time.monotonic() + seconds
    while send(context, "GET", "/v2/workers/list").json()["workers"]:
        assert time.monotonic() < deadline, context.response.text
        time.sleep(0.2)
    assert worker_pids(context.worker["worker_id"]) == []


@then("the worker's history says it was stopped for being idle")
def step_idle_reason(context: Context) -> None:
    events = send(context, "GET", f"/v2/workers/{context.worker['worker_id']}/events").json()
    reasons = " ".join(str(e["reason"]) for e in events["events"]).lower()
    assert "idle" in reasons, events
