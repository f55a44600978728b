"""Steps for auth, secrets and the audit log: raw HTTP where the keeper would
hide the detail (headers, status codes), the queen started by hand where its
start-up checks are the point."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from behave import given, then, when
from behave.runner import Context

from tests.plugins.sshd import free_port


def token_of(context: Context) -> str:
    return (context.home / "api-token").read_text().strip()


def fill(context: Context, text: str) -> str:
    if "{token}" in text:
        text = text.replace("{token}", token_of(context))
    return text.replace("{home}", str(context.home))


def call(context: Context, path: str, header: str | None) -> httpx.Response:
    headers = {"Authorization": header} if header is not None else {}
    return httpx.get(f"{context.queen_url}{path}", headers=headers, timeout=10)


@given("a local queen is running")
def step_queen_running(context: Context) -> None:
    context.execute_steps("When I run rbee-keeper workers list\nThen it succeeds")


@then("the queen's token file has mode 0600")
def step_token_mode(context: Context) -> None:
    assert (context.home / "api-token").stat().st_mode & 0o777 == 0o600


@when("I call GET {path} without an Authorization header")
def step_call_anonymous(context: Context, path: str) -> None:
    context.http = call(context, path, None)


@when('I call GET {path} with the Authorization header "{header}"')
def step_call_with(context: Context, path: str, header: str) -> None:
    context.http = call(context, path, fill(context, header))


@then("the answer is {status:d}")
def step_status(context: Context, status: int) -> None:
    assert context.http.status_code == status, context.http.text


@then("the answer is {status:d} with error {code} and a Bearer challenge")
def step_challenge(context: Context, status: int, code: str) -> None:
    r = context.http
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code, r.text
    assert r.headers["www-authenticate"] == "Bearer"


def queen_argv(context: Context, args: str) -> list[str]:
    port = str(free_port())
    return [sys.executable, "-m", "rbee_queen", "--port", port, *fill(context, args).split()]


@when("I start rbee-queen {args}")
def step_start_queen(context: Context, args: str) -> None:
    context.queen_run = subprocess.run(
        queen_argv(context, args), env=context.env, capture_output=True, text=True, timeout=30
    )


@then('it exits with an error mentioning "{text}"')
def step_queen_refused(context: Context, text: str) -> None:
    run = context.queen_run
    assert run.returncode != 0, run.stderr
    assert text in run.stderr, run.stderr


@then('the output does not contain "{text}"')
def step_no_secret(context: Context, text: str) -> None:
    assert text not in context.queen_run.stdout + context.queen_run.stderr


@given('a secret file "{name}" with mode {mode} containing "{text}"')
@given('a secret file "{name}" with mode {mode} containing ""')
def step_secret_file(context: Context, name: str, mode: str, text: str = "") -> None:
    path = context.home / name
    # \n and \x20 spell a line break and a space, which a table cell cannot hold.
    path.write_text(text.replace("\\n", "\n").replace("\\x20", " ") + "\n")
    path.chmod(int(mode, 8))


@given('the queen runs with the systemd credential "{text}"')
def step_credential(context: Context, text: str) -> None:
    creds = context.home / "credentials"
    creds.mkdir(mode=0o700)
    (creds / "rbee-api-token").write_text(text + "\n")
    (creds / "rbee-api-token").chmod(0o400)
    port = context.queen_url.rsplit(":", 1)[1]
    env = {**context.env, "CREDENTIALS_DIRECTORY": str(creds)}
    log = (context.home / "queen-credential.log").open("wb")
    # Writes queen.pid under RBEE_HOME, so the scenario's clean-up stops it.
    subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "rbee_queen", "--port", port], env=env, stdout=log, stderr=log
    )
    wait_for(lambda: call(context, "/health", None).status_code == 200)


def wait_for(check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@when('I replace the queen\'s token with "{text}" and send SIGHUP')
def step_rotate(context: Context, text: str) -> None:
    context.old_token = token_of(context)
    path = context.home / "api-token"
    tmp = path.with_name(".api-token.new")
    tmp.write_text(text + "\n")
    tmp.chmod(0o600)
    os.replace(tmp, path)
    pid = json.loads((context.home / "queen.pid").read_text())["pid"]
    os.kill(pid, signal.SIGHUP)


@then("the old token is refused")
def step_old_refused(context: Context) -> None:
    header = f"Bearer {context.old_token}"
    wait_for(lambda: call(context, "/v2/workers/list", header).status_code == 401)


@then('a call with the Authorization header "{header}" answers {status:d}')
def step_call_answers(context: Context, header: str, status: int) -> None:
    assert call(context, "/v2/workers/list", header).status_code == status


@then('no file "{path}" exists')
def step_no_file(context: Context, path: str) -> None:
    assert not Path(fill(context, path)).exists()


@given("the queen has audited a few requests")
def step_audited(context: Context) -> None:
    for _ in range(3):
        call(context, "/v2/workers/list", f"Bearer {token_of(context)}")
    call(context, "/v2/workers/list", "Bearer wrong")


@when("I edit entry {number:d} of the audit log")
def step_edit_audit(context: Context, number: int) -> None:
    [path] = sorted((context.home / "audit").glob("audit-*.jsonl"))
    lines = path.read_text().splitlines()
    entry = json.loads(lines[number - 1])
    entry["path"] = "/edited"
    lines[number - 1] = json.dumps(entry)
    path.write_text("\n".join(lines) + "\n")


@given("the queen is started by hand with {args}")
def step_queen_runs_with(context: Context, args: str) -> None:
    port = context.queen_url.rsplit(":", 1)[1]
    log_path = context.home / "queen-by-hand.log"
    # Writes queen.pid under RBEE_HOME, so the scenario's clean-up stops it.
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "rbee_queen", "--port", port, *fill(context, args).split()],
        env=context.env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(
            lambda: proc.poll() is not None or call(context, "/health", None).status_code == 200,
            timeout=60,
        )
    finally:
        assert proc.poll() is None, f"the queen exited {proc.returncode}: {log_path.read_text()}"


@then("the queen's command line holds no token")
def step_argv_clean(context: Context) -> None:
    pid = json.loads((context.home / "queen.pid").read_text())["pid"]
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    assert token_of(context) not in argv, argv
