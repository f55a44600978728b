"""Fuzzing the queen's HTTP API with arbitrary JSON bodies and headers: every
answer is the error envelope or a success, never a 5xx, and the queen lives.
Bounded: a fixed number of examples per property, against one real queen."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.plugins.queen import QueenProcess, start_queen, stop_queen

POST_ROUTES = [
    "/v2/registry/beehives/add",
    "/v2/registry/beehives/remove",
    "/v2/workers/shutdown",
    "/v2/tasks",
    "/v2/keys/add",
    "/v2/keys/revoke",
]
FIELDS = [
    "node_name", "ssh_host", "ssh_port", "ssh_user", "ssh_key_path", "install_path",
    "worker_python", "accept_new_host_key", "worker_id", "node", "model", "prompt",
    "max_tokens", "temperature", "seed", "name", "admin", "models",
]  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
values = st.recursive(scalars, lambda v: st.lists(v, max_size=3), max_leaves=5)
bodies = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), values, max_size=8)
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def fuzz_queen() -> Iterator[QueenProcess]:
    with tempfile.TemporaryDirectory(prefix="rbee-fuzz-") as home:
        queen = start_queen(Path(home))
        try:
            yield queen
        finally:
            stop_queen(queen)


@FUZZ
@given(route=st.sampled_from(POST_ROUTES), body=bodies | values)
def test_no_body_makes_a_5xx(fuzz_queen: QueenProcess, route: str, body: object) -> None:
    with fuzz_queen.client() as c:
        r = c.post(route, json=body)
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert set(r.json()["error"]) >= {"code", "message", "correlation_id"}
    assert fuzz_queen.proc.poll() is None


@FUZZ
@given(raw=st.binary(max_size=300))
def test_no_raw_body_makes_a_5xx(fuzz_queen: QueenProcess, raw: bytes) -> None:
    with fuzz_queen.client() as c:
        r = c.post("/v2/tasks", content=raw, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text


@FUZZ
@given(value=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80))
def test_no_authorization_header_makes_a_5xx(fuzz_queen: QueenProcess, value: str) -> None:
    try:
        r = httpx.get(f"{fuzz_queen.url}/v2/workers/list", headers={"Authorization": value})
    except httpx.LocalProtocolError:
        return  # a header httpx will not send (leading/trailing spaces)
    assert r.status_code == 401, value
    assert r.headers["www-authenticate"] == "Bearer"


# Generators for what a black-box probe found: nesting past the depth limit,
# digits int() refuses in a numeric header, control and bidi characters.
deep_json = st.integers(33, 3000).map(lambda n: b"[" * n + b"]" * n)
odd_digits = st.text(st.sampled_from("0123456789\u00b2\u00b3\u00b9\u0663\u09e9"), min_size=1)
unsafe_chars = st.sampled_from("\x00\x07\x1b\r\n\x7f\x85\u200e\u202e\u2066")


@FUZZ
@given(route=st.sampled_from(POST_ROUTES), raw=deep_json)
def test_deep_nesting_is_a_400(fuzz_queen: QueenProcess, route: str, raw: bytes) -> None:
    with fuzz_queen.client() as c:
        r = c.post(route, content=raw, headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "INVALID_REQUEST"), r.text


@FUZZ
@given(value=odd_digits)
def test_a_deadline_of_any_digits_is_never_a_500(fuzz_queen: QueenProcess, value: str) -> None:
    raw = value.encode("latin-1", errors="ignore") or value.encode()
    r = httpx.get(f"{fuzz_queen.url}/health", headers={b"X-Request-Deadline": raw})
    # ASCII digits are a time (long past: 504 REQUEST_TIMEOUT); any other digit is malformed.
    expected = {200, 504} if raw.isdigit() and len(raw) <= 16 else {400}
    assert r.status_code in expected, (value, r.text)


@FUZZ
@given(
    field=st.sampled_from(["install_path", "ssh_key_path", "worker_python", "node_name"]),
    head=st.text(max_size=8),
    bad=unsafe_chars,
)
def test_control_characters_are_refused_in_names_and_paths(
    fuzz_queen: QueenProcess, field: str, head: str, bad: str
) -> None:
    body = {"node_name": "n", "ssh_host": "h", "ssh_port": 22, "ssh_user": "u"}
    with fuzz_queen.client() as c:
        r = c.post("/v2/registry/beehives/add", json={**body, field: f"/x{head}{bad}"})
    assert r.status_code == 400, r.text
    assert field in {f["field"] for f in r.json()["error"]["details"]["fields"]}
