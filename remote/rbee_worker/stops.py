"""Stop sequences on streamed text: the output ends just before the first match.

Text that could still become a stop string (a suffix of what has been seen that
is a prefix of some stop string) is held back until the next piece settles it,
so a match that spans two tokens never leaks its first half to the client.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""

    def push(self, piece: str) -> tuple[str, str | None]:
        """(text safe to emit, the stop string matched or None)."""
        if not self._stops:
            return piece, None
        text = self._held + piece
        match = self._earliest_match(text)
        if match is not None:
            self._held = ""
            return text[: match[0]], match[1]
        hold = self._longest_partial(text)
        self._held = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold], None

    def flush(self) -> str:
        """What was held back, once no more text will come."""
        held, self._held = self._held, ""
        return held

    def _earliest_match(self, text: str) -> tuple[int, str] | None:
        best: tuple[int, str] | None = None
        for stop in self._stops:
            at = text.find(stop)
            if at >= 0 and (best is None or at < best[0]):
                best = (at, stop)
        return best

    def _longest_partial(self, text: str) -> int:
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest
