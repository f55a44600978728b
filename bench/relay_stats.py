"""How sure one run of bench.relay is of each queen cell: a 95 % interval for
the first token it adds and the tokens/s it keeps, by resampling its requests.

A cell's figures are a difference and a ratio of two medians, each of a few
dozen requests whose times move with the machine; the same cell measured
again can land a percent away. So each cell also gets a percentile bootstrap
interval: the run's requests drawn again with replacement by their place in
it, the same places for the queen path and its base (the i-th request of each
ran in the same round, side by side, so a slow spell slows both and stays
paired), the two figures taken each time.
A cell whose whole interval meets a target meets it beyond this run's noise;
one whose interval straddles it is undecided by this run, whichever side its
figure fell on.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

from bench.sse_client import Sample  # first token s, whole request s, tokens, ...

DRAWS = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A cell's two figures, each with its 95 % interval: the first token
    added (ms) and the share of its base's tokens/s kept (1.0 = all)."""

    added_ms: float
    added_low: float
    added_high: float
    kept: float
    kept_low: float
    kept_high: float

    def verdict(self, added_ms: float, kept: float) -> str:
        """Against the targets (under `added_ms`, at least `kept`): "meets"
        when both intervals are wholly on their side, "misses" when either is
        wholly on the other, else "undecided"."""
        if self.added_high < added_ms and self.kept_low >= kept:
            return "meets"
        if self.added_low >= added_ms or self.kept_high < kept:
            return "misses"
        return "undecided"

    def text(self) -> str:
        return (
            f"first token {self.added_ms:+.2f} ms (95 % interval {self.added_low:+.2f} to "
            f"{self.added_high:+.2f}), tokens/s {self.kept * 100:.1f} % "
            f"({self.kept_low * 100:.1f} to {self.kept_high * 100:.1f})"
        )


def interval(queen: list[Sample], base: list[Sample], seed: int = 0) -> Interval:
    """The queen path's cell against its base, whose i-th requests ran in the
    same round (both lists in the order they were measured)."""
    n = min(len(queen), len(base))
    if n == 0:
        raise ValueError("no requests to compare")
    q_first = [s[0] * 1000 for s in queen[:n]]
    b_first = [s[0] * 1000 for s in base[:n]]
    q_rate = [s[2] / s[1] for s in queen[:n]]
    b_rate = [s[2] / s[1] for s in base[:n]]

    def figures(rounds: list[int]) -> tuple[float, float]:
        median = statistics.median
        added = median(q_first[i] for i in rounds) - median(b_first[i] for i in rounds)
        return added, median(q_rate[i] for i in rounds) / median(b_rate[i] for i in rounds)

    added, kept = figures(list(range(n)))
    draw = random.Random(seed)
    drawn = [figures(draw.choices(range(n), k=n)) for _ in range(DRAWS)]
    low = int(DRAWS * (1 - LEVEL) / 2)  # the 2.5th and 97.5th percentiles
    high = DRAWS - 1 - low
    adds = sorted(d[0] for d in drawn)
    keeps = sorted(d[1] for d in drawn)
    return Interval(added, adds[low], adds[high], kept, keeps[low], keeps[high])
