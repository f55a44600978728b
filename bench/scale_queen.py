"""A real queen process for bench.scale: started with its own RBEE_HOME, its
event stream read on a thread, nodes added through its API, and the keeper's
`nodes status` timed against it."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.plugins.sshd import free_port
from tests.plugins.testbed import Testbed, TestHost


@dataclass
class Queen:
    home: Path
    interval: float
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    events: list[dict[str, object]] = field(default_factory=list)

    def start(self) -> None:
        port = free_port()
        env = {**os.environ, "RBEE_HOME": str(self.home)}
        env["RBEE_HEALTH_INTERVAL"] = str(self.interval)
        with open(self.home / "queen.out", "ab") as log:
            argv = [sys.executable, "-m", "rbee_queen", "--port", str(port)]
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.url, self.events = f"http://127.0.0.1:{port}", []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=0.5).status_code == 200:
                    threading.Thread(target=self._read_events, daemon=True).start()
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError(f"queen did not start: {(self.home / 'queen.out').read_text()}")

    def client(self) -> httpx.Client:
        token = (self.home / "api-token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.url, timeout=120, headers=headers)

    def _read_events(self) -> None:
        try:
            with self.client() as c, c.stream("GET", "/v2/events", timeout=None) as r:
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        self.events.append(json.loads(line[5:]))
        except httpx.HTTPError:
            return  # the queen stopped

    def rounds(self) -> list[dict[str, object]]:
        return [e for e in list(self.events) if e.get("type") == "health_round"]

    def wait_rounds(self, count: int) -> list[dict[str, object]]:
        deadline = time.monotonic() + count * self.interval + 120
        while len(self.rounds()) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(self.rounds())} health rounds of {count}")
            time.sleep(0.05)
        return self.rounds()[:count]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=60)


def add_nodes(queen: Queen, hosts: list[tuple[Testbed, TestHost]]) -> None:
    def add(pair: tuple[Testbed, TestHost]) -> None:
        bed, h = pair
        body = {
            "node_name": h.hostname,
            "ssh_host": h.address,
            "ssh_user": h.user,
            "ssh_key_path": str(bed.client_key),
            "install_path": "~/.rbee",
        }
        with queen.client() as c:
            r = c.post("/v2/registry/beehives/add", json=body)
        if r.status_code != 201:
            raise RuntimeError(f"add {h.hostname}: {r.text}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(add, hosts))


def nodes_status_s(queen: Queen, runs: int = 3) -> float:
    env = {**os.environ, "RBEE_HOME": str(queen.home), "RBEE_QUEEN_URL": queen.url}
    keeper = [sys.executable, "-m", "rbee_keeper", "--text", "nodes", "status"]
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(keeper, env=env, capture_output=True, text=True, timeout=300)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise RuntimeError(f"nodes status: {done.stdout[-500:]} {done.stderr[-500:]}")
    return statistics.median(times)
