"""Time to first token through the whole path: keeper-side HTTP -> queen -> SSH
port forward -> worker, on the tiny model, cold (worker start + load) and warm.

    .venv/bin/python -m bench.first_token [--runs 20]

Starts its own loopback sshd and queen in a temp dir and stops them after.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.relay_procs import start_shipped_queen
from rbee_worker.tinymodel import write_tiny_model
from tests.plugins.queen import stop_queen
from tests.plugins.sshd import start_sshd


def one_task(client: httpx.Client, body: dict[str, object]) -> tuple[float, float, int]:
    """(seconds to first token, seconds to end, tokens) for one streamed task.

    The client is made once: building an httpx.Client (its TLS context) costs
    ~25 ms here, which is the client's start-up, not rbee's latency."""
    started = time.perf_counter()
    first = None
    tokens = 0
    with client.stream("POST", "/v2/tasks", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[len("data: ") :])
            if event["type"] == "token":
                first = first or time.perf_counter()
            elif event["type"] == "end":
                tokens = event["tokens_out"]
    end = time.perf_counter()
    assert first is not None, "no token arrived"
    return first - started, end - started, tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="rbee-bench-"))
    sshd_proc, sshd = start_sshd(root / "sshd")
    model = write_tiny_model(root / "model")
    home = root / "home"
    home.mkdir()
    queen = start_shipped_queen(home)
    try:
        with queen.client() as c:
            body = {
                "node_name": "bench",
                "ssh_host": sshd.host,
                "ssh_port": sshd.port,
                "ssh_user": sshd.user,
                "ssh_key_path": str(sshd.client_key),
                "install_path": str(root / "install"),
                "worker_python": sys.executable,
                "accept_new_host_key": True,
            }
            c.post("/v2/registry/beehives/add", json=body).raise_for_status()
        task = {
            "node": "bench",
            "model": f"file:{model}",
            "prompt": "Once upon a time",
            "max_tokens": args.max_tokens,
            "temperature": 0.0,
        }
        auth = {"Authorization": f"Bearer {queen.token}"}  # the owner's, as the keeper sends
        client = httpx.Client(base_url=queen.url, headers=auth, timeout=300)
        cold_ttft, cold_total, _ = one_task(client, task)
        warm = [one_task(client, task) for _ in range(args.runs)]
        client.close()
        ttfts = sorted(w[0] for w in warm)
        rates = [w[2] / w[1] for w in warm]
        print(f"cold: first token {cold_ttft * 1000:.0f} ms (worker start + model load)")
        print(
            f"warm over {args.runs} runs: first token median {statistics.median(ttfts) * 1000:.1f}"
            f" ms, p90 {ttfts[int(0.9 * (len(ttfts) - 1))] * 1000:.1f} ms, max"
            f" {ttfts[-1] * 1000:.1f} ms; {statistics.median(rates):.0f} tokens/s end to end"
        )
    finally:
        stop_queen(queen)
        sshd_proc.terminate()
        sshd_proc.wait()


if __name__ == "__main__":
    main()
