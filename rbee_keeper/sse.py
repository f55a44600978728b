"""Server-sent events: just enough of the format to read the queen's token stream."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def iter_sse_data(lines: Iterable[str]) -> Iterator[str]:
    """Yield the data of each event; an event is its `data:` lines up to a blank line.

    Comments (keep-alive pings) and the other fields (`event:`, `id:`, `retry:`)
    are skipped: the queen's events say what they are inside their JSON.
    """
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
            data = []
        elif line.startswith("data:"):
            value = line[len("data:") :]
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)
