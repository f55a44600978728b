"""When a dead or hung worker is started again, and when rbee stops trying.

Per (node, model): restarts wait 1, 2, 4 ... s (with jitter, capped), at most
`max_attempts` in a row; after `breaker_failures` failures within
`breaker_window_s` the circuit opens and no restart is tried until a person
acts (or the window passes). A worker that stays up for `stable_after_s`
resets the count. The clock is a parameter so the policy is tested without
waiting.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RestartSettings:
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    jitter: float = 0.2  # +-20 % so a fleet of restarts does not move in lockstep
    max_attempts: int = 3
    breaker_failures: int = 5
    breaker_window_s: float = 300.0
    stable_after_s: float = 300.0


@dataclass
class Decision:
    restart: bool
    delay_s: float = 0.0
    reason: str = ""


@dataclass
class _History:
    attempts: int = 0
    failures: deque[float] = field(default_factory=deque)
    up_since: float | None = None


class RestartPolicy:
    def __init__(
        self,
        settings: RestartSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings or RestartSettings()
        self._clock = clock
        self._rng = rng or random.Random()
        self._history: dict[tuple[str, str], _History] = {}

    def _get(self, key: tuple[str, str]) -> _History:
        return self._history.setdefault(key, _History())

    def started(self, key: tuple[str, str]) -> None:
        """A worker for `key` is ready: start timing its stable uptime."""
        self._get(key).up_since = self._clock()

    def failed(self, key: tuple[str, str]) -> Decision:
        """A worker for `key` died or hung: should it be started again, and when?"""
        s = self.settings
        history = self._get(key)
        now = self._clock()
        if history.up_since is not None and now - history.up_since >= s.stable_after_s:
            history.attempts = 0
            history.failures.clear()
        history.up_since = None
        history.failures.append(now)
        while history.failures and now - history.failures[0] > s.breaker_window_s:
            history.failures.popleft()
        if len(history.failures) >= s.breaker_failures:
            return Decision(
                False,
                reason=f"circuit open: {len(history.failures)} failures in {s.breaker_window_s:g}s",
            )
        if history.attempts >= s.max_attempts:
            return Decision(False, reason=f"gave up after {history.attempts} restarts")
        delay = min(s.max_delay_s, s.base_delay_s * 2**history.attempts)
        delay *= 1 + self._rng.uniform(-s.jitter, s.jitter)
        history.attempts += 1
        return Decision(True, delay_s=max(0.0, delay), reason=f"restart {history.attempts}")

    def circuit_open(self, key: tuple[str, str]) -> bool:
        s = self.settings
        history = self._history.get(key)
        if history is None:
            return False
        now = self._clock()
        recent = [t for t in history.failures if now - t <= s.breaker_window_s]
        return len(recent) >= s.breaker_failures

    def reset(self, key: tuple[str, str]) -> None:
        self._history.pop(key, None)
