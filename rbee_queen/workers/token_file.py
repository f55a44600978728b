"""Worker tokens on the queen's disk (0600), so a restarted queen can still talk
to the workers it re-adopts. They never leave the queen's machine."""

from __future__ import annotations

import json
import os
from pathlib import Path


class TokenFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def save(self, tokens: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(tokens, fh)
        os.replace(tmp, self.path)

    def put(self, worker_id: str, token: str) -> None:
        self.save({**self.load(), worker_id: token})

    def drop(self, worker_id: str) -> None:
        tokens = self.load()
        if tokens.pop(worker_id, None) is not None:
            self.save(tokens)
