"""The one error an operation raises: a code from the reference and a message."""

from __future__ import annotations


class OpError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
