"""deploy/ checked by a real Prometheus: it scrapes a real queen that served
requests on a loopback node whose `nvidia-smi` answers as two RTX 3090s would
(the one thing faked: no GPU here) and that downloaded a model from the fake
hub (tests/plugins/fakehub.py: the real hub is out of reach). Every Grafana
panel's query, every template variable's and every alert's signal must return
data through Prometheus's HTTP query API. A query that names a metric the queen
never exports returns nothing, so it fails here."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.plugins.fakehub import running_fakehub
from tests.plugins.procs import worker_pids
from tests.plugins.prometheus import (
    ALERT_RULES,
    SCRAPE_CONFIG,
    Prometheus,
    alert_rules,
    config_for,
    dashboard_queries,
    metric_names,
    promtool,
    signal_of,
    start_prometheus,
    stop_prometheus,
)
from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.sshd import SshServer, free_port, start_sshd

NVIDIA_SMI = Path(__file__).parent / "data" / "nvidia-smi" / "2x-rtx3090.csv"
FAST_LOOPS = {
    "RBEE_HEALTH_INTERVAL": "0.5",
    "RBEE_GPU_INTERVAL": "1",
    "RBEE_SUPERVISOR_INTERVAL": "0.5",
}


@pytest.fixture(scope="module")
def gpu_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    root = tmp_path_factory.mktemp("gpu-node")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\nexec cat {NVIDIA_SMI}\n")
    fake.chmod(0o755)
    proc, server = start_sshd(root, session_env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    try:
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def monitored(
    gpu_node: SshServer, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[QueenProcess, Prometheus]]:
    """A queen that served requests, and a Prometheus that scraped it throughout."""
    root = tmp_path_factory.mktemp("monitoring")
    (root / "home").mkdir()
    with running_fakehub() as hub, pytest.MonkeyPatch.context() as env:
        for name, value in {**FAST_LOOPS, "HF_ENDPOINT": hub.url}.items():
            env.setenv(name, value)
        env.setenv("HF_HOME", str(root / "hf-home"))
        env.delenv("HF_HUB_OFFLINE", raising=False)  # the queen downloads from the fake hub
        queen = start_queen(root / "home")
        prometheus = start_prometheus(config_for(queen, root), root)
        try:
            prometheus.wait_for_scrapes(1)
            hub.add_folder("Org/Tiny", tiny_model_dir)
            serve_requests(queen, gpu_node, tiny_model_dir, root)
            up = prometheus.query('sum_over_time(up{job="rbee-queen"}[5m])')
            prometheus.wait_for_scrapes(int(float(up[0]["value"][1])) + 3)  # rates need them
            yield queen, prometheus
        finally:
            stop_prometheus(prometheus)
            stop_queen(queen)


def download(queen: QueenProcess, node: str, model: str) -> None:
    """A model download from the fake hub, read to its end."""
    body = {"node": node, "model": model}
    with queen.client() as c, c.stream("POST", "/v2/models/download", json=body) as r:
        assert r.status_code == 200, r.read()
        assert '"done"' in "".join(r.iter_lines())


def serve_requests(queen: QueenProcess, node: SshServer, model: Path, root: Path) -> None:
    """A model download, inferences (one waits in the queue), an unknown worker,
    a node that never answers, a worker killed mid-stream and restarted by the
    supervisor, then stopped."""
    queen.add_node(node.node_body("gpu1", root / "install", accept_new_host_key=True))
    download(queen, "gpu1", "hf:Org/Tiny")
    # Greedy: the tiny model runs on to max_tokens for this prompt, never an early EOS.
    task = {
        "node": "gpu1",
        "model": f"file:{model}",
        "prompt": "hi",
        "max_tokens": 8,
        "temperature": 0,
    }
    with queen.client() as c:
        gone = {**node.node_body("gone", root / "gone"), "ssh_port": free_port()}
        assert c.post("/v2/registry/beehives/add", json=gone).status_code >= 400
        for _ in range(2):
            with c.stream("POST", "/v2/tasks", json=task) as r:
                assert r.status_code == 200, r.read()
                r.read()
        assert c.get("/v2/workers/w-none/events").status_code == 404
        wait_in_the_queue(queen, {**task, "max_tokens": 2048}, task)
        (worker,) = c.get("/v2/workers/list").json()["workers"]
        with c.stream("POST", "/v2/tasks", json={**task, "max_tokens": 2048}) as r:
            lines = r.iter_lines()
            next(line for line in lines if '"token"' in line)
            for pid in worker_pids(worker["worker_id"]):  # the worker dies mid-stream
                os.kill(pid, signal.SIGKILL)
            assert '"error"' in "".join(lines)
        wait_for(queen, lambda m: value(m, "rbee_worker_restarts_total", cause="failed") == 1)
        wait_for(queen, lambda m: value(m, "rbee_workers", state="idle") == 1)
        r = c.post("/v2/workers/shutdown", json={"worker_id": worker["worker_id"]})
        assert r.status_code == 200, r.text
    wait_for(queen, lambda m: value(m, "rbee_gpu_temperature_celsius", node="gpu1") is not None)


def wait_in_the_queue(queen: QueenProcess, long: dict[str, Any], short: dict[str, Any]) -> None:
    """A request that finds the worker's one slot taken waits in its model's queue."""
    first_token = threading.Event()

    def hold_the_slot() -> None:
        with queen.client() as c, c.stream("POST", "/v2/tasks", json=long) as r:
            for line in r.iter_lines():
                if '"token"' in line:
                    first_token.set()

    holder = threading.Thread(target=hold_the_slot, daemon=True)
    holder.start()
    assert first_token.wait(30)
    with queen.client() as c, c.stream("POST", "/v2/tasks", json=short) as r:
        assert r.status_code == 200, r.read()
        r.read()
    holder.join(60)
    wait_for(queen, lambda m: value(m, "rbee_queue_wait_seconds_count", outcome="served") == 1)


Samples = list[tuple[str, dict[str, str], float]]


def scrape(queen: QueenProcess) -> Samples:
    with queen.client() as c:
        text = c.get("/metrics").text
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sum of the samples of `name` whose labels include `labels`; None if none."""
    found = [v for n, have, v in samples if n == name and labels.items() <= have.items()]
    return sum(found) if found else None


def wait_for(queen: QueenProcess, ready: Callable[[Samples], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready(scrape(queen)):
            return
        time.sleep(0.2)
    raise AssertionError(f"the queen's metrics never got there: {scrape(queen)}")


def test_promtool_accepts_the_rules_and_the_config(tmp_path: Path) -> None:
    rules = promtool("check", "rules", str(ALERT_RULES))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in rules.stdout
    shipped = promtool("check", "config", "--syntax-only", str(SCRAPE_CONFIG))
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr


def test_the_config_as_run_passes_promtool(monitored: tuple[QueenProcess, Prometheus]) -> None:
    queen, prometheus = monitored
    checked = promtool("check", "config", str(prometheus_config(prometheus)))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def prometheus_config(prometheus: Prometheus) -> Path:
    return Path(str(prometheus.proc.args[1]).removeprefix("--config.file="))


def test_every_panel_query_returns_data(monitored: tuple[QueenProcess, Prometheus]) -> None:
    _, prometheus = monitored
    empty = [expr for expr in dashboard_queries() if not prometheus.query(expr)]
    assert not empty, f"panels with no data: {empty}"


def test_every_alert_rule_evaluates_and_its_signal_returns_data(
    monitored: tuple[QueenProcess, Prometheus],
) -> None:
    _, prometheus = monitored
    for rule in alert_rules():
        prometheus.query(rule["expr"])  # Prometheus accepts the whole expression
        assert prometheus.query(signal_of(rule["expr"])), f"{rule['alert']}: no data"
    loaded = prometheus.rules()
    assert sorted(r["name"] for r in loaded) == sorted(r["alert"] for r in alert_rules())
    assert {r["health"] for r in loaded} == {"ok"}, loaded


def test_every_metric_named_is_exported(monitored: tuple[QueenProcess, Prometheus]) -> None:
    """Each rbee metric any panel or rule names has a series of its own: an `or`
    or a ratio cannot hide a misspelt name."""
    _, prometheus = monitored
    names = metric_names(dashboard_queries() + [r["expr"] for r in alert_rules()])
    assert len(names) > 20
    missing = sorted(n for n in names if not prometheus.query(f'{{__name__="{n}"}}'))
    assert not missing, f"named but never exported: {missing}"
    assert prometheus.query("rbee_not_a_metric_total") == []  # the check can fail


def test_the_scenario_shows_in_the_figures(monitored: tuple[QueenProcess, Prometheus]) -> None:
    _, prometheus = monitored

    def value(expr: str) -> float:
        (sample,) = prometheus.query(expr)
        return float(sample["value"][1])

    assert value('rbee_node_up{node="gpu1"}') == 1
    assert value('sum(rbee_gpu_memory_total_bytes{node="gpu1"})') == 2 * 24576 * 1024 * 1024
    disk = value('rbee_node_disk_free_bytes{node="gpu1"} / rbee_node_disk_size_bytes{node="gpu1"}')
    assert 0 < disk < 1
    assert value('sum(rbee_errors_total{code="WORKER_NOT_FOUND", source="api"})') == 1
    assert value('sum(rbee_ssh_connect_failures_total{node="gone"})') >= 1
    assert value('sum(rbee_worker_restarts_total{cause="failed"})') == 1
    assert value('sum(rbee_worker_stops_total{reason="requested"})') == 1
    assert value("sum(rbee_inference_duration_seconds_count)") == 5
    assert value('sum(rbee_queue_wait_seconds_count{outcome="served"})') == 1
    assert value('sum(rbee_model_downloads_total{source="queen", outcome="ok"})') == 1
    assert value('sum(rbee_model_download_bytes_total{source="queen"})') > 0
    assert value('sum(rbee_errors_total{source="stream"})') == 1  # the stream cut by the kill
    assert value("sum(rbee_inference_errors_total)") == 1
    route = '{route="/v2/tasks", method="POST", status="2xx"}'
    assert value(f"sum(rbee_http_request_duration_seconds_count{route})") == 5
