"""Steps that read the queen's /metrics (Prometheus text) and compare it with
what a scenario did."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from behave import given, then, when
from behave.runner import Context
from prometheus_client.parser import text_string_to_metric_families

Samples = list[tuple[str, dict[str, str], float]]
# Histograms whose unit is not a time: a rate, or a count.
NOT_DURATIONS = frozenset({"rbee_tokens_per_second"})


def client(context: Context) -> httpx.Client:
    token = (context.home / "api-token").read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=context.queen_url, headers=headers, timeout=120)


def metrics_text(context: Context) -> str:
    with client(context) as c:
        r = c.get("/metrics")
    assert r.status_code == 200, r.text
    return r.text


def samples(context: Context) -> Samples:
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(metrics_text(context))
        for s in family.samples
    ]


def labels_of(context: Context, text: str) -> dict[str, str]:
    """`code WORKER_NOT_FOUND, source api` as {"code": ..., "source": ...}."""
    text = text.replace("{model}", str(context.model_dir))
    pairs = [part.strip().split(" ", 1) for part in text.split(", ") if part.strip()]
    return {name: value for name, value in pairs}


def value(found: Samples, name: str, labels: dict[str, str]) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 if none)."""
    return sum(v for n, have, v in found if n == name and labels.items() <= have.items())


def exported(found: Samples, name: str) -> bool:
    return any(n == name for n, _, _ in found)


@given("I note the queen's metrics")
def step_note(context: Context) -> None:
    context.metrics_before = samples(context)


@when('I run a task on "{node}" with the prompt "{prompt}"')
def step_task(context: Context, node: str, prompt: str) -> None:
    body = {"node": node, "model": f"file:{context.model_dir}", "prompt": prompt, "max_tokens": 8}
    with client(context) as c, c.stream("POST", "/v2/tasks", json=body) as r:
        assert r.status_code == 200, r.read()
        lines = [line[5:].strip() for line in r.iter_lines() if line.startswith("data:")]
        events = [json.loads(line) for line in lines if line.startswith("{")]
    assert events[-1]["type"] == "end", events[-1]
    context.job_id = next(e["job_id"] for e in events if e.get("job_id"))
    context.prompt = prompt


@when('I try to add a node "{name}" whose SSH port is closed')
def step_add_closed(context: Context, name: str) -> None:
    from tests.plugins.sshd import free_port

    body = context.sshd.node_body(name, context.run_root / name)
    with client(context) as c:
        r = c.post("/v2/registry/beehives/add", json={**body, "ssh_port": free_port()})
    assert r.status_code >= 400, r.text


def settled(context: Context, holds: Callable[[Samples], bool]) -> Samples:
    """The queen's metrics once `holds` is true of them, or after 5 s: a stream's
    figures are counted a moment after its last bytes left (rbee_queen/
    deferred.py; a scrape does what is waiting first, but the stream's own
    cleanup may still be running when a scrape sent at once arrives)."""
    deadline = time.monotonic() + 5
    while not holds(now := samples(context)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return now


@then("the metric {name} for {labels} went up by {count:d}")
def step_went_up(context: Context, name: str, labels: str, count: int) -> None:
    wanted = labels_of(context, labels)
    before = value(context.metrics_before, name, wanted)
    now = settled(context, lambda now: value(now, name, wanted) - before == count)
    assert exported(now, name), f"the queen exports no {name}"
    change = value(now, name, wanted) - before
    assert change == count, f"{name}{wanted} went up by {change}, not {count}"


@then("the metric {name} for {labels} is {expected:g}")
def step_is_for(context: Context, name: str, labels: str, expected: float) -> None:
    now = samples(context)
    assert exported(now, name), f"the queen exports no {name}"
    assert value(now, name, labels_of(context, labels)) == expected


@then("the metric {name} is {expected:g}")
def step_is(context: Context, name: str, expected: float) -> None:
    now = settled(context, lambda now: value(now, name, {}) == expected)
    assert exported(now, name), f"the queen exports no {name}"
    assert value(now, name, {}) == expected


@then("the metric {name} is above {floor:g}")
def step_above(context: Context, name: str, floor: float) -> None:
    # A loop's figure (the health round's) comes with its next round: give it
    # a few intervals rather than racing the first one.
    deadline = time.monotonic() + 20
    while (seen := value(samples(context), name, {})) <= floor:
        assert time.monotonic() < deadline, f"{name} stayed at {seen}"
        time.sleep(0.2)


def families(context: Context) -> list[Any]:
    return list(text_string_to_metric_families(metrics_text(context)))


@then("every counter of the queen's metrics ends in _total")
def step_counters(context: Context) -> None:
    counters = [f for f in families(context) if f.type == "counter"]
    assert len(counters) > 10, [f.name for f in counters]
    for family in counters:
        names = {s.name for s in family.samples} - {f"{family.name}_created"}
        assert names <= {f"{family.name}_total"}, names


@then("every duration of the queen's metrics is in seconds")
def step_seconds(context: Context) -> None:
    histograms = [f for f in families(context) if f.type == "histogram"]
    assert len(histograms) > 5, [f.name for f in histograms]
    for family in histograms:
        assert family.name.endswith("_seconds") or family.name in NOT_DURATIONS, family.name


@then("the queen's metrics hold neither the prompt nor the job's id")
def step_no_secrets(context: Context) -> None:
    text = metrics_text(context)
    assert context.prompt.split()[0] not in text
    assert context.job_id not in text
