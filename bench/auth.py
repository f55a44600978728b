"""What bearer auth costs per request: the same cheap route
(`GET /v2/registry/models/list`, an empty catalog) on two queens started the
same way, one as shipped and one whose auth step (`auth.admit`) lets every
request pass, plus the public `GET /health` of the first for reference.

    .venv/bin/python -m bench.auth [--requests 2000]

Requests alternate between the queens over keep-alive connections, so drift in
the machine's load falls on both alike. Auth as measured here is everything
the auth step does for a valid token: strict header parsing, the
constant-time key lookup and the `auth.success` entry in the hash-chained
audit log. Prints median, mean and p90 latencies, and each one's difference
from and ratio to the queen without auth.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.plugins.sshd import free_port

ROUTE = "/v2/registry/models/list"
WARMUP = 200


def serve(argv: list[str]) -> None:
    """`--serve-no-auth PORT`: a queen whose auth lets every request pass."""
    from starlette.types import Scope

    from rbee_queen import __main__ as queen_main
    from rbee_queen.api import auth

    def admit_all(scope: Scope) -> None:
        pass

    auth.admit = admit_all
    queen_main.main(argv)


def start(home: Path, no_auth: bool) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    args = ["--port", str(port), "--log-level", "warning"]
    argv = (
        ["-m", "bench.auth", "--serve-no-auth", *args] if no_auth else ["-m", "rbee_queen", *args]
    )
    with open(home / "queen.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, *argv],
            env={**os.environ, "RBEE_HOME": str(home)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((home / "queen.log").read_text())
        try:
            if httpx.get(f"{url}/health", timeout=0.5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("queen did not answer /health in 20 s")


def timed(client: httpx.Client, path: str) -> float:
    started = time.perf_counter()
    response = client.get(path)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{path}: {response.status_code} {response.text}")
    return elapsed * 1000


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-no-auth":
        serve(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rbee-bench-auth-") as tmp:
        homes = [Path(tmp) / "auth", Path(tmp) / "open"]
        for home in homes:
            home.mkdir()
        (with_auth, auth_url), (without, open_url) = start(homes[0], False), start(homes[1], True)
        try:
            token = (homes[0] / "api-token").read_text().strip()
            headers = {"Authorization": f"Bearer {token}"}
            with (
                httpx.Client(base_url=auth_url, headers=headers) as authed,
                httpx.Client(base_url=auth_url) as public,
                httpx.Client(base_url=open_url) as open_,
            ):
                cases = {
                    f"no auth      {ROUTE}": (open_, ROUTE),
                    f"bearer token {ROUTE}": (authed, ROUTE),
                    "public       /health": (public, "/health"),
                }
                samples: dict[str, list[float]] = {name: [] for name in cases}
                for i in range(WARMUP + args.requests):
                    for name, (client, path) in cases.items():
                        ms = timed(client, path)
                        if i >= WARMUP:
                            samples[name].append(ms)
        finally:
            for proc in (with_auth, without):
                proc.terminate()
                proc.wait(timeout=30)
    report(samples, args.requests)


def report(samples: dict[str, list[float]], n: int) -> None:
    base_name = next(iter(samples))
    base = samples[base_name]
    b_med, b_mean = statistics.median(base), statistics.fmean(base)
    print(f"{n} requests each, interleaved; latencies in ms (client-side, keep-alive)")
    print(f"{'':40} {'median':>7} {'mean':>7} {'p90':>7}  {'Δmedian':>8} {'Δmean':>7} {'ratio':>6}")
    for name, values in samples.items():
        med, mean = statistics.median(values), statistics.fmean(values)
        p90 = statistics.quantiles(values, n=10)[-1]
        print(
            f"{name:40} {med:7.3f} {mean:7.3f} {p90:7.3f}  "
            f"{med - b_med:+8.3f} {mean - b_mean:+7.3f} {med / b_med:6.2f}"
        )


if __name__ == "__main__":
    main()
