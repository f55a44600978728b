"""The keeper's reading of server-sent events."""

from __future__ import annotations

from rbee_keeper.sse import iter_sse_data


def test_one_event_per_blank_line() -> None:
    lines = ['data: {"type": "token"}', "", "data: [DONE]", ""]
    assert list(iter_sse_data(lines)) == ['{"type": "token"}', "[DONE]"]


def test_data_lines_of_one_event_are_joined() -> None:
    assert list(iter_sse_data(["data: a", "data:b", "", ""])) == ["a\nb"]


def test_comments_and_other_fields_are_skipped() -> None:
    lines = [": keep-alive", "", "event: token", "id: 7", "data: x", "retry: 10", ""]
    assert list(iter_sse_data(lines)) == ["x"]


def test_last_event_without_a_closing_blank_line() -> None:
    assert list(iter_sse_data(["data: x", "", "data: y"])) == ["x", "y"]
