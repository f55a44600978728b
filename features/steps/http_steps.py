"""Steps that talk HTTP to the queen directly, where the keeper would hide the
detail a scenario is about: status codes, headers, the error envelope."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any

import httpx
import parse
from behave import register_type, then, when
from behave.runner import Context

from tests.plugins.sshd import free_port


@parse.with_pattern(r"GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS")
def parse_method(text: str) -> str:
    return text


@parse.with_pattern(r"ago|away")
def parse_when(text: str) -> str:
    return text


register_type(Method=parse_method, AgoOrAway=parse_when)


def owner_token(context: Context) -> str:
    return (context.home / "api-token").read_text().strip()


def fill(context: Context, text: str) -> str:
    """{model}, {home} and {token} in a step's text, by plain replacement (JSON
    bodies have braces of their own)."""
    values = {
        "{model}": context.model_dir,
        "{home}": context.home,
        "{install}": context.home / "node",
        "{port}": context.sshd.port,
        "{user}": context.sshd.user,
        "{key}": context.sshd.client_key,
        "{free_port}": context.__dict__.setdefault("_free_port", free_port()),
    }
    for name, value in values.items():
        text = text.replace(name, str(value))
    if "{token}" in text:
        text = text.replace("{token}", owner_token(context))
    return text


def send(
    context: Context,
    method: str,
    path: str,
    *,
    body: str | None = None,
    headers: Mapping[str, str | bytes] | None = None,
    token: bool = True,
) -> httpx.Response:
    sent = dict(headers or {})
    if token:
        sent.setdefault("Authorization", f"Bearer {owner_token(context)}")
    content = fill(context, body).encode() if body is not None else None
    if content is not None:
        sent.setdefault("Content-Type", "application/json")
    url = f"{context.queen_url}{fill(context, path)}"
    started = time.monotonic()
    context.response = httpx.request(method, url, content=content, headers=sent, timeout=60)
    context.http = context.response  # the name security_steps' checks read
    context.response_s = time.monotonic() - started
    return context.response


def error_of(context: Context) -> dict[str, Any]:
    body = context.response.json()
    assert "error" in body, body
    return dict(body["error"])


@when("I {method:Method} {path} as the owner")
def step_send(context: Context, method: str, path: str) -> None:
    send(context, method, path)


@when("I {method:Method} {path} as the owner with {body}")
def step_send_body(context: Context, method: str, path: str, body: str) -> None:
    send(context, method, path, body=body)


@when("I {method:Method} {path} as the owner with the body:")
def step_send_text(context: Context, method: str, path: str) -> None:
    send(context, method, path, body=context.text)


@when("I {method:Method} {path} with no Authorization header")
def step_send_anonymous(context: Context, method: str, path: str) -> None:
    send(context, method, path, body="{}" if method != "GET" else None, token=False)


@when('I {method:Method} {path} sending the header "{name}: {value}"')
def step_send_header(context: Context, method: str, path: str, name: str, value: str) -> None:
    send(context, method, path, headers={name: fill(context, value)})


@when(
    "I {method:Method} {path} with no Authorization header,"
    ' sending the latin-1 header "{name}: {value}"'
)
def step_send_latin1(context: Context, method: str, path: str, name: str, value: str) -> None:
    # httpx refuses a str header outside ASCII; as bytes it goes out as written.
    send(context, method, path, headers={name: value.encode("latin-1")}, token=False)


@when("I {method:Method} {path} as the owner, nesting arrays {depth:d} deep in {where}")
def step_send_nested(context: Context, method: str, path: str, depth: int, where: str) -> None:
    arrays = "[" * depth + "]" * depth
    body = arrays if where == "the body" else f'{{"node": "local", {where}: {arrays}}}'
    send(context, method, path, body=body)


@then("the answer is HTTP {status:d}")
def step_status(context: Context, status: int) -> None:
    r = context.response
    assert r.status_code == status, (r.status_code, r.text[:300])


@then('the error lists the field "{field}" as {constraint}')
def step_field(context: Context, field: str, constraint: str) -> None:
    fields = error_of(context)["details"]["fields"]
    assert {"field": field, "constraint": constraint} in [
        {"field": f["field"], "constraint": f["constraint"]} for f in fields
    ], fields


@then("the error lists {count:d} fields")
def step_field_count(context: Context, count: int) -> None:
    fields = error_of(context)["details"]["fields"]
    assert len(fields) == count, fields


@then('the answer does not contain "{text}"')
def step_not_echoed(context: Context, text: str) -> None:
    assert fill(context, text) not in context.response.text, context.response.text


@then('the answer has the header "{name}" set to "{value}"')
def step_header(context: Context, name: str, value: str) -> None:
    assert context.response.headers.get(name) == value, dict(context.response.headers)


@then('the answer\'s JSON has "{key}" set to {value}')
def step_json_value(context: Context, key: str, value: str) -> None:
    data: Any = context.response.json()
    for part in key.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    assert data == json.loads(value), (key, data)


@then("the error's message is one line without a traceback")
def step_one_line(context: Context) -> None:
    message = error_of(context)["message"]
    assert message and "\n" not in message and "Traceback" not in message, message


@when("I GET {path} with {kb:d} KB of headers")
def step_big_headers(context: Context, path: str, kb: int) -> None:
    send(context, "GET", path, headers={"X-Padding": "a" * (kb * 1000)})


@then("the answer's correlation id is one the queen made")
def step_own_cid(context: Context) -> None:
    cid = context.response.headers["x-correlation-id"]
    assert re.fullmatch(r"[0-9a-f]{16}", cid), cid


@then("the queen's log has a line with the answer's correlation id")
def step_cid_logged(context: Context) -> None:
    cid = error_of(context)["correlation_id"]
    log = (context.home / "logs" / "queen.log").read_text()
    assert f"[{cid}]" in log, cid


@then("nothing was printed on stdout")
def step_no_stdout(context: Context) -> None:
    assert context.result.stdout == "", context.result.stdout


def deadline(ms: int) -> dict[str, str]:
    return {"X-Request-Deadline": str(int(time.time() * 1000) + ms)}


@when("I {method:Method} {path} as the owner, with a deadline {ms:d} ms {when:AgoOrAway}")
def step_deadline(context: Context, method: str, path: str, ms: int, when: str) -> None:
    send(context, method, path, headers=deadline(-ms if when == "ago" else ms))


@when(
    "I {method:Method} {path} as the owner, with a deadline {ms:d} ms {when:AgoOrAway},"
    " sending {body}"
)
def step_body_deadline(
    context: Context, method: str, path: str, ms: int, when: str, body: str
) -> None:
    send(context, method, path, body=body, headers=deadline(-ms if when == "ago" else ms))
