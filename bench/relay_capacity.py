"""How many tokens a second one queen process relays: closed-loop streams
(each sends its next request when the last one ended) against the tiny model
on several workers, through the queen's `/v2/tasks` and, in the same run,
straight to the same worker processes (the direct path), at each count of
concurrent streams. For each: tokens a second, requests a second, the queen's
CPU seconds per relayed token (from `/proc/<pid>/stat`), and the CPU share of
every process on the path (queen, workers, the nodes' sshd and helper, this
client) and of the whole machine, which says what bounds the figure.

    .venv/bin/python -m bench.relay_capacity [--workers 4] [--streams 1,8,32,64,128]
        [--seconds 10] [--max-tokens 16] [--access ssh|direct] [--profile [FILE]]

Starts its own loopback sshd, queen (as shipped) and one node per worker (all
on the sshd), and stops them after. The direct path calls the queen's own
workers on their port (their node is this machine) with each one's bearer
token, read from the queen's database (the bench owns that queen). The two
paths' windows alternate, never overlap. `--access direct` sets the nodes to
`worker_access = "direct"` (the queen calls the workers on their port instead
of over a direct-tcpip channel of sshd). `--profile` samples the queen with
py-spy (the `bench` extra installs it) during the heaviest queen run and
prints where its busy time went (bench/queen_profile.py); with FILE, py-spy's
raw stacks stay there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import uvloop

from bench.queen_profile import QueenProfile
from bench.relay_procs import descendants, start_shipped_queen
from bench.scale import cpu_seconds, loadavg
from rbee_worker.tinymodel import write_tiny_model
from tests.plugins.queen import QueenProcess, stop_queen
from tests.plugins.sshd import start_sshd

MODEL = "tiny"
PROMPT = "Once upon a time"
TOKENS_OUT = re.compile(rb'"tokens_out":\s*(\d+)')
END_OF_BODY = b"\r\n0\r\n\r\n"  # the chunked body's last chunk
WARM_S = 1.0  # untimed streams before each window (at most the window's length)


@dataclass(frozen=True)
class Target:
    """Where a stream sends its requests: a host port, a path and a bearer token."""

    port: int
    path: str
    token: str


@dataclass(frozen=True)
class Rig:
    """The running parts: the queen, its workers (pid, and where the direct
    path reaches each), and the node side."""

    queen: QueenProcess
    workers: list[tuple[int, Target]]
    node_side: list[int]  # sshd and what it started (sessions, helpers), workers excepted

    @property
    def queen_target(self) -> Target:
        return Target(int(self.queen.url.rsplit(":", 1)[1]), "/v2/tasks", self.queen.token)

    def targets(self, via_queen: bool) -> list[Target]:
        return [self.queen_target] if via_queen else [target for _, target in self.workers]


@dataclass
class Tally:
    tokens: int = 0
    requests: int = 0
    errors: int = 0
    first_error: str = ""


def request_bytes(target: Target, body: dict[str, object]) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"POST {target.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {target.token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


async def one_stream(
    target: Target, bodies: Iterator[dict[str, object]], until: float, tally: Tally
) -> None:
    """Requests back to back on one keep-alive connection until `until`. A
    bare HTTP/1.1 client: it reads the chunked SSE body whole and takes the
    token count from the `end` event, so the client costs little per token."""
    reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
    try:
        while time.perf_counter() < until:
            writer.write(request_bytes(target, next(bodies)))
            got = bytearray()
            while not got.endswith(END_OF_BODY):
                chunk = await reader.read(65536)
                if not chunk:
                    raise ConnectionError(f"closed mid-response: {bytes(got[:300])!r}")
                got += chunk
                if not got.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"refused: {bytes(got[:300])!r}")
            tally.requests += 1
            found = TOKENS_OUT.search(got)
            if found is None:
                tally.errors += 1
                tally.first_error = tally.first_error or got[-300:].decode(errors="replace")
            else:
                tally.tokens += int(found.group(1))
    finally:
        writer.close()


def bodies_for(path: str, max_tokens: int) -> Iterator[dict[str, object]]:
    params = {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0.0}
    for i in count():
        yield (
            {"job_id": f"cap{i}", **params}
            if path == "/v1/inference"
            else {
                "model": MODEL,
                **params,
            }
        )


async def streams(targets: list[Target], n: int, seconds: float, max_tokens: int) -> Tally:
    """n concurrent streams, the i-th to targets[i % len(targets)]."""
    tally = Tally()
    until = time.perf_counter() + seconds
    bodies = {t.path: bodies_for(t.path, max_tokens) for t in targets}
    jobs = [one_stream(t, bodies[t.path], until, tally) for t in (targets * n)[:n]]
    await asyncio.gather(*jobs)
    return tally


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def measure(rig: Rig, via_queen: bool, n: int, args: argparse.Namespace) -> dict[str, float]:
    """One timed window: the tally, and each part's CPU over the same wall time."""
    workers = [pid for pid, _ in rig.workers]
    groups = {"queen": [rig.queen.proc.pid], "workers": workers, "node side": rig.node_side}
    before = {name: cpu_of(pids) for name, pids in groups.items()}
    busy0, total0 = machine_busy()
    started, client0 = time.perf_counter(), time.process_time()
    tally = uvloop.run(streams(rig.targets(via_queen), n, args.seconds, args.max_tokens))
    wall, client = time.perf_counter() - started, time.process_time() - client0
    busy1, total1 = machine_busy()
    if tally.errors or not tally.tokens:
        raise RuntimeError(f"{tally.errors} requests without an end event: {tally.first_error}")
    cores = len(Path("/proc/stat").read_text().split("\ncpu")) - 1
    row = {
        "tok/s": tally.tokens / wall,
        "req/s": tally.requests / wall,
        "tokens/req": tally.tokens / tally.requests,
        "client %": client / wall * 100,
        "machine %": (busy1 - busy0) / (total1 - total0) * 100 * cores,
        "load": float(loadavg()),
    }
    for name, pids in groups.items():
        used = cpu_of(pids) - before[name]
        row[f"{name} %"] = used / wall * 100
        if name == "queen":
            row["queen us/token"] = used / tally.tokens * 1e6
            row["queen us/req"] = used / tally.requests * 1e6
    return row


@contextmanager
def rig(workers: int, slots: int, access: str) -> Iterator[Rig]:
    """A shipped queen with model `tiny` on `workers` nodes of one loopback sshd,
    each worker started and warm."""
    root = Path(tempfile.mkdtemp(prefix="rbee-capacity-"))
    sshd_proc, sshd = start_sshd(root / "sshd")
    model = write_tiny_model(root / "model")
    (root / "home").mkdir()
    queen = start_shipped_queen(root / "home")
    try:
        nodes = [f"w{i}" for i in range(workers)]
        with queen.client() as c:
            for name in nodes:
                body = sshd.node_body(name, root / name, accept_new_host_key=True)
                body["worker_access"] = access
                c.post("/v2/registry/beehives/add", json=body).raise_for_status()
            entry = {"name": MODEL, "model_ref": f"file:{model}", "nodes": nodes, "slots": slots}
            c.post("/v2/registry/models/add", json=entry).raise_for_status()
        listed = _start_workers(queen, workers, slots)
        pids = [int(w["pid"]) for w in listed]
        side = [p for p in [sshd_proc.pid, *descendants(sshd_proc.pid)] if p not in pids]
        yield Rig(queen, list(zip(pids, _direct_targets(queen, listed), strict=True)), side)
    finally:
        stop_queen(queen)
        sshd_proc.terminate()
        sshd_proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def _direct_targets(queen: QueenProcess, listed: list[dict[str, Any]]) -> list[Target]:
    """Each worker's own port (its node is this machine) and its bearer token,
    which the queen keeps in its database (`worker_tokens`) for a queen that
    takes the node over; this bench owns that database."""
    uri = f"file:{queen.home / 'queen.db'}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as db:
        tokens = dict(db.execute("SELECT worker_id, token FROM worker_tokens").fetchall())
    return [Target(int(w["port"]), "/v1/inference", tokens[w["worker_id"]]) for w in listed]


def _start_workers(queen: QueenProcess, workers: int, slots: int) -> list[dict[str, Any]]:
    """Every slot busy until each node runs a ready worker: the queen starts a
    worker on the next node only when the running ones have no free slot."""
    deadline = time.monotonic() + 180
    target = Target(int(queen.url.rsplit(":", 1)[1]), "/v2/tasks", queen.token)
    with queen.client() as c:
        while time.monotonic() < deadline:
            uvloop.run(streams([target], workers * slots + 1, 1.0, 16))
            listed = c.get("/v2/workers/list").json()["workers"]
            ready = [w for w in listed if w["state"] in ("idle", "busy") and w["port"]]
            if len(ready) == workers:
                return ready
    raise RuntimeError(f"the workers did not all start: {listed}")


def main() -> None:
    args = _parse_args()
    counts = [int(s) for s in args.streams.split(",")]
    slots = -(-max(counts) // args.workers)  # every stream a slot of its own
    if slots > 64:
        raise SystemExit("bench.relay_capacity: at most 64 streams per worker (slots)")
    print(f"load average at the start: {loadavg()}")
    with rig(args.workers, slots, args.access) as parts:
        profile = None
        if args.profile is not None:
            profile = QueenProfile(
                parts.queen.proc.pid, Path(args.profile) if args.profile else None
            )
        print(
            f"\n{args.workers} workers x {slots} slots, {args.max_tokens} tokens a request,"
            f" {args.seconds:g} s a window, worker_access {args.access}"
        )
        print(HEADER)
        for n in counts:
            for label in ("direct", "queen"):
                # Untimed first: the queen's channels to the workers for n
                # streams are opened here, not in the window.
                untimed = min(WARM_S, args.seconds)
                warm = streams(parts.targets(label == "queen"), n, untimed, args.max_tokens)
                uvloop.run(warm)
                if profile is not None and label == "queen" and n == max(counts):
                    profile.start(args.seconds)
                row = measure(parts, label == "queen", n, args)
                print(format_row(n, label, row), flush=True)
        if profile is not None:
            print(profile.report())


HEADER = (
    "| streams | path | tok/s | req/s | tokens a request | queen CPU a token | a request"
    " | queen | workers | sshd + helpers | client | whole machine | load |\n" + "|" + " --- |" * 13
)


def format_row(n: int, label: str, r: dict[str, float]) -> str:
    queen_us = "- | -"
    if label == "queen":
        queen_us = f"{r['queen us/token']:.0f} us | {r['queen us/req'] / 1000:.2f} ms"
    return (
        f"| {n} | {label} | {r['tok/s']:.0f} | {r['req/s']:.1f} | {r['tokens/req']:.1f}"
        f" | {queen_us} | {r['queen %']:.0f} % | {r['workers %']:.0f} %"
        f" | {r['node side %']:.0f} % | {r['client %']:.0f} % | {r['machine %']:.0f} %"
        f" | {r['load']:.2f} |"
    )


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--streams", default="1,8,32,64,128", help="concurrent stream counts")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each window")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--access", choices=("ssh", "direct"), default="ssh")
    parser.add_argument(
        "--profile",
        nargs="?",
        const="",
        help="py-spy the heaviest queen run (keeping py-spy's raw stacks in FILE, if given)",
    )
    return parser.parse_args()


if __name__ == "__main__":
    main()
