"""Steps for the node inventory: keys a node refuses, and what a node row records."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime

from behave import given, then
from behave.runner import Context

from features.steps.keeper_steps import add_local_node, expand, list_nodes


@given('a fresh SSH key "{name}" the node has never seen')
def step_fresh_key(context: Context, name: str) -> None:
    path = context.home / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        capture_output=True,
    )


@given('a copy of the node\'s key at "{path}" with mode {mode}')
def step_loose_key(context: Context, path: str, mode: str) -> None:
    target = expand(context, path)
    shutil.copyfile(context.sshd.client_key, target)
    os.chmod(target, int(mode, 8))


def node_row(context: Context, name: str) -> dict:
    nodes = {n["node_name"]: n for n in list_nodes(context)}
    assert name in nodes, sorted(nodes)
    return nodes[name]


@then('the node list has no "{name}"')
def step_not_listed(context: Context, name: str) -> None:
    assert name not in [n["node_name"] for n in list_nodes(context)]


@then('the node "{name}" was last connected just now and has no error')
def step_last_connected(context: Context, name: str) -> None:
    row = node_row(context, name)
    seen = datetime.fromisoformat(row["last_connected"])
    assert (datetime.now(UTC) - seen).total_seconds() < 60, row
    assert row["last_error"] in (None, ""), row


@then('the node "{name}" has {field} "{value}"')
def step_node_field(context: Context, name: str, field: str, value: str) -> None:
    row = node_row(context, name)
    assert row[field] == value, row


@then("the error's details need more bytes than the node has")
def step_details_bytes(context: Context) -> None:
    details = context.response.json()["error"]["details"]
    assert details["required_bytes"] > details["available_bytes"] > 0, details


@then("the preflight checks were {names}, all passed")
def step_preflight(context: Context, names: str) -> None:
    checks = json.loads(context.result.stdout)["preflight"]
    assert [c["name"] for c in checks] == names.split(", "), checks
    assert all(c["ok"] for c in checks), checks


@then('the error names the check "{check}" and a suggestion')
def step_check_named(context: Context, check: str) -> None:
    details = context.response.json()["error"]["details"]
    assert details["check"] == check and details["suggestion"], details


@then('the node "{name}" still runs its workers with the python it had')
def step_python_kept(context: Context, name: str) -> None:
    assert node_row(context, name)["worker_python"] == sys.executable


@given('the loopback node "{name}" uses the worker python "{python}"')
def step_node_python(context: Context, name: str, python: str) -> None:
    run = add_local_node(context, name, "--accept-new-host-key", "--worker-python", python)
    if run.code != 0:  # added by an earlier scenario of the feature
        assert "NODE_ALREADY_EXISTS" in run.stderr, run.stderr
