"""The OpenAPI description: it names every route the app registers (so the two
cannot drift), it is a valid OpenAPI document, and the queen serves it behind
the same bearer auth as every route but /health."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate
from starlette.routing import Route

from rbee_queen.api.openapi import DOCUMENT
from rbee_queen.app import create_app
from rbee_queen.config import QueenConfig
from rbee_queen.validation import IDENTIFIER, MODEL_REF
from tests.plugins.queen import QueenProcess

DESCRIBED_METHODS = {"get", "post", "put", "patch", "delete"}


def registered_operations() -> set[tuple[str, str]]:
    app = create_app(QueenConfig.from_env())
    ops = set()
    for route in app.routes:
        assert isinstance(route, Route), f"unexpected route type {type(route).__name__}"
        for method in route.methods or ():
            if method != "HEAD":  # Starlette adds HEAD to every GET route
                ops.add((method.lower(), route.path))
    return ops


def described_operations() -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, item in DOCUMENT["paths"].items()
        for method in item
        if method in DESCRIBED_METHODS
    }


def test_every_registered_route_is_described_and_nothing_else() -> None:
    registered = registered_operations()
    assert ("get", "/openapi.json") in registered
    assert registered - described_operations() == set(), "routes missing from openapi.py"
    assert described_operations() - registered == set(), "openapi.py describes unknown routes"


def test_the_document_is_valid_openapi() -> None:
    validate(DOCUMENT)
    assert DOCUMENT["openapi"].startswith("3.")


def test_only_health_is_public_and_errors_use_the_envelope() -> None:
    assert DOCUMENT["security"] == [{"bearer": []}]
    for path, item in DOCUMENT["paths"].items():
        for op in item.values():
            public = op.get("security") == []
            assert public == (path == "/health"), path
            assert ("401" in op["responses"]) != public, path
            error = op["responses"]["4XX"]["$ref"]
            expected = "OpenAIError" if path.startswith("/v1/") else "Error"
            assert error == f"#/components/responses/{expected}", path


def test_request_schemas_use_the_validators_patterns() -> None:
    body = DOCUMENT["paths"]["/v2/models/remove"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    assert schema["properties"]["node"]["pattern"] == IDENTIFIER.pattern
    assert schema["properties"]["model"]["pattern"] == MODEL_REF.pattern
    assert schema["required"] == ["node", "model"]


@pytest.mark.parametrize("send_token", [True, False])
def test_the_queen_serves_it_behind_auth(queen: QueenProcess, send_token: bool) -> None:
    with queen.client() if send_token else queen.anonymous() as c:
        r = c.get("/openapi.json")
    if send_token:
        assert r.status_code == 200
        assert r.json() == DOCUMENT
    else:
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["code"] == "MISSING_API_KEY"
