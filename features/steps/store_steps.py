"""Steps for the state the queen keeps: its database and backups, downloads that
stall or are asked for twice, and the audit log across restarts and rotation."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
from behave import given, then, when
from behave.runner import Context

from features.environment import stop_local_queen
from tests.plugins.fakehub import COMMIT

WEIGHTS = "model.safetensors"
KEEPER = [sys.executable, "-m", "rbee_keeper"]


def run_keeper(context: Context, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        KEEPER + args, env=context.env, capture_output=True, text=True, timeout=300
    )


def weights_size(context: Context) -> int:
    return (context.model_dir / WEIGHTS).stat().st_size


# --- the database ------------------------------------------------------------------------


@when("the queen stops and its database file is damaged")
def step_damage(context: Context) -> None:
    stop_local_queen(context.home)  # its shutdown backup is taken on the way out
    with open(context.home / "queen.db", "r+b") as f:
        f.write(b"\x00garbage" * 512)


@then("the damaged file was kept beside the database")
def step_kept_aside(context: Context) -> None:
    aside = [p for p in context.home.iterdir() if p.name.startswith("queen.db.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"\x00garbage"), aside


@then('the inventory file "{name}" names the node "{node}" and no secret')
def step_inventory_file(context: Context, name: str, node: str) -> None:
    text = (context.home / name).read_text()
    data = tomllib.loads(text)
    assert node in data["nodes"], data
    token = (context.home / "api-token").read_text().strip()
    assert token not in text and "PRIVATE KEY" not in text


# --- downloads ---------------------------------------------------------------------------


@given("the queen gives up on a download that sends nothing for {seconds:d} second")
def step_stall_limit(context: Context, seconds: int) -> None:
    context.env["HF_HUB_DOWNLOAD_TIMEOUT"] = str(seconds)  # before the keeper starts a queen


@given('the hub holds the second half of "{name}" for {seconds:g} seconds')
def step_hold(context: Context, name: str, seconds: float) -> None:
    context.hub.pause[name] = (weights_size(context) // 2, seconds)


@when("the hub sends at full speed again")
def step_full_speed(context: Context) -> None:
    context.hub.pause.clear()


@then("the queen's download cache keeps the first half of the weights")
def step_cache_kept(context: Context) -> None:
    cached = context.home / "hf-cache" / "Org" / "Tiny" / COMMIT / WEIGHTS
    assert cached.stat().st_size == weights_size(context) // 2


@then("the hub was asked only for the second half")
def step_ranged(context: Context) -> None:
    assert (f"Org/Tiny/{WEIGHTS}", weights_size(context) // 2) in context.hub.ranges


@when('two clients download "{ref}" to "{node}" at the same time')
def step_two_downloads(context: Context, ref: str, node: str) -> None:
    argv = ["--json", "models", "download", "--node", node, ref]
    first = subprocess.Popen(
        KEEPER + argv, env=context.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while f"Org/Tiny/{WEIGHTS}" not in context.hub.fetched:  # the first is on the weights
        assert time.monotonic() < deadline and first.poll() is None, "first download ended"
        time.sleep(0.02)
    second = run_keeper(context, argv)
    out, err = first.communicate(timeout=120)
    context.runs = [subprocess.CompletedProcess(argv, first.returncode, out, err), second]


@then("both succeed, each seeing the progress up to every byte")
def step_both(context: Context) -> None:
    for run in context.runs:
        assert run.returncode == 0, run.stderr
        events = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
        progress = [e for e in events if e.get("type") == "progress"]
        assert progress[-1]["bytes_done"] == progress[-1]["bytes_total"], events


@then("the hub sent the weights once")
def step_once(context: Context) -> None:
    assert context.hub.fetched.count(f"Org/Tiny/{WEIGHTS}") == 1, context.hub.fetched


# --- the audit log -----------------------------------------------------------------------


def audit_entries(context: Context) -> list[dict[str, object]]:
    files = sorted((context.home / "audit").glob("audit-*.jsonl"))
    return [json.loads(line) for path in files for line in path.read_text().splitlines()]


@given("the queen rotates its audit file past {mib:g} MiB")
def step_rotation(context: Context, mib: float) -> None:
    context.env["RBEE_AUDIT_MAX_FILE_MB"] = str(mib)


@given("the queen warns when its audit disk has less than {mib:d} MiB free")
def step_audit_threshold(context: Context, mib: int) -> None:
    context.env["RBEE_AUDIT_MIN_FREE_MB"] = str(mib)


@when("I make {count:d} requests")
def step_requests(context: Context, count: int) -> None:
    token = (context.home / "api-token").read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=context.queen_url, headers=headers, timeout=30) as client:
        for _ in range(count):
            assert client.get("/v2/workers/list").status_code == 200


@when("the queen restarts")
def step_restart(context: Context) -> None:
    context.seq_before = max(int(e["seq"]) for e in audit_entries(context))  # type: ignore[call-overload]
    stop_local_queen(context.home)
    run = run_keeper(context, ["workers", "list"])  # the keeper starts a new one
    assert run.returncode == 0, run.stderr


@then("the audit log is in more than one file")
def step_rotated(context: Context) -> None:
    assert len(list((context.home / "audit").glob("audit-*.jsonl"))) > 1


@then("its entries number on from before the restart")
def step_numbered_on(context: Context) -> None:
    seqs = [int(e["seq"]) for e in audit_entries(context)]  # type: ignore[call-overload]
    assert seqs == list(range(1, len(seqs) + 1)) and seqs[-1] > context.seq_before, seqs


@then("every entry has a time, an event and a hash")
def step_entry_fields(context: Context) -> None:
    for entry in audit_entries(context):
        assert entry.get("ts") and entry.get("event") and entry.get("hash"), entry


@then("no audit file holds the owner's token")
def step_no_token(context: Context) -> None:
    token = (context.home / "api-token").read_text().strip()
    for path in Path(context.home / "audit").iterdir():
        assert token not in path.read_text()
