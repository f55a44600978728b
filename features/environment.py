"""behave: the whole system for real. One loopback sshd and one tiny model for the
run; every scenario gets a fresh RBEE_HOME and its own queen port, and the queen
the keeper starts is stopped after the scenario (which stops its workers)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

from behave.model import Feature, Scenario
from behave.runner import Context

from features import shared_queen
from rbee_worker.tinymodel import write_tiny_model
from tests.plugins import testbed as testbeds
from tests.plugins.procs import worker_pids
from tests.plugins.queen import assert_messages_kept
from tests.plugins.sshd import free_port, start_sshd


def before_all(context: Context) -> None:
    context.run_root = Path(tempfile.mkdtemp(prefix="rbee-behave-"))
    context.sshd_proc, context.sshd = start_sshd(context.run_root / "sshd")
    context.model_dir = write_tiny_model(context.run_root / "models" / "tiny")


def after_all(context: Context) -> None:
    context.sshd_proc.terminate()
    context.sshd_proc.wait(timeout=10)
    shutil.rmtree(context.run_root, ignore_errors=True)


def before_feature(context: Context, feature: Feature) -> None:
    # @testbed features need test hosts (network namespaces): root only.
    reason = testbeds.unavailable_reason() if "testbed" in feature.tags else None
    if reason is not None:
        feature.skip(f"skipped: {reason}")
    # Filled by "Given N test hosts" and shared by the feature's scenarios.
    context.testbeds = []
    if shared_queen.shares_queen(feature) and not feature.should_skip:
        shared_queen.start(context, feature)


def after_feature(context: Context, feature: Feature) -> None:
    for bed, fd in context.testbeds:
        testbeds.take_down(bed, fd)
    if "shared" in context:
        shared_queen.stop(context, stop_local_queen)


def before_scenario(context: Context, scenario: Scenario) -> None:
    if "shared" in context:  # @one_queen: the feature's home and queen
        context.home, context.queen_url = context.shared
        context.env = shared_queen.scenario_env(context.home, context.queen_url, context.shared_env)
        context.result = None
        return
    context.home = Path(tempfile.mkdtemp(prefix="home-", dir=context.run_root))
    context.queen_url = f"http://127.0.0.1:{free_port()}"
    context.env = {
        **os.environ,
        "RBEE_HOME": str(context.home),
        "RBEE_QUEEN_URL": context.queen_url,
        "HF_HUB_OFFLINE": "1",
        # The queen checks every event it publishes or relays against rbee_wire.
        "RBEE_CHECK_MESSAGES": "1",
    }
    context.result = None


def after_scenario(context: Context, scenario: Scenario) -> None:
    if "shared" in context:  # stopped, and checked, after the feature
        return
    stop_local_queen(context.home)
    # Whatever the scenario did, the queen's exit must leave no worker behind.
    leftover = worker_pids(under=str(context.home))
    for pid in leftover:
        os.kill(pid, signal.SIGKILL)
    assert not leftover, f"worker processes left after the queen stopped: {leftover}"
    assert_messages_kept(context.home / "logs" / "queen.log")


def stop_local_queen(home: Path) -> None:
    pid_file = home / "queen.pid"
    if pid_file.exists():
        shared_queen.stop_pid(json.loads(pid_file.read_text())["pid"])
