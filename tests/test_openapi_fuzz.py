"""Schemathesis fuzzes a live queen from its own OpenAPI description.

Only routes that cannot reach a real node are fuzzed (no node
add/import/install/update, no model download/copy, and not the endless
/v2/events stream). The queen has no nodes and nothing adds one, so every route
that names one answers from its own state, and the inference routes (/v2/tasks
and the OpenAI ones) check every field and then fail to place the request: their
validators meet every value the description allows, and values it does not.
Bounded: a fixed number of examples per operation, positive and negative.
Checks: no 5xx, every response matches the description (so every error is the
envelope, OpenAI's on /v1, and 401s carry `WWW-Authenticate: Bearer`), and no
request hangs (each has a time limit).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import response_schema_conformance

from rbee_queen.api.openapi import DOCUMENT
from rbee_wire.limits import LIMITS
from tests.plugins.queen import QueenProcess, start_queen, stop_queen

EXAMPLES_PER_OPERATION = 25
REQUEST_LIMIT_S = 10.0  # a bound against hangs, far above any answer here
UNSAFE = [
    "/v2/events",  # a stream that never ends
    "/v2/registry/beehives/add",
    "/v2/registry/beehives/import",
    "/v2/registry/beehives/install",
    "/v2/registry/beehives/update",
    "/v2/models/download",
    "/v2/models/copy",
]
INFERENCE = ["/v2/tasks", "/v1/completions", "/v1/chat/completions"]
MODES = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]


@pytest.fixture(scope="module")
def fuzz_queen() -> Iterator[QueenProcess]:
    with tempfile.TemporaryDirectory(prefix="rbee-openapi-fuzz-") as home:
        queen = start_queen(Path(home))
        try:
            yield queen
        finally:
            stop_queen(queen)


def fuzzed_operations(mode: schemathesis.GenerationMode | None = None) -> list[Any]:
    """The safe operations; for negative data, those that take any input to break."""
    schema = schemathesis.openapi.from_dict(DOCUMENT).exclude(path=UNSAFE)
    ops = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the description loads without errors
        ops.append(result.ok())
    if mode is schemathesis.GenerationMode.NEGATIVE:
        ops = [op for op in ops if set(_described(op)) & {"parameters", "requestBody"}]
    return ops


def _described(op: Any) -> dict[str, Any]:
    described: dict[str, Any] = DOCUMENT["paths"][op.path][op.method.lower()]
    return described


def envelope(ctx: Any, response: Any, case: Any) -> bool | None:
    """Spelled out as well as checked against the schema: every error is the
    envelope, or past auth on /v1 OpenAI's error with the correlation id beside it."""
    if response.status_code >= 400:
        error = response.json()["error"]
        if case.path.startswith("/v1/") and response.status_code != 401:
            keys = {"message", "type", "param", "code", "correlation_id"}
        else:
            keys = {"code", "message", "details", "correlation_id"}
        assert set(error) == keys, error
        assert error["correlation_id"] == response.headers["x-correlation-id"][0]
    return None


def accepts_the_described(ctx: Any, response: Any, case: Any) -> bool | None:
    """A body the description allows passes every bounded field's check: the
    validator and the schema are built from the same table (rbee_wire.limits)."""
    if response.status_code == 400 and case.path in INFERENCE:
        error = response.json()["error"]
        named = {f["field"] for f in error.get("details", {}).get("fields", [])}
        named.add(error.get("param"))
        assert not named & set(LIMITS), error
    return None


def test_the_fuzzed_set_excludes_every_unsafe_route() -> None:
    paths = {op.path for op in fuzzed_operations()}
    assert paths.isdisjoint(UNSAFE)
    assert {"/v2/keys/add", "/v2/workers/{worker_id}/events", "/v2/logs"} <= paths
    assert set(INFERENCE) <= paths


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_fuzz_the_queen_from_its_description(
    fuzz_queen: QueenProcess, mode: schemathesis.GenerationMode
) -> None:
    headers = {"Authorization": f"Bearer {fuzz_queen.token}"}
    checks = [not_a_server_error, response_schema_conformance, envelope]
    if mode is schemathesis.GenerationMode.POSITIVE:
        checks.append(accepts_the_described)
    calls = 0
    operations = fuzzed_operations(mode)
    assert len(operations) >= 10
    for operation in operations:

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            nonlocal calls
            response = case.call(base_url=fuzz_queen.url, headers=headers, timeout=REQUEST_LIMIT_S)
            calls += 1
            case.validate_response(response, checks=checks)

        run()
    assert calls >= len(operations)
    assert fuzz_queen.proc.poll() is None, fuzz_queen.log


# What a black-box probe found, laid over schemathesis's own cases: a body
# nested past the depth limit, a control or bidi character in each string, a
# deadline of digits int() refuses. Each must be a coded 4xx, never a 5xx.
HOSTILE_EXAMPLES = 4
hostile = st.sampled_from(["deep", "control", "deadline"])
UNSAFE_STRING_CHARS = "\x1b\r\n\x00\u202e"


def _poison(value: Any, bad: str) -> Any:
    if isinstance(value, str):
        return value + bad
    if isinstance(value, dict):
        return {k: _poison(v, bad) for k, v in value.items()}
    if isinstance(value, list):
        return [_poison(v, bad) for v in value]
    return value


def made_hostile(case: Any, kind: str, bad: str) -> Any:
    if kind == "deep":
        case.body = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
    elif kind == "control":
        case.body = _poison(case.body, bad)
    else:
        case.headers = {**(case.headers or {}), "X-Request-Deadline": "1\u00b2"}
    return case


def test_hostile_values_over_described_bodies_are_never_a_5xx(fuzz_queen: QueenProcess) -> None:
    headers = {"Authorization": f"Bearer {fuzz_queen.token}"}
    operations = [op for op in fuzzed_operations() if "requestBody" in _described(op)]
    assert len(operations) >= 5
    for operation in operations:
        cases = st.tuples(
            operation.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE),
            hostile,
            st.sampled_from(UNSAFE_STRING_CHARS),
        ).map(lambda t: made_hostile(*t))

        @settings(max_examples=HOSTILE_EXAMPLES, deadline=None, database=None)
        @given(case=cases)
        def run(case: Any) -> None:
            response = case.call(base_url=fuzz_queen.url, headers=headers, timeout=REQUEST_LIMIT_S)
            case.validate_response(response, checks=[not_a_server_error, envelope])

        run()
    assert fuzz_queen.proc.poll() is None, fuzz_queen.log
