"""Load through the queen's OpenAI route: the tiny model on 2 workers (two
nodes on a loopback sshd, one slot each), requests arriving at a fixed rate
(open loop: a slow answer does not slow the arrivals), each a streamed
completion. Reports time to first token and total time (p50/p99) and the
errors by code; 429 (QUEUE_FULL, QUEUE_TIMEOUT) is the only answer allowed
besides a completion.

    .venv/bin/python -m bench.load                      # 1000 requests in 60 s
    .venv/bin/python -m bench.load --knee 5,10,20,40    # each rate for --seconds
    .venv/bin/python -m bench.load --soak 600           # bench.load_soak

Starts its own loopback sshd and queen (as shipped) in a temp dir and stops
them after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.relay_procs import start_shipped_queen
from rbee_worker.tinymodel import write_tiny_model
from tests.plugins.queen import QueenProcess, stop_queen
from tests.plugins.sshd import SshServer, start_sshd

MODEL = "tiny"
NODES = ("a", "b")
TARGET_P99_S = 0.5


@dataclass
class Result:
    ttft: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)

    def add(self, other: Result) -> None:
        self.ttft += other.ttft
        self.total += other.total
        self.codes.update(other.codes)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")


# The tiny model has no chat template: the completions route (the same relay).
PATH = "/v1/completions"


def body(max_tokens: int) -> dict[str, object]:
    return {"model": MODEL, "prompt": "Once upon a time", "max_tokens": max_tokens, "stream": True}


async def one(client: httpx.AsyncClient, max_tokens: int, out: Result) -> None:
    """One streamed completion; its times, or its error's code."""
    started = time.perf_counter()
    first = None
    try:
        async with client.stream("POST", PATH, json=body(max_tokens)) as r:
            if r.status_code != 200:
                error = json.loads(await r.aread()).get("error", {})
                out.codes[str(error.get("code") or r.status_code)] += 1
                return
            async for line in r.aiter_lines():
                if first is None and line.startswith("data: {"):
                    first = time.perf_counter()
                if '"error"' in line:
                    out.codes[str(json.loads(line[6:])["error"].get("code"))] += 1
                    return
    except httpx.HTTPError as exc:
        out.codes[type(exc).__name__] += 1
        return
    end = time.perf_counter()
    out.codes["ok"] += 1
    out.ttft.append((first or end) - started)
    out.total.append(end - started)


async def at_rate(queen: QueenProcess, rate: float, seconds: float, max_tokens: int) -> Result:
    """`rate` requests a second for `seconds`, each on its own task."""
    out = Result()
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=200)
    auth = {"Authorization": f"Bearer {queen.token}"}
    async with httpx.AsyncClient(
        base_url=queen.url, headers=auth, timeout=120, limits=limits
    ) as client:
        count = max(1, round(rate * seconds))
        start = time.perf_counter()
        tasks = []
        for i in range(count):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(client, max_tokens, out)))
        await asyncio.gather(*tasks)
    return out


def report(label: str, r: Result) -> bool:
    """Print one run; True when it meets the target (p99 first token and no
    error but 429)."""
    errors = {code: n for code, n in r.codes.items() if code != "ok"}
    bad = {code: n for code, n in errors.items() if code not in ("queue_full", "queue_timeout")}
    print(
        f"{label}: {r.codes['ok']} ok; first token p50 {pct(r.ttft, 0.5) * 1000:.0f} ms,"
        f" p99 {pct(r.ttft, 0.99) * 1000:.0f} ms; total p50 {pct(r.total, 0.5) * 1000:.0f} ms,"
        f" p99 {pct(r.total, 0.99) * 1000:.0f} ms; errors {dict(errors) or 'none'}"
    )
    return not bad and bool(r.ttft) and pct(r.ttft, 0.99) < TARGET_P99_S


@contextmanager
def fleet(slots: int) -> Iterator[tuple[QueenProcess, SshServer, Path]]:
    """A shipped queen with model `tiny` on two loopback nodes, both workers warm."""
    root = Path(tempfile.mkdtemp(prefix="rbee-load-"))
    sshd_proc, sshd = start_sshd(root / "sshd")
    model = write_tiny_model(root / "model")
    (root / "home").mkdir()
    queen = start_shipped_queen(root / "home")
    try:
        with queen.client() as c:
            for name in NODES:
                node = sshd.node_body(name, root / name, accept_new_host_key=True)
                c.post("/v2/registry/beehives/add", json=node).raise_for_status()
            entry = {"name": MODEL, "model_ref": f"file:{model}", "nodes": list(NODES)}
            c.post("/v2/registry/models/add", json={**entry, "slots": slots}).raise_for_status()
        warm = asyncio.run(at_rate(queen, 50, 2 * slots / 50, 2))  # a request per slot at once
        assert warm.codes["ok"] == 2 * slots, f"the workers did not start: {warm.codes}"
        yield queen, sshd, root
    finally:
        stop_queen(queen)
        sshd_proc.terminate()
        sshd_proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--slots", type=int, default=1, help="slots per worker")
    parser.add_argument("--knee", help="rates (requests/s) to try in turn, e.g. 5,10,20")
    parser.add_argument("--soak", type=float, help="seconds of mixed traffic (bench.load_soak)")
    args = parser.parse_args()
    with fleet(args.slots) as (queen, _, root):
        if args.soak:
            from bench.load_soak import soak

            sys.exit(0 if soak(queen, root, args.soak, args.max_tokens) else 1)
        rates = [float(r) for r in args.knee.split(",")] if args.knee else []
        rates = rates or [args.requests / args.seconds]
        knee = None
        for rate in rates:
            result = asyncio.run(at_rate(queen, rate, args.seconds, args.max_tokens))
            label = f"{rate:g} req/s for {args.seconds:g} s ({round(rate * args.seconds)} requests)"
            if report(label, result):
                knee = rate
        target_ms = TARGET_P99_S * 1000
        print(f"highest rate meeting p99 first token < {target_ms:.0f} ms: {knee or 0:g} req/s")


if __name__ == "__main__":
    main()
