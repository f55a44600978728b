"""Steps of area 230: a worker's memory bound and the OOM it ends in."""

from __future__ import annotations

import json
import re

from behave import given, then
from behave.runner import Context

from features.steps.inference_steps import queen
from rbee_hive import cgroups
from rbee_queen.audit import audit_files

MIB = 1024 * 1024


@given("the node can give a worker a memory cgroup")
def step_cgroup_writable(context: Context) -> None:
    mounts = cgroups._mounts()
    usable = [v for v in ("v2", "v1") if v in mounts and cgroups._parent_dir(v, mounts[v])]
    if not usable:
        context.scenario.skip(
            "no delegated cgroup v2 memory controller and no writable v1 memory hierarchy"
        )


def oom_details(context: Context) -> dict[str, object]:
    details: dict[str, object] = context.response.json()["error"]["details"]
    return details


@then("the error says the worker ran under {limit:d} MiB and its next start gets {raised:d} MiB")
def step_oom_figures(context: Context, limit: int, raised: int) -> None:
    details = oom_details(context)
    assert details["limit_bytes"] == limit * MIB, details
    assert details["next_limit_bytes"] == raised * MIB, details
    peak = details["peak_bytes"]
    assert isinstance(peak, int) and peak >= limit * MIB * 0.9, details  # it hit the bound
    message = context.response.json()["error"]["message"]
    assert f"memory limit {limit:.1f} MiB" in message, message


@then("the worker's history has one failure naming the OOM killer and no restart")
def step_oom_history(context: Context) -> None:
    worker_id = oom_details(context)["worker_id"]
    with queen(context) as c:
        events = c.get(f"/v2/workers/{worker_id}/events").json()["events"]
    states = [e["to_state"] for e in events]
    failures = [e["reason"] for e in events if e["to_state"] == "failed"]
    assert len(failures) == 1 and "OOM killer" in failures[0], events
    assert "restarting" not in states and states[-1] == "stopped", states
    assert any(re.search(r"memory bound cgroup_v[12]: 100 MiB", e["reason"]) for e in events)


@then("the audit log has one worker.oom entry for that worker")
def step_oom_audit(context: Context) -> None:
    worker_id = oom_details(context)["worker_id"]
    text = "".join(p.read_text() for p in audit_files(context.home / "audit"))
    entries = [json.loads(line) for line in text.splitlines()]
    found = [e for e in entries if e["event"] == "worker.oom" and e["worker_id"] == worker_id]
    assert len(found) == 1, found
    assert found[0]["limit_bytes"] == oom_details(context)["limit_bytes"], found


@then("the queen counts {count:d} OOM kills in rbee_worker_ooms_total")
def step_oom_metric(context: Context, count: int) -> None:
    with queen(context) as c:
        text = c.get("/metrics").text
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("rbee_worker_ooms_total{")
    ]
    assert sum(values) == count, [x for x in text.splitlines() if "ooms" in x]


@then("the newest worker ran under {limit:d} MiB, raised after an OOM kill")
def step_newest_bound(context: Context, limit: int) -> None:
    """Whether it fitted this time or not, the bound it was started under (after
    "the queen restarts", store_steps.py: the bound the queen before it raised)."""
    with queen(context) as c:
        workers = c.get("/v2/workers/list?all=1").json()["workers"]
    newest = max(workers, key=lambda w: w["started_at"])
    assert newest["memory_limit_bytes"] == limit * MIB, newest
    assert newest["memory_limit_source"] == "oom", newest
