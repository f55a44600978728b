"""Steps for named keys and the queen's log of refused tokens."""

from __future__ import annotations

import httpx
from behave import given, then, when
from behave.runner import Context

from features.steps.http_steps import fill, send


@given('a named key "{name}" for the models {models}')
def step_key_for(context: Context, name: str, models: str) -> None:
    body = f'{{"name": "{name}", "models": {models}}}'
    r = send(context, "POST", "/v2/keys/add", body=body)
    assert r.status_code == 201, r.text
    context.__dict__.setdefault("keys", {})[name] = r.json()["token"]


@given('a named key "{name}"')
def step_key(context: Context, name: str) -> None:
    r = send(context, "POST", "/v2/keys/add", body=f'{{"name": "{name}"}}')
    assert r.status_code == 201, r.text
    context.__dict__.setdefault("keys", {})[name] = r.json()["token"]


@when("I GET {path} with a bearer token of {kb:d} KB")
def step_huge_bearer(context: Context, path: str, kb: int) -> None:
    send(context, "GET", path, headers={"Authorization": "Bearer " + "A" * kb * 1024}, token=False)


@when('I {method:Method} {path} as the key "{name}" with {body}')
def step_as_key_body(context: Context, method: str, path: str, name: str, body: str) -> None:
    header = f"Bearer {context.keys[name]}"
    send(context, method, path, body=body, headers={"Authorization": header})


@when('I {method:Method} {path} as the key "{name}"')
def step_as_key(context: Context, method: str, path: str, name: str) -> None:
    send(context, method, path, headers={"Authorization": f"Bearer {context.keys[name]}"})


@then('the answer does not contain the token of "{name}"')
def step_no_key_token(context: Context, name: str) -> None:
    assert context.keys[name] not in context.response.text


@then("the queen's log names the refused token by a fingerprint, not in full")
def step_refusal_logged(context: Context) -> None:
    log = (context.home / "logs" / "queen.log").read_text()
    refusals = [line for line in log.splitlines() if "auth failure" in line]
    assert refusals and "token:" in refusals[-1], refusals[-1:]
    assert context.refused_token not in log


@when('I call GET {path} with the unknown token "{token}"')
def step_unknown_token(context: Context, path: str, token: str) -> None:
    context.refused_token = fill(context, token)
    header = {"Authorization": f"Bearer {context.refused_token}"}
    context.http = context.response = httpx.get(
        f"{context.queen_url}{path}", headers=header, timeout=10
    )
