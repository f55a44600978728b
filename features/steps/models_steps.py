"""Steps for models on nodes: a local hub, downloads through the keeper, what
lands on the node, and the checks that refuse a worker before it starts."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from behave import given, then, when
from behave.runner import Context

from rbee_hive.gpus import parse_nvidia_smi
from rbee_queen.errors import RbeeError
from rbee_queen.workers.resources import check_fits, choose_device
from tests.plugins.fakehub import running_fakehub

RECORDED = Path(__file__).resolve().parents[2] / "tests" / "data" / "nvidia-smi"


def queen(context: Context) -> httpx.Client:
    token = (context.home / "api-token").read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=context.queen_url, headers=headers, timeout=120)


def model_folder(context: Context, ref: str) -> Path:
    org, repo = ref.removeprefix("hf:").split("/")
    return context.home / "node" / "models" / "hf" / org / repo  # keeper_steps' {install}


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def json_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


# --- the hub ---------------------------------------------------------------------------


@given('a hub that serves the tiny model as "{repo}"')
def step_hub(context: Context, repo: str) -> None:
    hub_cm = running_fakehub()
    context.hub = hub_cm.__enter__()
    context.add_cleanup(hub_cm.__exit__, None, None, None)
    context.hub.add_folder(repo, context.model_dir)
    # The queen the keeper starts inherits this: huggingface_hub talks to the local hub.
    context.env.pop("HF_HUB_OFFLINE", None)
    context.env.pop("HF_TOKEN", None)
    context.env.update(
        HF_ENDPOINT=context.hub.url,
        HF_HOME=str(context.home / "hf-home"),
        HF_HUB_DISABLE_TELEMETRY="1",
    )


@given('the hub\'s "{repo}" needs a token')
def step_private(context: Context, repo: str) -> None:
    context.hub.private[repo] = "hf_only_the_owner_has_this"


@given('the hub serves "{name}" with one byte changed')
def step_corrupt(context: Context, name: str) -> None:
    context.hub.corrupt.add(name)


@given('the hub declares "{name}" of "{repo}" as {size:d} bytes')
def step_declared_size(context: Context, name: str, repo: str, size: int) -> None:
    context.hub.sizes[(repo, name)] = size


@given('"{ref}" has been downloaded to "{node}"')
def step_downloaded(context: Context, ref: str, node: str) -> None:
    argv = [sys.executable, "-m", "rbee_keeper", "models", "download", "--node", node, ref]
    run = subprocess.run(argv, env=context.env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr


# --- what the download did -------------------------------------------------------------


@then("the events are start, progress up to every byte, and done")
def step_events(context: Context) -> None:
    events = json_lines(context.result.stdout)
    assert events[0]["type"] == "start" and events[-1]["type"] == "done", events
    progress = [e for e in events if e["type"] == "progress"]
    assert progress, events
    done = [e["bytes_done"] for e in progress]
    assert done == sorted(done) and done[-1] == events[0]["bytes_total"], done
    total = sum(f.stat().st_size for f in context.model_dir.iterdir())
    assert events[0]["bytes_total"] == total


@then("the model files on the node are the hub's, byte for byte")
def step_files(context: Context) -> None:
    assert digests(model_folder(context, "hf:Org/Tiny")) == digests(context.model_dir)


@then("nothing passed through the queen's download cache")
def step_no_queen_cache(context: Context) -> None:
    cache = context.home / "hf-cache"
    assert not cache.exists() or not any(p.is_file() for p in cache.rglob("*")), list(
        cache.rglob("*")
    )


@then('the table lists "{ref}" as {status}')
def step_table(context: Context, ref: str, status: str) -> None:
    rows = [line.split() for line in context.result.stdout.splitlines()]
    assert any(ref in row and status in row for row in rows), context.result.stdout


@then("no model is listed")
def step_no_model(context: Context) -> None:
    with queen(context) as c:
        assert c.get("/v2/models").json()["models"] == []


@then('the node has no folder for "{ref}"')
def step_no_folder(context: Context, ref: str) -> None:
    assert not model_folder(context, ref).exists()


@then('the node still has the folder for "{ref}"')
def step_folder_kept(context: Context, ref: str) -> None:
    assert digests(model_folder(context, ref)) == digests(context.model_dir)


# --- checks before a worker starts -----------------------------------------------------


@given("a model folder whose weights claim 1 TiB")
def step_huge_model(context: Context) -> None:
    huge = context.home / "huge"
    huge.mkdir()
    (huge / "config.json").write_bytes((context.model_dir / "config.json").read_bytes())
    with open(huge / "model.safetensors", "wb") as fh:
        fh.truncate(1 << 40)  # sparse: claims a terabyte, uses no disk


@given('a node whose nvidia-smi printed "{recording}"')
def step_recorded_gpus(context: Context, recording: str) -> None:
    context.probe = {"gpus": parse_nvidia_smi((RECORDED / recording).read_text())}


@when('a CUDA worker for a {gib:d} GiB model asks for "{device}" with a limit of {limit:d} C')
def step_cuda_preflight(context: Context, gib: int, device: str, limit: int) -> None:
    context.refusal = None
    try:
        chosen = choose_device(context.probe, device, "gpu1", max_temp_c=limit)
        check_fits(gib * 1024**3, context.probe, chosen, "gpu1")
    except RbeeError as exc:
        context.refusal = exc


@then("it is refused with {code}")
def step_refused(context: Context, code: str) -> None:
    refusal = context.refusal
    assert refusal is not None, "the worker was allowed to start"
    assert refusal.code == code, (refusal.code, refusal.message)
    assert "\n" not in refusal.message and refusal.message
    if code == "INSUFFICIENT_VRAM":
        details = refusal.details
        assert details["required_bytes"] > details["available_bytes"] > 0, details
