"""What the relay costs: time to first token and tokens per second for the same
requests sent straight to a worker, to a worker through an SSH port forward (OpenSSH's client),
through the queen's /v2/tasks and through its /v1/chat/completions, each both
ways the queen reaches a worker (queen + SSH forward + worker, and queen +
worker on a node set to `worker_access = "direct"`), and through two relays
that only copy bytes (bench/byte_relay.py in Python, and socat where it is
installed: what one more hop costs here, the floor for the queen's addition),
on the tiny model:
sequentially with the paths interleaved (every process idle for a while
before each request), sequentially back to back (one path at a time, as under
steady load), and with 8 concurrent clients.

    .venv/bin/python -m bench.relay [--runs 30] [--max-tokens 64]
        [--pin workers|node|clients|none] [--trace | --instructions]

`--trace` stamps each hop of each request instead (bench/hop_trace.py) and
prints the median per hop; `--instructions` runs the queen under valgrind's
callgrind and prints the instructions it ran per request of each queen path
(a count a loaded machine does not distort); the back-to-back block prints
the queen's CPU time per request of each queen path.

Starts its own loopback sshd, queen and a worker of its own in a temp dir, and
stops them after. Prints medians and each path's ratio to the direct worker
(for the chat paths, to the direct worker sent the same messages: the worker
renders the chat template, which a prompt does not pay for),
the worker's own decode time for each path (from its `end` event), and the
time from the first token event to the last and from the last to the
response's end (a relay's cost during the stream and at its end).

Pinning: a worker runs on its node, the queen on another machine. Here all of
them share one machine, and on a small one the queen's and sshd's CPU is taken
from the worker's: the worker then decodes more slowly on the paths through the
queen, which is the machine's size and not the relay. So by default
(`--pin workers`) every worker gets CPU 0 and everything else (queen, sshd and
what it started, the SSH client, this process) the other CPUs. `--pin node`
puts what runs on a node (sshd, everything it started, every worker) on CPU 0
and the queen and the clients on the others; `--pin clients` puts the clients
with the workers, so the queen (with sshd and the relays) does not wait for the
client's CPU; `--pin none` shares them all. The
decode-time column shows what sharing costs the worker.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from bench import hop_trace
from bench.relay_procs import (
    byte_relay,
    callgrind_prefix,
    cpu_seconds,
    descendants,
    forward,
    instructions,
    pin_all,
    socat_relay,
    spawn_worker,
    start_shipped_queen,
)
from rbee_worker.tinymodel import write_tiny_model
from tests.plugins.queen import stop_queen
from tests.plugins.sshd import SshServer, start_sshd

CONCURRENCY = 8
CHECKOUT = Path(__file__).resolve().parent.parent
CHAT_BASE = "worker direct, messages"
TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
# Seconds to first token, seconds to end, tokens, the worker's decode time (ms),
# seconds to the last token (where a relay's cost during the stream and at its
# end part ways).
Sample = tuple[float, float, int, float, float]


def stream(client: httpx.Client, path: str, body: dict[str, Any]) -> Sample:
    """One streamed request; every path's events are read the same way."""
    started = time.perf_counter()
    first = last = None
    tokens = 0
    decode_ms = 0.0
    with client.stream("POST", path, json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            if event.get("type") == "token" or event.get("choices"):
                last = time.perf_counter()
                first = first or last
            if event.get("type") == "end":
                tokens = event["tokens_out"]
                decode_ms = event["decode_time_ms"]
            elif event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
                # OpenAI's usage has no decode time: that column stays empty.
    assert first is not None and last is not None and tokens, "no tokens came back"
    end = time.perf_counter()
    return first - started, end - started, tokens, decode_ms, last - started


def sequential(paths: dict[str, Callable[[], Sample]], runs: int) -> dict[str, dict[str, float]]:
    """Each path once per round, `runs` rounds: on a shared, noisy machine a slow
    spell then slows every path alike instead of the one measured at the time.
    Each round takes the paths in a new (seeded) order: the first request a
    worker gets after other workers served some is a millisecond or two slower,
    and in any fixed cyclic order that always fell on the same paths (two paths
    share each worker, so one of them always came second, warm)."""
    samples: dict[str, list[Sample]] = {name: [] for name in paths}
    order = random.Random(0)
    for _ in range(runs):
        names = list(paths)
        order.shuffle(names)
        for name in names:
            samples[name].append(paths[name]())
    return _medians(samples)


def back_to_back(
    paths: dict[str, Callable[[], Sample]], runs: int, queen_pid: int
) -> dict[str, dict[str, float]]:
    """Each path's requests in a row (after 3 not counted), the paths in a
    seeded order: the queen and the worker as they are under steady load,
    where the interleaved rounds catch each process after ~0.4 s asleep.
    With each path's figures, the queen's CPU time per request meanwhile."""
    samples: dict[str, list[Sample]] = {}
    cpu: dict[str, float] = {}
    names = list(paths)
    random.Random(1).shuffle(names)
    for name in names:
        for _ in range(3):
            paths[name]()
        started = cpu_seconds(queen_pid)
        samples[name] = [paths[name]() for _ in range(runs)]
        cpu[name] = (cpu_seconds(queen_pid) - started) / runs * 1000
    medians = _medians({name: samples[name] for name in paths})
    return {name: {**medians[name], "queen_cpu_ms": cpu[name]} for name in paths}


def _count_instructions(
    paths: dict[str, Callable[[], Sample]], runs: int, max_tokens: int, pid: int, out: Path
) -> None:
    """Each queen path's requests in a row with callgrind counting the queen,
    three times over (the paths in turn); the median and the three counts."""
    print(f"\nthe queen's instructions (callgrind), {runs} requests of {max_tokens} tokens:")
    queen_paths = {name: call for name, call in paths.items() if name.startswith("queen")}
    counts: dict[str, list[float]] = {name: [] for name in queen_paths}
    for _ in range(3):
        for name, call in queen_paths.items():
            counts[name].append(instructions(pid, out, call, runs) / runs / 1e6)
    for name, got in counts.items():
        per_request = statistics.median(got)
        each = (
            f"{per_request:6.2f} M per request, {per_request / max_tokens * 1e3:6.1f} k per token"
        )
        print(f"  {name:36s} {each} [{', '.join(f'{c:.2f}' for c in got)}]")


def _medians(samples: dict[str, list[Sample]]) -> dict[str, dict[str, float]]:
    return {
        name: {
            "ttft_ms": statistics.median(s[0] for s in got) * 1000,
            "tok_s": statistics.median(s[2] / s[1] for s in got),
            "decode_ms": statistics.median(s[3] for s in got),
            "span_ms": statistics.median(s[4] - s[0] for s in got) * 1000,
            "tail_ms": statistics.median(s[1] - s[4] for s in got) * 1000,
        }
        for name, got in samples.items()
    }


def concurrent(call: Callable[[], Sample], runs: int) -> dict[str, float]:
    started = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        samples = list(pool.map(lambda _: call(), range(runs * CONCURRENCY // 4)))
    wall = time.perf_counter() - started
    rate = sum(s[2] for s in samples) / wall  # all clients together
    return {
        "ttft_ms": statistics.median(s[0] for s in samples) * 1000,
        "tok_s": rate,
        "decode_ms": statistics.median(s[3] for s in samples),
    }


def main() -> None:
    args = _parse_args()
    root = Path(tempfile.mkdtemp(prefix="rbee-relay-"))
    sshd_proc, sshd = start_sshd(root / "sshd")
    model = write_tiny_model(root / "model")
    (model / "chat_template.jinja").write_text(TEMPLATE)
    home = root / "home"
    home.mkdir()
    trace = root / "hops.log"
    if args.trace:  # the queen and every worker stamp their hops (bench/hop_trace.py)
        os.environ[hop_trace.LOG_ENV] = str(trace)
    wrap = ("bench.hop_trace", "queen") if args.trace else ("rbee_queen",)
    under = callgrind_prefix(root) if args.instructions else ()
    queen = start_shipped_queen(home, wrap, under)
    wrap = ("bench.hop_trace", "worker") if args.trace else ("rbee_worker",)
    worker, worker_port = spawn_worker(model, root, slots=CONCURRENCY, module=wrap)
    helpers: list[subprocess.Popen[bytes]] = []
    try:
        token = (home / "api-token").read_text().strip() if (home / "api-token").exists() else ""
        auth = {"Authorization": f"Bearer {token}"}
        python = hop_trace.worker_python(root, CHECKOUT, trace) if args.trace else None
        _add_nodes_and_models(queen.url, auth, sshd, root, model, python)
        tunnel_proc, forwarded = forward(sshd, worker_port)
        helpers.append(tunnel_proc)
        relays = _byte_relays(worker_port)
        helpers += [proc for proc, _ in relays]
        ports = Ports(worker=worker_port, forwarded=forwarded, relays=[p for _, p in relays])
        paths = _paths(queen.url, auth, ports, args.max_tokens)
        for call in paths.values():  # warm: the queen's worker loads on demand here
            call()
        cpus = os.sched_getaffinity(0)
        if args.pin != "none" and len(cpus) > 1:
            node_side = [sshd_proc.pid, *descendants(sshd_proc.pid)]
            relay_pids = [tunnel_proc.pid, *(p.pid for p, _ in relays)]
            relay_pids += [d for p, _ in relays for d in descendants(p.pid)]  # socat forks
            workers = [worker.pid, *_queen_worker_pids(queen.url, auth)]
            pin_all(args.pin, cpus, workers, node_side, queen.proc.pid, relay_pids)
        if args.trace:
            hop_trace.traced_rounds(paths, args.runs, trace)
        elif args.instructions:
            _count_instructions(paths, args.runs, args.max_tokens, queen.proc.pid, root)
        else:
            _measure_and_print(paths, args.runs, args.max_tokens, queen.proc.pid)
    finally:
        for proc in helpers:  # before they outlive this process holding its stdout
            proc.terminate()
        worker.terminate()
        worker.wait()
        stop_queen(queen)
        sshd_proc.terminate()
        sshd_proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--pin", choices=("workers", "node", "clients", "none"), default="workers")
    parser.add_argument("--trace", action="store_true", help="per-hop timestamps, interleaved")
    parser.add_argument(
        "--instructions", action="store_true", help="the queen's instructions per request"
    )
    return parser.parse_args()


def _add_nodes_and_models(
    queen_url: str,
    auth: dict[str, str],
    sshd: SshServer,
    root: Path,
    model: Path,
    python: Path | None,
) -> None:
    with httpx.Client(base_url=queen_url, headers=auth, timeout=60) as c:
        # One sshd, two nodes: the queen forwards to "bench"'s worker and calls
        # "bench-direct"'s on the node's address (loopback here).
        for name, access in (("bench", "ssh"), ("bench-direct", "direct")):
            body = sshd.node_body(name, root / "install", accept_new_host_key=True)
            body["worker_access"] = access
            if python is not None:
                body["worker_python"] = str(python)
            c.post("/v2/registry/beehives/add", json=body).raise_for_status()
        for name, node in (("tiny", "bench"), ("tiny-direct", "bench-direct")):
            entry = {"name": name, "model_ref": f"file:{model}", "nodes": [node]}
            c.post("/v2/registry/models/add", json={**entry, "slots": CONCURRENCY})


def _byte_relays(worker_port: int) -> list[tuple[subprocess.Popen[bytes], int]]:
    relays = [byte_relay(worker_port)]
    socat = socat_relay(worker_port)
    if socat is not None:
        relays.append(socat)
    return relays


@dataclass(frozen=True)
class Ports:
    """Where the worker is reached without the queen: its own port, the SSH
    forward's, and each byte relay's (Python's, then socat's where installed)."""

    worker: int
    forwarded: int
    relays: list[int]


def _paths(
    queen_url: str, auth: dict[str, str], ports: Ports, max_tokens: int
) -> dict[str, Callable[[], Sample]]:
    """Every path measured, by name: each call sends one streamed request."""
    prompt = "Once upon a time"
    params = {"max_tokens": max_tokens, "temperature": 0.0}
    worker_auth = {"Authorization": "Bearer bench-token-0123456789"}
    limits = httpx.Limits(max_connections=CONCURRENCY * 2)
    direct = httpx.Client(
        base_url=f"http://127.0.0.1:{ports.worker}", headers=worker_auth, limits=limits
    )
    tunnel = httpx.Client(
        base_url=f"http://127.0.0.1:{ports.forwarded}", headers=worker_auth, limits=limits
    )
    floors = {
        f"worker via byte relay ({kind})": httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers=worker_auth, limits=limits
        )
        for kind, port in zip(("Python", "socat"), ports.relays, strict=False)
    }
    via_queen = httpx.Client(base_url=queen_url, headers=auth, limits=limits, timeout=300)
    counter = iter(range(10**9))
    messages = [{"role": "user", "content": prompt}]
    chat_options = {"stream": True, "stream_options": {"include_usage": True}}

    def on_worker(client: httpx.Client, **content: Any) -> Callable[[], Sample]:
        """A request to the worker's own API, each with a job id of its own."""
        return lambda: stream(
            client, "/v1/inference", {"job_id": f"j{next(counter)}", **content, **params}
        )

    paths: dict[str, Callable[[], Sample]] = {
        "worker direct": on_worker(direct, prompt=prompt),
        "worker via SSH forward": on_worker(tunnel, prompt=prompt),
        # The chat paths' baseline: the worker renders the chat template itself,
        # which a prompt does not pay for.
        CHAT_BASE: on_worker(direct, messages=messages),
        **{label: on_worker(client, prompt=prompt) for label, client in floors.items()},
    }
    for suffix, name in (("", "tiny"), (", direct", "tiny-direct")):
        task = {"model": name, "prompt": prompt, **params}
        chat = {"model": name, "messages": messages, **params, **chat_options}
        paths[f"queen /v2/tasks{suffix}"] = partial(stream, via_queen, "/v2/tasks", task)
        paths[f"queen /v1/chat/completions{suffix}"] = partial(
            stream, via_queen, "/v1/chat/completions", chat
        )
    return paths


def _queen_worker_pids(queen_url: str, auth: dict[str, str]) -> list[int]:
    with httpx.Client(base_url=queen_url, headers=auth) as c:
        listed = c.get("/v2/workers/list").json()["workers"]
    return [w["pid"] for w in listed]


def _measure_and_print(
    paths: dict[str, Callable[[], Sample]], runs: int, max_tokens: int, queen_pid: int
) -> None:
    modes: dict[str, Callable[[], dict[str, dict[str, float]]]] = {
        "sequential, interleaved": lambda: sequential(paths, runs),
        "sequential, back to back": lambda: back_to_back(paths, runs, queen_pid),
        f"{CONCURRENCY} concurrent clients": lambda: {
            name: concurrent(call, runs) for name, call in paths.items()
        },
    }
    for title, run in modes.items():
        print(f"\n{title} ({max_tokens} tokens per request):")
        results = run()
        for name, r in results.items():
            base = results[CHAT_BASE if "chat" in name else "worker direct"]
            print(_row(name, r, base))


def _row(name: str, r: dict[str, float], base: dict[str, float]) -> str:
    """One path's line: its medians and how they compare with the direct worker's."""
    return (
        f"  {name:36s} first token {r['ttft_ms']:7.2f} ms "
        f"(+{r['ttft_ms'] - base['ttft_ms']:5.2f})  {r['tok_s']:7.0f} tok/s "
        f"({r['tok_s'] / base['tok_s'] * 100:5.1f} %)"
        + (f"  worker decode {r['decode_ms']:5.1f} ms" if r["decode_ms"] else "")
        + (
            f"  first->last token {r['span_ms']:5.2f} ms, last->end {r['tail_ms']:4.2f}"
            if "span_ms" in r
            else ""
        )
        + (
            f"  queen CPU {r['queen_cpu_ms']:5.2f} ms"
            if name.startswith("queen") and "queen_cpu_ms" in r
            else ""
        )
    )


if __name__ == "__main__":
    main()
