"""What an error message may quote of the value it refuses.

Error messages cross from the queen to the keeper, the dashboard and logs;
both sides quote a request's or a file's value by this one rule, so a message
never carries escapes, bidi marks, shell characters or a long blob.
"""

from __future__ import annotations

import re

# Letters, digits and a few path and reference characters, at most 80 of them.
_SHOWABLE = re.compile(r"[A-Za-z0-9._/~@:+=-]{1,80}")
NOT_SHOWN = "(value not shown)"


def shown(value: object, *, quote: bool = True) -> str:
    """`value` when it is short and plain (quoted, unless `quote` is false: a
    key named after its section, a number), else a placeholder."""
    text = str(value)
    if not _SHOWABLE.fullmatch(text):
        return NOT_SHOWN
    return repr(text) if quote else text
