"""No broken characters reach the user, whatever bytes the model emits.

The tiny model's tokenizer is byte-level BPE, so a model can emit any byte on its
own: half a character, a lone continuation byte, a character cut off at the end.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from rbee_worker.backends.base import GenerationParams
from rbee_worker.backends.torch_backend import TorchBackend
from rbee_worker.detokenize import REPLACEMENT, IncrementalDecoder


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))


def byte_ids(tokenizer: Any, data: bytes) -> list[int]:
    """One token per byte: what a model emits when it spells a character out."""
    from tokenizers.pre_tokenizers import ByteLevel

    table = _bytes_to_unicode()
    assert sorted(table.values()) == sorted(ByteLevel.alphabet())  # the same 256 symbols
    return [tokenizer.token_to_id(table[b]) for b in data]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> symbol table, which the ByteLevel pre-tokenizer uses."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    symbols = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            symbols.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, symbols), strict=True))


def decode_all(tokenizer: Any, ids: list[int]) -> list[str]:
    decoder = IncrementalDecoder(tokenizer.decode)
    return [decoder.push(i) for i in ids] + [decoder.flush()]


def test_split_characters_come_out_whole(tokenizer: Any) -> None:
    bee, e_acute = "🐝".encode(), "é".encode()
    ids = byte_ids(tokenizer, b"a" + bee + b"b" + e_acute)
    pieces = decode_all(tokenizer, ids)
    assert "".join(pieces) == "a🐝bé"
    # The bee's four bytes came one a token: three pushes held back, one gave it whole.
    assert pieces[1:5] == ["", "", "", "🐝"]


def test_bytes_that_never_form_a_character_are_dropped(tokenizer: Any) -> None:
    lone_continuation, cut_bee = b"\x80", "🐝".encode()[:3]
    ids = byte_ids(tokenizer, b"x" + lone_continuation + b"y" + cut_bee + b"z" + cut_bee)
    assert REPLACEMENT in tokenizer.decode(ids)  # what the old decoder let through
    pieces = decode_all(tokenizer, ids)
    assert "".join(pieces) == "xyz"
    assert not any(REPLACEMENT in piece for piece in pieces)


def test_a_random_model_streams_no_replacement_marks(tiny_model_dir: Path) -> None:
    """The random-weight model spells bytes at random; its stream stays clean."""
    backend = TorchBackend(tiny_model_dir, "cpu")
    backend.load(lambda progress: None)
    params = GenerationParams(max_tokens=200, temperature=1.0, seed=7)
    generation = backend.generate("Once upon a time", params, threading.Event())
    text = "".join(generation)
    assert text and REPLACEMENT not in text
