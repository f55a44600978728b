"""A real Prometheus (Debian's package, installed by scripts/bootstrap) run for a
test: it scrapes a queen on loopback with rbee's own deploy/prometheus config,
rewritten only where a test must differ (the target, the token file, a 1 s
scrape interval, the rules file's absolute path)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.plugins.queen import QueenProcess
from tests.plugins.sshd import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SCRAPE_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERT_RULES = DEPLOY / "prometheus" / "rbee-alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "rbee.json"
# Grafana's own variables, and the dashboard's, as a test query fills them in.
GRAFANA_VARIABLES = {"$__rate_interval": "30s", "$node": ".*", "$model": ".*"}
METRIC_NAME = re.compile(r"\b(rbee_[a-z0-9_]+)")
# An alert's expression is `signal <comparison> threshold`.
COMPARISON = re.compile(r"\s*(==|!=|>=|<=|>|<)\s*[0-9.]+\s*$")


def binary(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: scripts/bootstrap installs Debian's prometheus package"
    return path


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *args], capture_output=True, text=True, timeout=60, check=False
    )


def config_for(queen: QueenProcess, root: Path) -> Path:
    """deploy/prometheus/prometheus.yml pointed at this queen and its token."""
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(ALERT_RULES)]
    (job,) = config["scrape_configs"]
    job["authorization"]["credentials_file"] = str(queen.home / "api-token")
    job["static_configs"] = [{"targets": [queen.url.removeprefix("http://")]}]
    path = root / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result of an instant query; a query Prometheus refuses fails the test."""
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        assert body.get("status") == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def rules(self) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.url}/api/v1/rules", timeout=10).json()
        return [rule for group in body["data"]["groups"] for rule in group["rules"]]

    def wait_for_scrapes(self, count: int, timeout: float = 30) -> None:
        """Until Prometheus has scraped the queen `count` times, each one up."""
        expr = 'sum_over_time(up{job="rbee-queen"}[5m])'
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result and float(result[0]["value"][1]) >= count:
                return
            time.sleep(0.25)
        raise AssertionError(f"Prometheus scraped too little: {self.log.read_text()[-2000:]}")


def start_prometheus(config: Path, root: Path) -> Prometheus:
    port = free_port()
    log = root / "prometheus.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={root / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"prometheus exited: {log.read_text()[-2000:]}"
        try:
            if httpx.get(f"{url}/-/ready", timeout=0.5).status_code == 200:
                return Prometheus(url, proc, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("prometheus did not get ready in 30 s")


def stop_prometheus(prometheus: Prometheus) -> None:
    prometheus.proc.terminate()
    try:
        prometheus.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        prometheus.proc.kill()
        prometheus.proc.wait(timeout=5)


def dashboard_queries() -> list[str]:
    """Every panel's and every template variable's query, Grafana's variables filled."""
    import json

    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    variables = [v["query"]["query"] for v in dashboard["templating"]["list"]]
    exprs += [re.sub(r"^label_values\((\w+),.*\)$", r"\1", q) for q in variables]
    for name, value in GRAFANA_VARIABLES.items():
        exprs = [e.replace(name, value) for e in exprs]
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERT_RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def signal_of(expr: str) -> str:
    """An alert's expression without its final comparison: what it watches."""
    return COMPARISON.sub("", " ".join(expr.split()))


def metric_names(exprs: list[str]) -> set[str]:
    """The rbee metric families the expressions name (histogram suffixes kept)."""
    return {name for expr in exprs for name in METRIC_NAME.findall(expr)}
