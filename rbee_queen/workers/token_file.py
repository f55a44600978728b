"""Worker tokens, kept where a queen that must talk to a worker it did not
start can find them: the database (`worker_tokens`), which a restarted queen
and a second queen taking a node over both read. A file under RBEE_HOME
(0600), where queens before the database held them, is still read, so their
workers are re-adopted too. The worker deletes its own copy once read."""

from __future__ import annotations

import json
from pathlib import Path

from rbee_queen.store.tables import WorkerToken


class TokenFile:
    def __init__(self, path: Path) -> None:
        self.path = path  # the older file, read only

    def load(self) -> dict[str, str]:
        tokens = self._from_file()
        tokens.update({row.worker_id: row.token for row in WorkerToken.select()})
        return tokens

    def _from_file(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def put(self, worker_id: str, token: str) -> None:
        WorkerToken.insert(worker_id=worker_id, token=token).on_conflict(
            conflict_target=[WorkerToken.worker_id], update={WorkerToken.token: token}
        ).execute()

    def drop(self, worker_id: str) -> None:
        WorkerToken.delete().where(WorkerToken.worker_id == worker_id).execute()
