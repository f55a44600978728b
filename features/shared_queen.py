"""One queen for a whole feature, where its scenarios allow it.

A feature tagged @one_queen gets one RBEE_HOME and one queen, started before its
first scenario and stopped after its last; @one_node adds the loopback node
"local" to it once as well. A tag @env.NAME=VALUE sets NAME for the feature's
queen and keepers (a supervisor interval, a stop grace) where the scenarios
need a setting other than the default. Starting a queen and connecting a node
cost seconds each, so the scenarios that only talk to a queen share them. Such
scenarios must leave the inventory as they found it (or use their own names).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from behave.model import Feature
from behave.runner import Context

from tests.plugins.procs import worker_pids
from tests.plugins.queen import assert_messages_kept
from tests.plugins.sshd import free_port

TAGS = ("one_queen", "one_node")


def shares_queen(feature: Feature) -> bool:
    return any(tag in feature.tags for tag in TAGS)


def feature_env(feature: Feature) -> dict[str, str]:
    """NAME=VALUE of each @env.NAME=VALUE tag."""
    tags = [tag.removeprefix("env.") for tag in feature.tags if tag.startswith("env.")]
    return dict(tag.split("=", 1) for tag in tags if "=" in tag)


def scenario_env(home: Path, queen_url: str, extra: dict[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        **extra,
        "RBEE_HOME": str(home),
        "RBEE_QUEEN_URL": queen_url,
        "HF_HUB_OFFLINE": "1",
        # The queen checks every event it publishes or relays against rbee_wire.
        "RBEE_CHECK_MESSAGES": "1",
    }


def keeper(env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rbee_keeper", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        log = Path(env["RBEE_HOME"], "logs", "queen.log")
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise AssertionError(f"{done.stderr}{tail}")


def start(context: Context, feature: Feature) -> None:
    """The feature's queen (and node): `context.shared` holds its home and URL."""
    home = Path(tempfile.mkdtemp(prefix="feature-", dir=context.run_root))
    url = f"http://127.0.0.1:{free_port()}"
    context.shared = (home, url)
    context.shared_env = feature_env(feature)
    env = scenario_env(home, url, context.shared_env)
    keeper(env, "workers", "list")  # the keeper starts the queen
    # Kept apart from queen.pid, which a scenario starting a queen by hand may overwrite.
    context.shared_pid = json.loads((home / "queen.pid").read_text())["pid"]
    if "one_node" in feature.tags:
        sshd = context.sshd
        keeper(
            env,
            *("setup", "add-node", "--name", "local", "--ssh-host", "127.0.0.1"),
            *("--ssh-port", str(sshd.port), "--ssh-user", sshd.user),
            *("--ssh-key", str(sshd.client_key), "--install-path", str(home / "node")),
            *("--worker-python", sys.executable, "--accept-new-host-key"),
        )


def stop(context: Context, stop_queen: object) -> None:
    """Stops the feature's queen; the feature fails if a worker outlives it."""
    home, _ = context.shared
    stop_queen(home)  # type: ignore[operator]
    stop_pid(context.shared_pid)
    leftover = worker_pids(under=str(home))
    for pid in leftover:
        os.kill(pid, signal.SIGKILL)
    assert not leftover, f"worker processes left after the queen stopped: {leftover}"
    assert_messages_kept(home / "logs" / "queen.log")


def stop_pid(pid: int) -> None:
    """SIGTERM, then SIGKILL after 30 s, unless it is gone already."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
