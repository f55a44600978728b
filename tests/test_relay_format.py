"""The OpenAI stream's per-token chunks come from a template made once per
completion (the relay's hot path); they must be the chunks `Shape.chunk` makes."""

from __future__ import annotations

import json

import pytest

from rbee_queen.api.openai_format import Shape

PIECES = ["a", " world", '"quoted" \\ back', "é 中文 🙂", "line\nbreak\ttab", "\x01\x7f", ""]


@pytest.mark.parametrize("kind", ["chat", "text"])
@pytest.mark.parametrize("piece", PIECES)
def test_token_chunk_is_chunk_byte_for_byte(kind: str, piece: str) -> None:
    shape = Shape(kind, 'model "with" quotes', "job-0123")
    made = shape.token_chunk(piece)
    assert made == shape.chunk(piece)
    assert made.startswith(b"data: ") and made.endswith(b"\n\n")
    choice = json.loads(made[len(b"data: ") :])["choices"][0]
    assert (choice["delta"]["content"] if kind == "chat" else choice["text"]) == piece
