"""The two-queen figures: `rbee_node_takeovers_total` (one per node of each
`node_takeover` event), `rbee_node_leases_held` (the nodes whose lease this
queen holds, read at each scrape) and NODE_HELD_ELSEWHERE answers under
`rbee_errors_total`, in whichever shape the route answers.

In process with the real metrics and real leases on a SQLite file; with two
real queen processes on one SQLite file in tests/test_newcomer_hints_leases.py
(which checks troubleshooting.md's rows against the same run).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rbee_queen.metrics import QueenMetrics
from rbee_queen.nodes.lease import LeaseSettings, NodeLeases
from rbee_queen.store.db import open_database
from rbee_queen.store.tables import Node
from rbee_wire.queen_events import NodeTakeover
from tests.test_node_lease import Clock

HELD = "rbee_node_leases_held"
TAKEN = "rbee_node_takeovers_total"
DOCS = Path(__file__).resolve().parents[1] / "docs"


def figure(text: str | bytes, name: str, **labels: str) -> float | None:
    """The sum of the samples of `name` whose labels include `labels`; None if none."""
    if isinstance(text, bytes):
        text = text.decode()
    found = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]
    return sum(found) if found else None


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[None]:
    db = open_database(tmp_path / "queen.db")
    for name in ("n1", "n2"):
        Node.create(name=name, ssh_host="h", ssh_user="u", ssh_key_path="k", install_path="/i")
    yield
    db.close()


def takeover(queen: str, nodes: list[str]) -> dict[str, Any]:
    """A `node_takeover` event as the bus hands it to its listeners."""
    event = NodeTakeover(type="node_takeover", queen=queen, nodes=nodes, adopted=0, cleaned=0)
    return {**event, "at": 0.0}


@pytest.mark.usefixtures("two_nodes")
def test_leases_held_follow_the_leases_and_takeovers_count_nodes() -> None:
    clock = Clock()
    a = NodeLeases(LeaseSettings("queen-a", ttl_s=10, renew_s=3), clock, clock)
    b = NodeLeases(LeaseSettings("queen-b", ttl_s=10, renew_s=3), clock, clock)
    seen_a, seen_b = QueenMetrics(), QueenMetrics()
    seen_a.count_leases(a.held)
    seen_b.count_leases(b.held)
    assert figure(seen_a.render(), HELD) == 0 and figure(seen_a.render(), TAKEN) == 0
    a.renew_round()
    seen_a.observe(takeover("queen-a", ["n1", "n2"]))
    assert b.renew_round() == set()
    assert (figure(seen_a.render(), HELD), figure(seen_b.render(), HELD)) == (2, 0)
    assert figure(seen_a.render(), TAKEN) == 2  # one per node, not one per event
    clock.now += 7.5  # A stopped renewing: it stops counting them before they lapse
    assert figure(seen_a.render(), HELD) == 0
    clock.now += 3  # lapsed: B takes both
    assert b.renew_round() == {"n1", "n2"}
    seen_b.observe(takeover("queen-b", ["n1", "n2"]))
    assert (figure(seen_a.render(), HELD), figure(seen_b.render(), HELD)) == (0, 2)
    assert figure(seen_b.render(), TAKEN) == 2 and figure(seen_a.render(), TAKEN) == 2


def test_an_openai_routes_lower_case_code_counts_as_the_queens_code() -> None:
    metrics = QueenMetrics()
    metrics.observe_http("/v1/chat/completions", "POST", 503, "node_held_elsewhere", 0.01)
    metrics.observe_http("/v2/tasks", "POST", 503, "NODE_HELD_ELSEWHERE", 0.01)
    metrics.observe_http("/v1/chat/completions", "POST", 400, "no_such_code", 0.01)
    text = metrics.render()
    assert figure(text, "rbee_errors_total", code="NODE_HELD_ELSEWHERE", source="api") == 2
    assert figure(text, "rbee_errors_total", code="OTHER", source="api") == 1


@pytest.mark.usefixtures("two_nodes")
def test_every_figure_the_queen_exports_is_in_the_references() -> None:
    """docs/monitoring.md's tables and docs/api.md's list name each family."""
    metrics = QueenMetrics()
    metrics.count_leases(set)
    exported = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in text_string_to_metric_families(metrics.render().decode())
        if not family.name.endswith("_created")  # prometheus_client's own, per counter
    }
    assert {HELD, TAKEN} <= exported
    for doc in ("monitoring.md", "api.md"):
        text = (DOCS / doc).read_text()
        named = set(re.findall(r"`(rbee_[a-z_]+)", text))
        assert sorted(exported - named) == [], doc
