"""The keeper's API token: where it comes from, and how it rides on each request.

Order: `--token-file` / `$RBEE_API_TOKEN_FILE`, then `$RBEE_API_TOKEN`, then
`$RBEE_HOME/api-token` (the file a local queen writes on first start). The
token is read when the first request goes out, not when the client is made:
a keeper that has just started the local queen finds the file the queen wrote.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path

import httpx

from rbee_queen.secrets import from_environment, load_secret_file

TOKEN_FILE_ENV = "RBEE_API_TOKEN_FILE"
TOKEN_ENV = "RBEE_API_TOKEN"


def rbee_home() -> Path:
    return Path(os.environ.get("RBEE_HOME") or "~/.rbee").expanduser()


def find_token() -> str | None:
    explicit = os.environ.get(TOKEN_FILE_ENV)
    if explicit:
        return load_secret_file(Path(explicit).expanduser())
    from_env = from_environment(TOKEN_ENV)
    if from_env is not None:
        return from_env
    default = rbee_home() / "api-token"
    return load_secret_file(default) if default.exists() else None


class BearerToken(httpx.Auth):
    """Adds `Authorization: Bearer <token>` once a token can be found."""

    def __init__(self) -> None:
        self._token: str | None = None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if request.url.path == "/health":  # public: the token goes only where it is needed
            yield request
            return
        if self._token is None:
            self._token = find_token()
        if self._token is not None:
            request.headers["Authorization"] = f"Bearer {self._token}"
        yield request
