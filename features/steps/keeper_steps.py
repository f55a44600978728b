"""Steps that drive `rbee-keeper` as a user would: a real subprocess, real output."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass

from behave import given, then, when
from behave.runner import Context

from tests.plugins.procs import worker_pids
from tests.plugins.sshd import free_port

KEEPER = [sys.executable, "-m", "rbee_keeper"]


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    first_output_s: float | None = None
    total_s: float = 0.0


def expand(context: Context, text: str) -> str:
    values = {
        "port": context.sshd.port,
        "user": context.sshd.user,
        "key": context.sshd.client_key,
        "model": context.model_dir,
        "python": sys.executable,
        "install": context.home / "node",
        "home": context.home,
        "free_port": context.__dict__.setdefault("_free_port", free_port()),
    }
    return text.format(**values)


def run_keeper(context: Context, args: list[str]) -> Run:
    started = time.monotonic()
    proc = subprocess.Popen(
        KEEPER + args,
        env=context.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.read(1)
    first_at = time.monotonic() - started if first else None
    out = first + proc.stdout.read()
    err = proc.stderr.read()
    code = proc.wait(timeout=300)
    return Run(code, out.decode(), err.decode(), first_at, time.monotonic() - started)


def add_local_node(context: Context, name: str, *extra: str) -> Run:
    args = expand(
        context,
        f"setup add-node --name {name} --ssh-host 127.0.0.1 --ssh-port {{port}} "
        "--ssh-user {user} --ssh-key {key} --install-path {install} --worker-python {python}",
    )
    return run_keeper(context, [*shlex.split(args), *extra])


@given('the loopback node "{name}" has been added')
def step_node_added(context: Context, name: str) -> None:
    if "shared" in context and name in [n["node_name"] for n in list_nodes(context)]:
        return  # a feature's own node (@one_node), added once for all its scenarios
    run = add_local_node(context, name, "--accept-new-host-key")
    assert run.code == 0, run.stderr


@when('I add the loopback node "{name}" accepting its host key')
def step_add_node_accepting(context: Context, name: str) -> None:
    context.result = add_local_node(context, name, "--accept-new-host-key")


@when('I add the loopback node "{name}" without accepting its host key')
def step_add_node_plain(context: Context, name: str) -> None:
    context.result = add_local_node(context, name)


@when("I run rbee-keeper {args}")
def step_run(context: Context, args: str) -> None:
    context.last_args = shlex.split(expand(context, args))  # for steps that run it again
    context.result = run_keeper(context, context.last_args)


@then("it succeeds")
def step_succeeds(context: Context) -> None:
    r = context.result
    assert r.code == 0, f"exit {r.code}: {r.stderr}"


@then("it fails with exit code {code:d} and error {error}")
def step_fails_with(context: Context, code: int, error: str) -> None:
    r = context.result
    assert r.code == code, f"exit {r.code}, stderr: {r.stderr}"
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, f"expected one error line, got: {r.stderr!r}"
    assert f"[{error}]" in lines[0], lines[0]
    assert "Traceback" not in r.stderr


@then('it fails with a usage message naming "{text}"')
def step_usage(context: Context, text: str) -> None:
    r = context.result
    assert r.code == 2, f"exit {r.code}: {r.stderr}"
    assert r.stderr.startswith("usage:") and text in r.stderr, r.stderr


@then('the error mentions "{text}"')
def step_error_mentions(context: Context, text: str) -> None:
    assert text in context.result.stderr, context.result.stderr


@then("no queen was started")
def step_no_queen(context: Context) -> None:
    assert not (context.home / "queen.pid").exists()
    assert not (context.home / "logs" / "queen.log").exists()


def list_nodes(context: Context) -> list[dict]:
    run = run_keeper(context, ["setup", "list-nodes", "--json"])
    assert run.code == 0, run.stderr
    return json.loads(run.stdout)["nodes"]


@then('the node list shows "{name}" as {status}')
def step_node_listed(context: Context, name: str, status: str) -> None:
    nodes = {n["node_name"]: n for n in list_nodes(context)}
    assert name in nodes, nodes
    assert nodes[name]["status"] == status
    assert nodes[name]["backends"] == ["cpu"]


@then("the node list is empty")
def step_no_nodes(context: Context) -> None:
    assert list_nodes(context) == []


@then('the table output lists "{name}" with its SSH target')
def step_table(context: Context, name: str) -> None:
    out = context.result.stdout
    assert name in out, out
    assert f"{context.sshd.user}@127.0.0.1:{context.sshd.port}" in out, out


@then("tokens were printed and a summary with stop reason {reason}")
def step_tokens_printed(context: Context, reason: str) -> None:
    r = context.result
    assert r.code == 0, r.stderr
    assert r.stdout.strip(), "no tokens on stdout"
    assert reason in r.stderr, r.stderr


@then("the JSON events are started, text pieces in order, and an end after {count:d} tokens")
def step_json_events(context: Context, count: int) -> None:
    r = context.result
    assert r.code == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    assert events[0]["type"] == "started"
    pieces = [e for e in events if e["type"] == "token"]
    # A piece may carry several tokens while a UTF-8 character is incomplete.
    assert 0 < len(pieces) <= count
    assert [p["i"] for p in pieces] == list(range(len(pieces)))
    assert events[-1]["type"] == "end" and events[-1]["tokens_out"] == count
    assert events[-1]["stop_reason"] == "MAX_TOKENS"
    assert len(events) == len(pieces) + 2


def list_workers(context: Context) -> list[dict]:
    run = run_keeper(context, ["workers", "list", "--json"])
    assert run.code == 0, run.stderr
    return json.loads(run.stdout)["workers"]


@then('one worker is {state} on node "{node}"')
def step_one_worker(context: Context, state: str, node: str) -> None:
    workers = list_workers(context)
    assert len(workers) == 1, workers
    assert workers[0]["state"] == state and workers[0]["node"] == node
    context.worker = workers[0]
    assert worker_pids(context.worker["worker_id"]) == [context.worker["pid"]]


@then("the same worker answered")
def step_same_worker(context: Context) -> None:
    workers = list_workers(context)
    assert [w["worker_id"] for w in workers] == [context.worker["worker_id"]]


@when("I shut that worker down")
def step_shutdown(context: Context) -> None:
    context.result = run_keeper(
        context, ["workers", "shutdown", "--id", context.worker["worker_id"]]
    )


@then("no worker is listed and its process is gone")
def step_worker_gone(context: Context) -> None:
    assert list_workers(context) == []
    assert worker_pids(context.worker["worker_id"]) == []
