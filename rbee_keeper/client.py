"""The queen's HTTP API as Python calls.

httpx's exceptions and the queen's error envelopes become `rbee_queen.errors`
exceptions here and nowhere else, so the commands only ever see `RbeeError`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from rbee_keeper.sse import iter_sse_data
from rbee_keeper.token import BearerToken
from rbee_queen import error_envelope, errors
from rbee_wire.error_text import shown

CONTROL_TIMEOUT = httpx.Timeout(30.0)
# Short, because it is also the poll while a local queen starts.
HEALTH_TIMEOUT = httpx.Timeout(5.0)
# A cold start loads a model before the first token arrives; the queen's own
# loading timeout should end a stuck load well before this read timeout does.
STREAM_TIMEOUT = httpx.Timeout(30.0, read=600.0)
# `setup install` may wait on pip downloading torch; the queen's own limit is an hour.
INSTALL_TIMEOUT = httpx.Timeout(30.0, read=3700.0)
# The event stream may be quiet for as long as nothing changes in the fleet.
EVENTS_TIMEOUT = httpx.Timeout(10.0, read=None)

END_OF_STREAM = "[DONE]"

Json = dict[str, Any]


class QueenClient:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, timeout=CONTROL_TIMEOUT, auth=BearerToken()
        )

    def __enter__(self) -> QueenClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def health(self) -> Json:
        return self._call("GET", "/health", timeout=HEALTH_TIMEOUT)

    def is_healthy(self) -> bool:
        try:
            self.health()
        except errors.RbeeError:
            return False
        return True

    def add_node(self, node: Json) -> Json:
        return self._call("POST", "/v2/registry/beehives/add", json=node)

    def list_nodes(self) -> Json:
        return self._call("GET", "/v2/registry/beehives/list")

    def update_node(self, changes: Json) -> Json:
        return self._call("POST", "/v2/registry/beehives/update", json=changes)

    def remove_node(self, node_name: str) -> Json:
        return self._call("POST", "/v2/registry/beehives/remove", json={"node_name": node_name})

    def import_nodes(self, nodes: list[Json]) -> Json:
        return self._call("POST", "/v2/registry/beehives/import", json={"nodes": nodes})

    def install_node(self, request: Json) -> Json:
        return self._call(
            "POST", "/v2/registry/beehives/install", json=request, timeout=INSTALL_TIMEOUT
        )

    def node_status(self, node: str | None = None) -> Json:
        params = {"node": node} if node else {}
        return self._call("GET", "/v2/nodes/status", params=params)

    def node_preflight(self) -> Json:
        return self._call("GET", "/v2/nodes/preflight")

    def list_workers(self) -> Json:
        return self._call("GET", "/v2/workers/list")

    def shutdown_worker(self, worker_id: str) -> Json:
        return self._call("POST", "/v2/workers/shutdown", json={"worker_id": worker_id})

    def logs(
        self, *, node: str | None = None, worker_id: str | None = None, lines: int = 100
    ) -> Json:
        params: dict[str, str] = {"lines": str(lines)}
        if node is not None:
            params["node"] = node
        if worker_id is not None:
            params["worker_id"] = worker_id
        return self._call("GET", "/v2/logs", params=params)

    def watch_events(self) -> TaskStream:
        """The fleet's live event stream (`GET /v2/events`): a snapshot, then changes."""
        request = self._http.build_request("GET", "/v2/events", timeout=EVENTS_TIMEOUT)
        return self._open_stream(request)

    def list_keys(self) -> Json:
        return self._call("GET", "/v2/keys/list")

    def add_key(self, name: str, *, admin: bool, models: list[str] | None) -> Json:
        body = {"name": name, "admin": admin, "models": models}
        return self._call("POST", "/v2/keys/add", json=body)

    def revoke_key(self, name: str) -> Json:
        return self._call("POST", "/v2/keys/revoke", json={"name": name})

    def list_node_models(self, node: str | None = None) -> Json:
        return self._call("GET", "/v2/models", params={"node": node} if node else {})

    def list_catalog(self) -> Json:
        return self._call("GET", "/v2/registry/models/list")

    def add_catalog(self, body: Json) -> Json:
        return self._call("POST", "/v2/registry/models/add", json=body)

    def update_catalog(self, body: Json) -> Json:
        return self._call("POST", "/v2/registry/models/update", json=body)

    def remove_catalog(self, name: str) -> Json:
        return self._call("POST", "/v2/registry/models/remove", json={"name": name})

    def remove_node_model(self, node: str, model: str) -> Json:
        return self._call("POST", "/v2/models/remove", json={"node": node, "model": model})

    def model_transfer(self, action: str, body: Json) -> TaskStream:
        """`POST /v2/models/download` or `/v2/models/copy`: progress events, then done."""
        path = f"/v2/models/{action}"
        request = self._http.build_request("POST", path, json=body, timeout=STREAM_TIMEOUT)
        return self._open_stream(request)

    def start_task(self, task: Json) -> TaskStream:
        """Submit an inference task; errors before the stream starts are raised here."""
        request = self._http.build_request("POST", "/v2/tasks", json=task, timeout=STREAM_TIMEOUT)
        return self._open_stream(request)

    def _open_stream(self, request: httpx.Request) -> TaskStream:
        """Send a request whose answer is an event stream; an error answer (before
        the stream starts) is raised as the rbee error it carries."""
        with translated_errors(self.base_url):
            response = self._http.send(request, stream=True)
            if response.is_error:
                try:
                    response.read()
                finally:
                    response.close()
                raise error_from_response(response)
        return TaskStream(response, self.base_url)

    def _call(self, method: str, path: str, **kwargs: Any) -> Json:
        with translated_errors(self.base_url):
            response = self._http.request(method, path, **kwargs)
        if response.is_error:
            raise error_from_response(response)
        return json_object(response.content, f"the queen's answer to {method} {path}")


class TaskStream:
    """An open `POST /v2/tasks` event stream. Closing it early is how the keeper
    cancels: the queen sees the disconnect and cancels the job on the worker."""

    def __init__(self, response: httpx.Response, base_url: str) -> None:
        self._response = response
        self._base_url = base_url

    def __enter__(self) -> TaskStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._response.close()

    def events(self) -> Iterator[Json]:
        with translated_errors(self._base_url):
            for data in iter_sse_data(self._response.iter_lines()):
                if data == END_OF_STREAM:
                    return
                yield json_object(data, "an event from the queen")
        raise errors.QueenUnavailable(
            f"the queen at {self._base_url} closed the stream before it finished"
        )


def error_from_event(event: Json) -> errors.RbeeError:
    """The exception an `{"type": "error"}` stream event stands for."""
    code = event.get("code") or errors.InferenceFailed.code
    message = event.get("message") or code
    return error_envelope.from_envelope(502, {"error": {"code": code, "message": message}})


def error_from_response(response: httpx.Response) -> errors.RbeeError:
    try:
        body = response.json()
    except ValueError:
        body = None
    return error_envelope.from_envelope(response.status_code, body)


def json_object(text: str | bytes, what: str) -> Json:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise errors.RbeeError(f"{what} is not a JSON object")
    return value


@contextmanager
def translated_errors(base_url: str) -> Iterator[None]:
    """Turn httpx's exceptions into the rbee error tree."""
    base_url = shown(base_url, quote=False)  # it may come from a file or the environment
    try:
        yield
    except httpx.ConnectTimeout as exc:
        raise errors.QueenUnavailable(f"cannot reach the queen at {base_url}: timed out") from exc
    except httpx.TimeoutException as exc:
        raise errors.RequestTimeout(f"the queen at {base_url} did not answer in time") from exc
    except httpx.RequestError as exc:
        reason = str(exc) or type(exc).__name__
        raise errors.QueenUnavailable(f"cannot reach the queen at {base_url}: {reason}") from exc
