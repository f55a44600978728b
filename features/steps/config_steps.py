"""Steps of 360-configuration.feature: the settings file, --check-config,
SIGHUP on the keeper-started queen, and what the queen says it runs by."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
from behave import given, then, when
from behave.runner import Context

from tests.plugins.sshd import free_port


def settings_file(context: Context) -> str:
    return str(context.home / "queen.toml")


@given("the queen's settings file says:")
@when("the queen's settings file says:")
def step_settings_file(context: Context) -> None:
    (context.home / "queen.toml").write_text(context.text + "\n")


@given("the environment sets {name} to {value}")
def step_env(context: Context, name: str, value: str) -> None:
    context.env[name] = value


def run_queen(context: Context, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "rbee_queen", "--config", settings_file(context), *args]
    return subprocess.run(argv, env=context.env, capture_output=True, text=True, timeout=30)


@when("I start rbee-queen with the settings file")
def step_start(context: Context) -> None:
    context.queen_run = run_queen(context, "--port", str(free_port()))


@then("it exits 2 and lists {count:d} problems")
def step_exit_2(context: Context, count: int) -> None:
    run = context.queen_run
    assert run.returncode == 2, run.stderr
    assert f"[CONFIG_INVALID] {count} problem(s)" in run.stderr, run.stderr


@then('the problems include "{text}"')
def step_problem(context: Context, text: str) -> None:
    assert text in context.queen_run.stderr, context.queen_run.stderr


@then("nothing but the settings file is in RBEE_HOME")
def step_nothing_written(context: Context) -> None:
    assert sorted(p.name for p in context.home.iterdir()) == ["queen.toml"]


@when("I check the queen's settings with {args}")
def step_check(context: Context, args: str) -> None:
    context.queen_run = run_queen(context, "--check-config", *args.split())
    assert context.queen_run.returncode == 0, context.queen_run.stderr


@then("the setting {key} is {value} from {source}")
def step_setting(context: Context, key: str, value: str, source: str) -> None:
    want = f"{key} = {value}  # {source}, "
    assert want in context.queen_run.stdout, context.queen_run.stdout


@when("I send the queen SIGHUP")
def step_sighup(context: Context) -> None:
    pid = json.loads((context.home / "queen.pid").read_text())["pid"]
    os.kill(pid, signal.SIGHUP)


def admin_config(context: Context) -> dict[str, dict[str, object]]:
    token = (context.home / "api-token").read_text().strip()
    r = httpx.get(
        f"{context.queen_url}/v2/admin/config",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return {row["key"]: row for row in r.json()["settings"]}


def audit_text(context: Context) -> str:
    return "".join(p.read_text() for p in sorted((context.home / "audit").glob("*.jsonl")))


@then("the queen's audit log records {event}")
def step_audit(context: Context, event: str) -> None:
    deadline = time.monotonic() + 10
    while f'"event":"{event}"' not in audit_text(context):
        assert time.monotonic() < deadline, audit_text(context)[-2000:]
        time.sleep(0.05)


@then("the queen's GET /v2/admin/config shows {key} {value} from {source}")
def step_admin(context: Context, key: str, value: str, source: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        row = admin_config(context)[key]
        if (json.dumps(row["value"]), row["source"]) == (value, source):
            return
        assert time.monotonic() < deadline, row
        time.sleep(0.05)
