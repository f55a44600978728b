"""The queen's front (rbee_queen/api/front.py) serves the inference routes
past Starlette's router: they must answer, fail and be counted as the router
would have them.

The first tests run a real queen; the last one sets the front's direct
dispatch beside the router's, in process, around one endpoint that fails in
each way the app's handlers know."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest
from peewee import OperationalError
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rbee_queen.api.front import Front
from rbee_queen.app import HANDLERS
from rbee_queen.errors import InvalidRequest
from tests.plugins.queen import QueenProcess

INFERENCE = ("/v2/tasks", "/v1/completions", "/v1/chat/completions")


@pytest.mark.parametrize("path", INFERENCE)
def test_a_wrong_method_on_an_inference_route_is_still_the_routers_405(
    queen: QueenProcess, path: str
) -> None:
    with queen.client() as client:
        r = client.get(path)
    assert (r.status_code, r.json()["error"]["code"]) == (405, "METHOD_NOT_ALLOWED")


def test_an_inference_refused_at_each_step_is_answered_and_counted(queen: QueenProcess) -> None:
    sent = {"x-correlation-id": "front-check-1"}
    with queen.anonymous() as anonymous:
        no_key = anonymous.post("/v2/tasks", json={"model": "tiny", "prompt": "hi"})
    with queen.client() as client:
        bad_deadline = client.post(
            "/v1/chat/completions", json={}, headers={"x-request-deadline": "soon"}
        )
        invalid = client.post("/v2/tasks", json={"model": "tiny"}, headers=sent)  # no prompt
        openai = client.post("/v1/chat/completions", json={"model": "tiny"})
        metrics = client.get("/metrics").text
    assert (no_key.status_code, no_key.json()["error"]["code"]) == (401, "MISSING_API_KEY")
    assert no_key.headers["www-authenticate"] == "Bearer"
    assert bad_deadline.status_code == 400  # before the auth and the route, in /v1's shape
    assert bad_deadline.json()["error"]["param"] == "X-Request-Deadline"
    assert (invalid.status_code, invalid.json()["error"]["code"]) == (400, "INVALID_REQUEST")
    assert invalid.headers["x-correlation-id"] == "front-check-1"
    assert invalid.json()["error"]["correlation_id"] == "front-check-1"
    assert openai.status_code == 400 and "message" in openai.json()["error"]
    assert openai.headers["x-correlation-id"]
    counted = _samples(metrics, "rbee_http_request_duration_seconds_count")
    assert counted[("/v2/tasks", "POST", "4xx")] == 2  # the 401 and the 400
    assert counted[("/v1/chat/completions", "POST", "4xx")] == 2
    errors = _samples(metrics, "rbee_errors_total", ("code", "source"))
    assert errors[("MISSING_API_KEY", "api")] >= 1
    assert errors[("INVALID_REQUEST", "api")] >= 2


def _samples(
    text: str, name: str, labels: tuple[str, ...] = ("route", "method", "status")
) -> dict[tuple[str, ...], float]:
    found: dict[tuple[str, ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                key = tuple(sample.labels.get(label, "") for label in labels)
                found[key] = found.get(key, 0) + sample.value
    return found


async def refuse(request: Request) -> Response:
    raise InvalidRequest("refused by the endpoint")


async def lock(request: Request) -> Response:
    raise OperationalError("database is locked")


async def crash(request: Request) -> Response:
    raise RuntimeError("a bug")


async def answer(request: Request) -> Response:
    return Response(await request.body(), media_type="application/json")


Endpoint = Callable[[Request], Awaitable[Response]]


@pytest.mark.parametrize("endpoint", [answer, refuse, lock, crash])
async def test_the_direct_dispatch_answers_as_the_router_would(endpoint: Endpoint) -> None:
    # /health: a public path, so no key ring is needed around the endpoint.
    answers = []
    for direct in (True, False):
        routes = [Route("/health", endpoint, methods=["POST"])]
        front = Middleware(Front, direct=routes if direct else [], handlers=HANDLERS)
        app = Starlette(routes=routes, middleware=[front], exception_handlers=HANDLERS)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://queen") as client:
            sent = {"x-correlation-id": "c1"}
            r = await client.post("/health", content=b'{"a": 1}', headers=sent)
        answers.append((r.status_code, r.headers.get("retry-after"), r.content))
    assert answers[0] == answers[1]
    assert answers[0][0] == {answer: 200, refuse: 400, lock: 503, crash: 500}[endpoint]
