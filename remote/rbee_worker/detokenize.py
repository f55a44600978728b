"""Turn a growing list of token ids into text pieces, one call per token.

Decoding each token alone breaks multi-byte characters and tokenizers that change
spacing by context, so the whole list is decoded every time and only the new
suffix is emitted. Decoders mark bytes that are not (yet) a whole UTF-8 character
with U+FFFD: a suffix that ends in one is held back until a later token completes
the character, and marks that no later token can complete (invalid bytes, or an
incomplete character at `flush`) are dropped, so no piece ever carries a broken
character, whatever the model emits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT = "\ufffd"


class IncrementalDecoder:
    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._emitted = 0  # characters of the decoded text already handed out

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        text = self._decode(self._ids)
        if text.endswith(REPLACEMENT):
            return ""
        return self._take(text)

    def flush(self) -> str:
        """Whatever is still held back, less the bytes that never formed a character."""
        return self._take(self._decode(self._ids)) if self._ids else ""

    def _take(self, text: str) -> str:
        piece = text[self._emitted :]
        self._emitted = max(self._emitted, len(text))
        return piece.replace(REPLACEMENT, "")
