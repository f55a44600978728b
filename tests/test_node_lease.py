"""Node leases on a real database, SQLite file and PostgreSQL server alike:
one queen takes the nodes, the other takes none while they are renewed, a
lapsed lease goes to the other, a released one at once, and of several
processes racing for one node exactly one wins."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from peewee import Database

from rbee_queen.config import QueenConfig
from rbee_queen.config_load import ConfigInvalid
from rbee_queen.errors import NodeError, NodeHeldElsewhere
from rbee_queen.nodes.lease import LeaseSettings, NodeLeases, default_queen_id, node_of
from rbee_queen.store.db import open_database
from rbee_queen.store.tables import Node, NodeLease
from tests.plugins.postgres import StoreTarget

ROOT = Path(__file__).resolve().parents[1]


class Clock:
    """The queens' wall clock, moved by the test instead of waited for."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(store_target: StoreTarget) -> Iterator[Database]:
    db = open_database(store_target.location, password_file=store_target.password_file)
    for name in ("n1", "n2"):
        Node.create(name=name, ssh_host="h", ssh_user="u", ssh_key_path="k", install_path="/i")
    try:
        yield db
    finally:
        db.close()


def queens(clock: Clock) -> tuple[NodeLeases, NodeLeases]:
    return (
        NodeLeases(LeaseSettings("queen-a", ttl_s=10, renew_s=3), clock, clock),
        NodeLeases(LeaseSettings("queen-b", ttl_s=10, renew_s=3), clock, clock),
    )


def record_takeovers(leases: NodeLeases, fail_first: bool = False) -> list[set[str]]:
    """The nodes of each takeover, as the queen's re-adoption would get them."""
    calls: list[set[str]] = []

    async def gained(nodes: set[str]) -> None:
        calls.append(set(nodes))
        if fail_first and len(calls) == 1:
            raise OSError("the node did not answer")

    leases.on_gained = gained
    return calls


def holders() -> dict[str, tuple[str, int]]:
    return {node_of(r): (r.holder, r.expires_at) for r in NodeLease.select()}


def test_the_first_queen_takes_every_node_and_a_held_lease_is_not_stolen(store: Database) -> None:
    clock = Clock()
    a, b = queens(clock)
    assert a.renew_round() == {"n1", "n2"}
    assert a.holds("n1") and a.holds("n2")
    clock.now += 9.9  # not yet lapsed: nothing for the other queen
    assert b.renew_round() == set()
    assert not b.acquire("n1")
    assert {n: h for n, (h, _) in holders().items()} == {"n1": "queen-a", "n2": "queen-a"}
    assert b.held_elsewhere(["n1", "n2"]) == {"n1", "n2"}
    assert a.held_elsewhere(["n1", "n2"]) == set()


def test_a_renewal_moves_the_expiry_and_keeps_the_node(store: Database) -> None:
    clock = Clock()
    a, b = queens(clock)
    a.renew_round()
    first = holders()["n1"][1]
    clock.now += 6
    a.renew_round()
    assert holders()["n1"] == ("queen-a", first + 6000)
    clock.now += 9  # 15 s after the first round, 9 after the renewal: still held
    assert b.renew_round() == set()


def test_a_lapsed_lease_goes_to_the_other_queen_and_stays_there(store: Database) -> None:
    clock = Clock()
    a, b = queens(clock)
    a.renew_round()
    clock.now += 10.5  # queen a stopped renewing (killed)
    assert b.renew_round() == {"n1", "n2"}
    assert a.renew_round() == set()  # a's late renewal takes nothing back
    assert {n: h for n, (h, _) in holders().items()} == {"n1": "queen-b", "n2": "queen-b"}


def test_a_released_lease_is_taken_at_once(store: Database) -> None:
    clock = Clock()
    a, b = queens(clock)
    a.renew_round()
    assert a.release() == 2
    assert not a.holds("n1")
    assert b.renew_round() == {"n1", "n2"}


def test_ensure_takes_a_free_node_over_and_refuses_a_held_one(store: Database) -> None:
    a, b = queens(Clock())
    taken = record_takeovers(b)

    async def run() -> None:
        assert a.acquire("n1")
        with pytest.raises(NodeHeldElsewhere) as refused:
            await b.ensure("n1")
        assert refused.value.details["holder"] == "queen-a"
        assert refused.value.details["node"] == "n1"
        assert 10 <= refused.value.details["retry_after_s"] <= 13
        await b.ensure("n2")  # free: taken, its workers adopted, then driven
        assert b.drives("n2") and not b.drives("n1")

    asyncio.run(run())
    assert taken == [{"n2"}]


def test_a_takeover_whose_adoption_fails_is_not_driven_and_is_tried_again(
    store: Database,
) -> None:
    a, _ = queens(Clock())
    calls = record_takeovers(a, fail_first=True)

    async def run() -> None:
        with pytest.raises(NodeError) as failed:
            await a.ensure("n1")
        assert failed.value.code == "NODE_ERROR"  # not "held elsewhere": a holds it
        assert a.holds("n1") and not a.drives("n1")
        await a.ensure("n1")
        assert a.drives("n1")

    asyncio.run(run())
    assert calls == [{"n1"}, {"n1"}]


def test_a_late_renewal_of_a_driven_node_does_not_adopt_its_workers_again(
    store: Database,
) -> None:
    clock = Clock()
    a, _ = queens(clock)
    calls = record_takeovers(a)

    async def run() -> None:
        await a.ensure("n1")
        clock.now += 8  # past ttl - renew without a renewal (a stalled loop); nobody took it
        assert not a.drives("n1")
        await a.ensure("n1")  # renewed: the workers it drives are still its own
        assert a.drives("n1")

    asyncio.run(run())
    assert calls == [{"n1"}]


def test_a_queen_told_its_nodes_were_taken_lets_them_go(store: Database) -> None:
    clock = Clock()
    a, b = queens(clock)
    gained = record_takeovers(a)
    lost: list[set[str]] = []
    a.on_lost = lambda nodes: lost.append(set(nodes))

    async def run() -> None:
        await a.start()
        await a.first_takeover()
        assert a.driven() == {"n1", "n2"}
        clock.now += 11  # a looked stalled to b
        b.renew_round()
        a._tick()  # a's next round finds the nodes gone
        await a.stop()

    asyncio.run(run())
    assert gained == [{"n1", "n2"}]
    assert lost == [{"n1", "n2"}]
    assert a.driven() == set()


RACER = """
import json, sys
from pathlib import Path
from rbee_queen.nodes.lease import LeaseSettings, NodeLeases
from rbee_queen.store.db import open_database
where, password, me = json.loads(sys.argv[1])
open_database(where, password_file=Path(password) if password else None)
leases = NodeLeases(LeaseSettings(me, ttl_s=10, renew_s=3))
print("ready", flush=True)
sys.stdin.readline()  # all at once, when every racer is connected
print(json.dumps(leases.acquire("n1")), flush=True)
"""


def test_of_queens_racing_for_one_node_exactly_one_wins(
    store: Database, store_target: StoreTarget
) -> None:
    where = str(store_target.location)
    password = str(store_target.password_file or "")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, json.dumps([where, password, f"queen-{i}"])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        for i in range(3)
    ]
    for racer in racers:
        assert racer.stdout is not None and racer.stdout.readline() == "ready\n"
    for racer in racers:
        assert racer.stdin is not None
        racer.stdin.write("go\n")
        racer.stdin.flush()
    won = [json.loads(r.communicate(timeout=60)[0]) for r in racers]
    assert sorted(won) == [False, False, True]
    (holder,) = [f"queen-{i}" for i, w in enumerate(won) if w]
    assert holders()["n1"][0] == holder


def test_the_default_id_is_stable_per_home_and_differs_between_homes(tmp_path: Path) -> None:
    assert default_queen_id(tmp_path / "a") == default_queen_id(tmp_path / "a")
    assert default_queen_id(tmp_path / "a") != default_queen_id(tmp_path / "b")


def test_lease_settings_come_from_the_config_and_a_renewal_past_half_the_ttl_is_refused(
    tmp_path: Path,
) -> None:
    home = {"RBEE_HOME": str(tmp_path)}
    (tmp_path / "queen.toml").write_text('[queens]\nid = "left"\nlease_ttl_s = 4\n')
    config = QueenConfig.load(environ={**home, "RBEE_LEASE_RENEW": "1.5"})
    assert (config.queen_id, config.lease_ttl_s, config.lease_renew_s) == ("left", 4.0, 1.5)
    with pytest.raises(ConfigInvalid, match=r"queens.lease_renew_s = 2.5: more than half"):
        QueenConfig.load(environ={**home, "RBEE_LEASE_RENEW": "2.5"})
