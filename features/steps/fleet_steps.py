"""Steps over several test hosts (network namespaces, each its own sshd).

The hosts come from tests/plugins/testbed.py and live for the feature; a
scenario that cuts a host's link restores it when it ends.
"""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

from behave import given, then, when
from behave.runner import Context

from tests.plugins import testbed as testbeds


def run_keeper(context: Context, args: list[str]) -> SimpleNamespace:
    """The keeper as a subprocess; the result reads like keeper_steps' `Run`
    (behave registers step modules once, so they do not import each other)."""
    done = subprocess.run(
        [sys.executable, "-m", "rbee_keeper", *args],
        env=context.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return SimpleNamespace(code=done.returncode, stdout=done.stdout, stderr=done.stderr)


@given("{count:d} test hosts")
def step_test_hosts(context: Context, count: int) -> None:
    if not context.testbeds or len(context.testbeds[0][0].hosts) < count:
        for bed, fd in context.testbeds:
            testbeds.take_down(bed, fd)
        context.testbeds[:] = [testbeds.bring_up(count)]
    context.hosts = context.testbeds[0][0].hosts[:count]
    # A cut host costs `nodes status` its connect timeout: keep it short here,
    # and probe on demand rather than from the health loop.
    context.env["RBEE_SSH_CONNECT_TIMEOUT"] = "2"
    context.env["RBEE_HEALTH_INTERVAL"] = "0"


@when("I import an inventory naming them")
def step_import(context: Context) -> None:
    bed = context.testbeds[0][0]
    tables = [f'[defaults]\nssh_key = "{bed.client_key}"\n']
    for i, host in enumerate(context.hosts):
        tables.append(f'[nodes.h{i}]\nssh_host = "{host.address}"\nssh_user = "{host.user}"\n')
    inventory = context.home / "inventory.toml"
    inventory.write_text("\n".join(tables))
    context.result = run_keeper(
        context, ["setup", "import", str(inventory), "--accept-new-host-key"]
    )


@then('the output mentions "{text}"')
def step_output_mentions(context: Context, text: str) -> None:
    assert text in context.result.stdout, context.result.stdout


@when("I cut the link of test host {index:d}")
def step_cut(context: Context, index: int) -> None:
    host = context.hosts[index]
    host.set_link(up=False)
    context.add_cleanup(host.set_link, up=True)


def node_status(context: Context) -> dict[str, dict]:
    run = run_keeper(context, ["--json", "nodes", "status"])
    assert run.code == 0, run.stderr
    return {n["node_name"]: n for n in json.loads(run.stdout)["nodes"]}


@then("nodes status shows every test host reachable on its own hostname")
def step_all_reachable(context: Context) -> None:
    nodes = node_status(context)
    assert sorted(nodes) == [f"h{i}" for i in range(len(context.hosts))], nodes
    for i, host in enumerate(context.hosts):
        node = nodes[f"h{i}"]
        assert node["status"] == "reachable" and node["error"] is None, node
        assert node["hostname"] == host.hostname, node
        assert node["latency_ms"] > 0


@then("nodes status shows test host {index:d} unreachable and the others reachable")
def step_one_unreachable(context: Context, index: int) -> None:
    nodes = node_status(context)
    for i in range(len(context.hosts)):
        node = nodes[f"h{i}"]
        if i == index:
            assert node["status"] == "unreachable" and node["error"]["code"], node
        else:
            assert node["status"] == "reachable" and node["error"] is None, node
