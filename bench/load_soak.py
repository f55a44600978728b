"""The soak of bench.load: mixed traffic for a while against the fleet it
built (streamed completions, some cancelled after their first chunk, `workers
list`, an event-stream subscriber, a worker SIGKILLed every minute), with the
queen's RSS, open file descriptors, threads and database size (the main file,
its WAL and shared-memory index together; also the main file, the WAL and the
worker history's rows apart) sampled every 10 s, with the load average beside
each sample. Passes when no request was lost (each ended in its `end` or a
coded error) and none of RSS, descriptors, threads and database size grew by
more than 5 % from a fifth of the run (minute 2 of 10) to its end, each moment
the median of five samples. The queen prunes busy and idle spells after
database.history_keep_s (a day): to see the pruning within a short soak, set
RBEE_DB_HISTORY_KEEP_S (say 30) in the environment of `bench.load --soak`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import statistics
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
TARGET = ("rss_kib", "fds", "threads", "db_bytes")  # the figures held to the limit
WINDOW = 5  # samples whose median stands for a moment of the run
SPELL_ROWS = (
    "SELECT count(*) FROM worker_events WHERE (from_state = 'idle' AND to_state = 'busy')"
    " OR (from_state = 'busy' AND to_state = 'idle')"
)


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


def database_parts(queen: QueenProcess) -> dict[str, float]:
    """What the database's size is made of: the main file, its WAL, the
    worker history's rows (of which busy and idle spells, the rows the queen's
    retention prunes after database.history_keep_s) and the main file's free
    pages (left by pruned rows, reused by new ones)."""
    home = queen.home
    wal = home / "queen.db-wal"
    conn = sqlite3.connect(f"file:{home / 'queen.db'}?mode=ro", uri=True)
    try:
        (rows,) = conn.execute("SELECT count(*) FROM worker_events").fetchone()
        (spells,) = conn.execute(SPELL_ROWS).fetchone()
        (free,) = conn.execute("PRAGMA freelist_count").fetchone()
    finally:
        conn.close()
    return {
        "main_bytes": float((home / "queen.db").stat().st_size),
        "wal_bytes": float(wal.stat().st_size if wal.exists() else 0),
        "history_rows": float(rows),
        "spell_rows": float(spells),
        "free_pages": float(free),
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
        samples.append({**sample(queen), **database_parts(queen)})
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
    fifth = max(WINDOW // 2, len(samples) // 5)
    base = window_median(samples[fifth - WINDOW // 2 : fifth + WINDOW // 2 + 1])
    last = window_median(samples[-WINDOW:])
    growth = {k: (last[k] - base[k]) / base[k] if base[k] else 0.0 for k in last}
    print(
        f"soak {seconds:g} s: requests {dict(ends)}; workers killed {len(killed)};"
        f" events seen {seen['events']}"
    )
    print(
        f"growth, median of {WINDOW} samples around a fifth of the run to that of the last "
        f"{WINDOW}: " + ", ".join(f"{k} {v * 100:+.1f} %" for k, v in growth.items())
    )
    print(f"around a fifth: {base}; last: {last}")
    print(f"largest WAL seen: {max(s['wal_bytes'] for s in samples):.0f} bytes")
    print(f"most history rows seen: {max(s['history_rows'] for s in samples):.0f}")
    ok = ends["lost"] == 0 and all(growth[k] <= GROWTH_LIMIT for k in TARGET)
    print(f"soak {'passed' if ok else 'FAILED'}: no request lost, {', '.join(TARGET)} grew <= 5 %")
    return ok


def window_median(window: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over a few samples: the WAL fills and is cut every
    few seconds, so one sample of the database can land anywhere in that cycle."""
    return {k: statistics.median(s[k] for s in window) for k in window[0]}
