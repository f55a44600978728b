"""Steps for the keeper's own settings and output."""

from __future__ import annotations

import json

from behave import given, then
from behave.runner import Context


@given("keeper.toml says {line}")
def step_keeper_toml(context: Context, line: str) -> None:
    folder = context.home / "config" / "rbee"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "keeper.toml").write_text(line + "\n")
    context.env["XDG_CONFIG_HOME"] = str(context.home / "config")
    context.env.pop("RBEE_QUEEN_URL", None)


@given("RBEE_QUEEN_URL is not set")
def step_no_url(context: Context) -> None:
    assert "RBEE_QUEEN_URL" not in context.env


@given('{name} is "{value}"')
def step_env(context: Context, name: str, value: str) -> None:
    assert name.startswith("RBEE_"), name
    context.env[name] = value


@then("the output lists the commands {names}")
def step_commands(context: Context, names: str) -> None:
    out = context.result.stdout
    for name in names.replace(" and ", ", ").split(", "):
        assert f"    {name} " in out, (name, out)


@then("the output is the JSON {value}")
def step_json_output(context: Context, value: str) -> None:
    assert json.loads(context.result.stdout) == json.loads(value), context.result.stdout


@then('the keeper said "{text}"')
def step_keeper_said(context: Context, text: str) -> None:
    r = context.result
    assert text in r.stdout + r.stderr, (r.stdout, r.stderr)
