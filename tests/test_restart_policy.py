"""The restart policy, on a clock the test moves by hand."""

from __future__ import annotations

import random

from rbee_queen.workers.restart_policy import RestartPolicy, RestartSettings

KEY = ("gpu1", "file:/m")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def policy(clock: Clock, **settings: float) -> RestartPolicy:
    return RestartPolicy(
        RestartSettings(**settings),  # type: ignore[arg-type]
        clock=clock,
        rng=random.Random(7),
    )


def test_backoff_doubles_with_jitter_then_gives_up() -> None:
    clock = Clock()
    p = policy(clock)
    delays = []
    for _ in range(3):
        decision = p.failed(KEY)
        assert decision.restart
        delays.append(decision.delay_s)
        clock.now += 10
    for base, delay in zip((1, 2, 4), delays, strict=True):
        assert base * 0.8 <= delay <= base * 1.2
    assert len(set(delays)) == 3
    final = p.failed(KEY)
    assert not final.restart and "gave up after 3" in final.reason


def test_delay_is_capped() -> None:
    clock = Clock()
    p = policy(clock, max_attempts=20, breaker_failures=100, max_delay_s=60.0, jitter=0.0)
    delays = [p.failed(KEY).delay_s for _ in range(10)]
    assert delays[:3] == [1, 2, 4]
    assert max(delays) == 60.0


def test_circuit_opens_after_five_failures_in_the_window() -> None:
    clock = Clock()
    p = policy(clock, max_attempts=100)
    for _ in range(4):
        assert p.failed(KEY).restart
        clock.now += 30
    decision = p.failed(KEY)
    assert not decision.restart and "circuit open" in decision.reason
    assert p.circuit_open(KEY)
    clock.now += 301
    assert not p.circuit_open(KEY)


def test_stable_uptime_resets_the_counters() -> None:
    clock = Clock()
    p = policy(clock)
    for _ in range(3):
        p.failed(KEY)
    p.started(KEY)
    clock.now += 301
    decision = p.failed(KEY)
    assert decision.restart and decision.reason == "restart 1"


def test_failures_of_other_models_do_not_count() -> None:
    clock = Clock()
    p = policy(clock)
    for _ in range(3):
        p.failed(KEY)
    assert p.failed(("gpu1", "file:/other")).reason == "restart 1"
