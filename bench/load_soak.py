"""The soak of bench.load: mixed traffic for a while against the fleet it
built (streamed completions, some cancelled after their first chunk, `workers
list`, an event-stream subscriber, a worker SIGKILLed every minute), with the
queen's RSS, open file descriptors, threads and database size (the main file,
its WAL and shared-memory index together) sampled every 10 s, with the load
average beside each sample. Passes when no request was lost (each ended in its `end` or a coded
error) and no figure grew by more than 5 % from the sample at a fifth of the
run (minute 2 of 10) to the last.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path

import httpx

from bench.load import PATH, body
from tests.plugins.procs import worker_pids
from tests.plugins.queen import QueenProcess

SAMPLE_EVERY_S = 10
KILL_EVERY_S = 60
RATE = 4.0  # completions a second
GROWTH_LIMIT = 0.05


def sample(queen: QueenProcess) -> dict[str, float]:
    pid = queen.proc.pid
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    db = sum(p.stat().st_size for p in queen.home.glob("queen.db*"))
    return {
        "rss_kib": float(status["VmRSS"].split()[0]),
        "fds": float(len(os.listdir(f"/proc/{pid}/fd"))),
        "threads": float(status["Threads"]),
        "db_bytes": float(db),
    }


async def request(
    client: httpx.AsyncClient, cancel: bool, max_tokens: int, ends: Counter[str]
) -> None:
    """One completion: `end`, a coded error, `cancelled` by us, or `lost`."""
    try:
        async with client.stream("POST", PATH, json=body(max_tokens)) as r:
            if r.status_code != 200:
                ends[
                    "error:"
                    + str(
                        (await r.aread())[:200].decode(errors="replace").split('"code":')[-1][:30]
                    )
                ] += 1
                return
            async for line in r.aiter_lines():
                if cancel and line.startswith("data: {"):
                    ends["cancelled"] += 1
                    return
                if '"error"' in line:
                    ends["coded error"] += 1
                    return
                if line == "data: [DONE]":
                    ends["end"] += 1
                    return
    except httpx.HTTPError:
        pass
    ends["lost"] += 1


async def traffic(queen: QueenProcess, seconds: float, max_tokens: int, ends: Counter[str]) -> None:
    auth = {"Authorization": f"Bearer {queen.token}"}
    async with httpx.AsyncClient(base_url=queen.url, headers=auth, timeout=120) as client:
        tasks = []
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < seconds:
            tasks.append(asyncio.create_task(request(client, i % 5 == 4, max_tokens, ends)))
            if i % 8 == 0:
                (await client.get("/v2/workers/list")).raise_for_status()
            i += 1
            await asyncio.sleep(1 / RATE)
        await asyncio.gather(*tasks)


async def subscriber(queen: QueenProcess, seen: Counter[str]) -> None:
    auth = {"Authorization": f"Bearer {queen.token}"}
    async with httpx.AsyncClient(base_url=queen.url, headers=auth, timeout=None) as client:
        async with client.stream("GET", "/v2/events") as r:
            async for line in r.aiter_lines():
                if line.startswith("data:"):
                    seen["events"] += 1


async def killer(root: Path, seconds: float, killed: list[int]) -> None:
    start = time.monotonic()
    turn = 0
    while time.monotonic() - start + KILL_EVERY_S < seconds:
        await asyncio.sleep(KILL_EVERY_S)
        pids = worker_pids(under=str(root / ("a", "b")[turn % 2]))
        turn += 1
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)


async def sampler(queen: QueenProcess, seconds: float, samples: list[dict[str, float]]) -> None:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        samples.append(sample(queen))
        load = Path("/proc/loadavg").read_text().split()[0]  # the machine is shared
        print(f"  t={time.monotonic() - start:4.0f}s load {load} {samples[-1]}", flush=True)
        await asyncio.sleep(SAMPLE_EVERY_S)


async def run(
    queen: QueenProcess, root: Path, seconds: float, max_tokens: int
) -> tuple[Counter[str], list[dict[str, float]], list[int], Counter[str]]:
    ends: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    samples: list[dict[str, float]] = []
    killed: list[int] = []
    events = asyncio.create_task(subscriber(queen, seen))
    await asyncio.gather(
        traffic(queen, seconds, max_tokens, ends),
        killer(root, seconds, killed),
        sampler(queen, seconds, samples),
    )
    events.cancel()
    return ends, samples, killed, seen


def soak(queen: QueenProcess, root: Path, seconds: float, max_tokens: int) -> bool:
    ends, samples, killed, seen = asyncio.run(run(queen, root, seconds, max_tokens))
    base = samples[max(1, len(samples) // 5)] if len(samples) > 2 else samples[0]
    last = samples[-1]
    growth = {k: (last[k] - base[k]) / base[k] if base[k] else 0.0 for k in last}
    print(
        f"soak {seconds:g} s: requests {dict(ends)}; workers killed {len(killed)};"
        f" events seen {seen['events']}"
    )
    print(
        "growth from the sample at a fifth of the run to the last: "
        + ", ".join(f"{k} {v * 100:+.1f} %" for k, v in growth.items())
    )
    print(f"at a fifth: {base}; last: {last}")
    ok = ends["lost"] == 0 and all(v <= GROWTH_LIMIT for v in growth.values())
    print(f"soak {'passed' if ok else 'FAILED'}: no request lost, growth <= 5 %")
    return ok
