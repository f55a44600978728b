"""bench.relay's 95 % intervals (bench/relay_stats.py), on requests drawn
from known distributions: the interval holds the true difference, narrows as
requests are added, and keeps a slow spell that slowed both paths of a round
out of the comparison."""

from __future__ import annotations

import random

import pytest

from bench.relay_stats import interval
from bench.sse_client import Sample

TOKENS = 64


def _request(first_ms: float, whole_ms: float) -> Sample:
    return (first_ms / 1000, whole_ms / 1000, TOKENS, 0.0, first_ms / 1000)


def _paths(n: int, added_ms: float, seed: int, spell_ms: float = 0.0) -> tuple[list[Sample], ...]:
    """A queen path and its base, `n` rounds; the queen adds `added_ms` to each
    request, each path has its own noise, and a round's spell slows both."""
    draw = random.Random(seed)
    base, queen = [], []
    for _ in range(n):
        spell = draw.uniform(0, spell_ms)
        for path, extra in ((base, 0.0), (queen, added_ms)):
            first = 3.0 + spell + extra + draw.gauss(0, 0.3)
            path.append(_request(first, first + 32.0 + spell + draw.gauss(0, 0.6)))
    return queen, base


def test_the_interval_holds_the_added_time_in_most_runs() -> None:
    held = 0
    for seed in range(40):
        got = interval(*_paths(60, 0.6, seed))
        assert got.added_low <= got.added_ms <= got.added_high
        assert got.kept_low <= got.kept <= got.kept_high
        held += got.added_low < 0.6 < got.added_high
    assert held >= 34  # 95 % of 40 is 38; a median's percentile bootstrap runs a little short


def test_the_interval_narrows_with_more_rounds() -> None:
    few = interval(*_paths(30, 0.6, seed=1))
    many = interval(*_paths(300, 0.6, seed=1))
    assert many.added_high - many.added_low < (few.added_high - few.added_low) / 2
    # 0.6 ms of a 35.6 ms request: about 98.3 % of the tokens/s.
    assert many.kept == pytest.approx(35.0 / 35.6, abs=0.005)
    assert many.kept_high < 1.0
    assert many.verdict(1.0, 0.97) == "meets"
    assert many.verdict(0.6, 0.97) == "undecided"  # its interval straddles 0.6 ms
    assert many.verdict(0.4, 0.97) == "misses"
    assert many.verdict(1.0, 0.99) == "misses"  # all of it under 99 %


def test_a_slow_spell_in_both_paths_of_a_round_stays_paired() -> None:
    # Spells of up to 8 ms, the same in both paths of a round: drawn apart,
    # each path's requests would put the interval 2.6 ms wide.
    got = interval(*_paths(100, 0.6, seed=3, spell_ms=8.0))
    assert got.added_high - got.added_low < 1.0
    assert got.added_low < 0.6 < got.added_high


def test_a_cell_needs_requests() -> None:
    with pytest.raises(ValueError, match="no requests"):
        interval([], [])
