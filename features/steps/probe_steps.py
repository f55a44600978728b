"""Steps for what a node's probe reports, and a node whose sshd goes away."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from behave import given, then, when
from behave.runner import Context

from tests.plugins.sshd import start_sshd


def status_of(context: Context, name: str) -> dict[str, Any]:
    nodes = {n["node_name"]: n for n in json.loads(context.result.stdout)["nodes"]}
    assert name in nodes, sorted(nodes)
    return dict(nodes[name])


@then('the node "{name}" is reachable with python 3.10 or newer')
def step_reachable(context: Context, name: str) -> None:
    node = status_of(context, name)
    assert node["status"] == "reachable" and node["error"] is None, node
    major, minor = (int(x) for x in str(node["python"]).split(".")[:2])
    assert (major, minor) >= (3, 10), node["python"]
    context.node_status = node


@then("it reports CPUs, RAM, free disk and the cpu backend")
def step_resources(context: Context) -> None:
    node = context.node_status
    assert node["cpus"] >= 1, node
    assert 0 < node["ram_available_bytes"] <= node["ram_total_bytes"], node
    assert node["disk_free_bytes"] > 0, node
    assert "cpu" in node["backends"], node


@then("it reports no GPU, found by nothing")
def step_no_gpu(context: Context) -> None:
    node = context.node_status
    assert node["gpus"] == [] and node["gpu_source"] == "none", node


@given('a second sshd, registered as the node "{name}"')
def step_second_sshd(context: Context, name: str) -> None:
    proc, server = start_sshd(context.home / f"sshd-{name}")
    context.add_cleanup(stop_proc, proc)
    context.second_sshd = proc
    argv = [
        *("setup", "add-node", "--name", name, "--ssh-host", "127.0.0.1"),
        *("--ssh-port", str(server.port), "--ssh-user", server.user),
        *("--ssh-key", str(server.client_key), "--install-path", str(context.home / name)),
        "--accept-new-host-key",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "rbee_keeper", *argv],
        env=context.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def stop_proc(proc: subprocess.Popen[bytes]) -> None:
    """The sshd and the sessions it forked (which outlive a listener that stops)."""
    for pid in descendants(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=10)


def descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
    found, frontier = [], [root]
    while frontier:
        children = [pid for pid, ppid in parents.items() if ppid in frontier]
        found.extend(children)
        frontier = children
    return found


@when("its sshd stops")
def step_sshd_stops(context: Context) -> None:
    stop_proc(context.second_sshd)


@then('the node "{name}" is unreachable with an error code')
def step_unreachable(context: Context, name: str) -> None:
    node = status_of(context, name)
    assert node["status"] == "unreachable", node
    assert node["error"]["code"] and node["error"]["message"], node


@then("the node's install path holds one helper folder, marked complete")
def step_helper_folder(context: Context) -> None:
    folders = [p for p in (context.home / "node" / "hive").iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    assert (folders[0] / ".complete").exists()
    assert len(folders[0].name) >= 16 and all(c in "0123456789abcdef" for c in folders[0].name)
