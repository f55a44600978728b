"""The queen's metrics: label values stay bounded whatever an event says, the
HTTP timing (in the queen's front) labels a real queen's answers by route template and
error code, and a model transfer publishes its outcome however it ends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rbee_queen.errors import InsufficientDisk
from rbee_queen.metrics import QueenMetrics
from rbee_queen.models.operations import ModelManager
from rbee_queen.store.db import open_database
from tests.plugins.prometheus import DASHBOARD
from tests.plugins.queen import QueenProcess

Samples = list[tuple[str, dict[str, str], float]]


def samples(text: str | bytes) -> Samples:
    text = text.decode() if isinstance(text, bytes) else text
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def value(found: Samples, name: str, **labels: str) -> float | None:
    hits = [v for n, have, v in found if n == name and labels.items() <= have.items()]
    return sum(hits) if hits else None


def label_values(found: Samples, name: str, label: str) -> set[str]:
    return {have[label] for n, have, _ in found if n == name and label in have}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[None]:
    """The database the scrape-time gauges read."""
    db = open_database(tmp_path / "queen.db")
    yield
    db.close()


@pytest.mark.usefixtures("store")
def test_event_labels_stay_bounded() -> None:
    metrics = QueenMetrics()
    at = 1000.0
    for event in [
        {"type": "request_started", "job_id": "j1", "worker_id": "w", "node": "n", "model": "m"},
        {"type": "request_finished", "job_id": "j1", "outcome": "a prompt's text", "at": at + 2},
        {"type": "worker_restarted", "worker_id": "w", "reason": "restart 1", "cause": "odd"},
        {
            "type": "worker_shutdown",
            "worker_id": "w",
            "node": "n",
            "reason": "idle for 300s",
            "outcome": "graceful",
            "duration_s": 0.5,
        },
        {"type": "ssh_connect", "node": "n", "error": "NOT A CODE", "duration_s": 0.1},
        {
            "type": "worker",
            "worker_id": "w",
            "from_state": "restarting",
            "state": "failed",
            "reason": "circuit open: 5 failures in 300s",
            "node": "n",
            "model_ref": "m",
        },
    ]:
        metrics.observe({"at": at, **event})
    found = samples(metrics.render())
    assert label_values(found, "rbee_requests_total", "outcome") == {"OTHER"}
    assert label_values(found, "rbee_errors_total", "code") == {"OTHER"}
    assert value(found, "rbee_inference_duration_seconds_sum", model="m") == 2.0
    assert value(found, "rbee_worker_restarts_total", cause="other") == 1
    assert value(found, "rbee_worker_stops_total", reason="idle") == 1
    assert value(found, "rbee_ssh_connect_failures_total", node="n", code="OTHER") == 1
    assert value(found, "rbee_worker_circuit_opens_total") == 1
    assert value(found, "rbee_requests_in_flight") == 0


def test_http_answers_are_labelled_by_route_template_and_error_code(queen: QueenProcess) -> None:
    with queen.client() as c:
        assert c.get("/v2/workers/w-1234/events").status_code == 404
        assert c.get("/no/such/route").status_code == 404
        assert c.get("/v2/workers/list").status_code == 200
    with queen.anonymous() as c:
        assert c.get("/v2/workers/list").status_code == 401
    with queen.client() as c:
        found = samples(c.get("/metrics").text)
    count = "rbee_http_request_duration_seconds_count"
    routes = label_values(found, count, "route")
    assert "/v2/workers/{worker_id}/events" in routes and "unmatched" in routes
    assert not any("w-1234" in r or "/no/such" in r for r in routes)  # never the raw path
    assert value(found, count, route="/v2/workers/list", status="2xx") == 1
    assert value(found, count, route="/v2/workers/list", status="4xx") == 1
    assert value(found, "rbee_errors_total", code="WORKER_NOT_FOUND", source="api") == 1
    assert value(found, "rbee_errors_total", code="NOT_FOUND", source="api") == 1
    assert value(found, "rbee_errors_total", code="MISSING_API_KEY", source="api") == 1


def transfer_plan() -> Any:
    node = SimpleNamespace(name="n1")
    return SimpleNamespace(node=node, ref=SimpleNamespace(ref="hf:org/tiny"))


async def run_transfer(events: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    manager = ModelManager.__new__(ModelManager)  # the transfer itself is not needed here
    published: list[dict[str, Any]] = []
    manager.publish = lambda event: published.append(dict(event))
    with pytest.raises(InsufficientDisk) if events.__name__ == "failing" else _no_error():
        async for _ in manager._published(transfer_plan(), "queen", events):
            pass
    return published


class _no_error:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


async def succeeding() -> AsyncIterator[dict[str, Any]]:
    yield {"type": "skip", "file": "a", "bytes": 100}
    yield {"type": "progress", "file": "b", "bytes_done": 100, "bytes_total": 350}
    yield {"type": "progress", "file": "b", "bytes_done": 350, "bytes_total": 350}
    yield {"type": "done"}


async def failing() -> AsyncIterator[dict[str, Any]]:
    yield {"type": "progress", "file": "b", "bytes_done": 10, "bytes_total": 350}
    raise InsufficientDisk("the node's disk is full")


@pytest.mark.usefixtures("store")
def test_a_transfer_publishes_its_outcome_bytes_and_time() -> None:
    (done,) = asyncio.run(run_transfer(succeeding()))
    assert (done["type"], done["error"], done["bytes"]) == ("model_download", None, 250)
    assert done["source"] == "queen" and done["duration_s"] >= 0
    (failed,) = asyncio.run(run_transfer(failing()))
    assert (failed["error"], failed["bytes"]) == ("INSUFFICIENT_DISK", 10)
    metrics = QueenMetrics()
    for event in (done, failed):
        metrics.observe({**event, "at": 0.0})
    found = samples(metrics.render())
    assert value(found, "rbee_model_downloads_total", source="queen", outcome="ok") == 1
    assert value(found, "rbee_model_downloads_total", outcome="INSUFFICIENT_DISK") == 1
    assert value(found, "rbee_model_download_bytes_total", source="queen") == 260


def test_the_grafana_dashboard_is_importable_as_is() -> None:
    """What Grafana's import needs: the data source as an input the importer
    asks for, unique panel ids, every panel placed and reading that source."""
    dashboard = json.loads(DASHBOARD.read_text())
    (source,) = dashboard["__inputs"]
    assert (source["name"], source["pluginId"]) == ("DS_PROMETHEUS", "prometheus")
    assert dashboard["uid"] and dashboard["title"] and "id" not in dashboard
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}, panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] == "${DS_PROMETHEUS}"
