"""Every benchmark still runs: each module under bench/ imports, and each
benchmark's smallest configuration runs to its report, as `python -m bench.X`
(the command docs/benchmarks.md gives), so one that rots fails here. The
figures themselves are not checked: speed belongs to the benchmarks."""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import bench
from tests.plugins.testbed import unavailable_reason

ROOT = Path(__file__).resolve().parent.parent
# Each benchmark's smallest configuration and a line its report always prints.
SMALLEST = {
    "relay": (
        ["--runs", "1", "--max-tokens", "2", "--repeat", "2"],
        "queen cells meeting both targets (sequential, both orders), each repeat: ",
    ),
    "first_token": (["--runs", "1", "--max-tokens", "2"], "warm over 1 runs: first token median"),
    "auth": (["--requests", "5"], "bearer token /v2/registry/models/list"),
    "asgi_stack": (["--requests", "20", "--cold", "--pauses", "1"], "ms asleep"),
    "ssh_hop": (["--requests", "3"], "  the queen's "),
    "fanout": (["--rounds", "1", "--sizes", "1"], "fabric warm / rbee warm"),
    "load": (["--requests", "4", "--seconds", "1", "--max-tokens", "2"], "highest rate meeting"),
    "relay_capacity": (
        ["--workers", "1", "--streams", "1", "--seconds", "0.2", "--max-tokens", "2"],
        "| 1 | queen |",
    ),
    "lease": (["--nodes", "2", "--rounds", "3"], "| 2 |"),
    "scale": (
        ["--sizes", "2", "--rounds", "2", "--interval", "1", "--concurrency", "1,2"],
        "queen process, health interval 1 s",
    ),
}
# bench.relay's rows and the base each one's ratios use: each queen path its
# own worker called straight (chat: sent the same messages), the rest the
# bench's own worker.
RELAY_BASES = {
    "worker direct": "worker direct",
    "worker direct, messages": "worker direct",
    "worker via SSH forward": "worker direct",
    "worker via byte relay (Python)": "worker direct",
    "ssh node's worker, direct": "worker direct",
    "ssh node's worker, direct, messages": "worker direct, messages",
    "direct node's worker, direct": "worker direct",
    "direct node's worker, direct, messages": "worker direct, messages",
    "queen /v2/tasks": "ssh node's worker, direct",
    "queen /v1/chat/completions": "ssh node's worker, direct, messages",
    "queen /v2/tasks, direct": "direct node's worker, direct",
    "queen /v1/chat/completions, direct": "direct node's worker, direct, messages",
}
# Run by the others (bench.relay starts it), never on its own.
HELPERS = {
    *("byte_relay", "relay_procs", "relay_paths", "relay_stats", "sse_client", "hop_trace"),
    *("load_soak", "scale_queen", "scale_links", "queen_profile"),
}


def _run(name: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-m", f"bench.{name}", *args]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


def test_every_bench_module_imports_and_each_benchmark_is_covered() -> None:
    names = {m.name for m in pkgutil.iter_modules(bench.__path__)}
    for name in sorted(names):
        importlib.import_module(f"bench.{name}")
    # A new benchmark must get its smallest run here too.
    assert names == set(SMALLEST) | HELPERS | {"gpu"}


@pytest.mark.parametrize(
    "name",
    ["relay", "first_token", "auth", "asgi_stack", "ssh_hop", "load", "relay_capacity", "lease"],
)
def test_benchmark_runs_its_smallest_configuration(name: str) -> None:
    args, expected = SMALLEST[name]
    done = _run(name, args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert expected in done.stdout, done.stdout[-3000:]
    if name == "relay":
        _check_relay_bases(done.stdout)


def _check_relay_bases(out: str) -> None:
    """Every row in each block (interleaved and back to back, each of the two
    repeats; concurrent, once), each with the base its ratios use."""
    seen: dict[str, list[str]] = {}
    for line in out.splitlines():
        if " first token " in line and "  [vs " in line:
            row = line.split(" first token ")[0].strip()
            seen.setdefault(row, []).append(line.rsplit("  [vs ", 1)[1].rstrip("]"))
    for row, base in RELAY_BASES.items():
        assert seen.get(row) == [base] * 5, (row, seen.get(row), out[-3000:])
    # The targets' count covers the 4 queen paths in both sequential orders,
    # once per repeat, and each queen cell says in how many repeats it met them.
    counts = out.rstrip().splitlines()[-1].rsplit(": ", 1)[1]
    assert re.fullmatch(r"[0-8], [0-8] of 8", counts), out[-3000:]
    for cell in RELAY_BASES:
        if cell.startswith("queen"):
            for order in ("interleaved", "back to back"):
                assert re.search(rf"  {re.escape(cell)}, {order} +[0-2]\n", out), cell
            # Its 95 % intervals in each sequential block (bench/relay_stats.py).
            interval = rf"\n    {re.escape(cell)} +first token [+-]\d+\.\d\d ms \(95 % interval "
            assert len(re.findall(interval, out)) == 4, (cell, out[-3000:])
    sure = r"\nqueen cells whose 95 % intervals meet both targets / miss one, each repeat: "
    assert re.search(sure + r"[0-8] / [0-8], [0-8] / [0-8] of 8\n", out), out[-3000:]
    # Each node's direct paths call the queen's own worker there, not the bench's.
    for node in ("bench", "bench-direct"):
        assert f"node {node}: the queen's worker w-" in out, out[-3000:]


def test_relay_times_with_httpx_too() -> None:
    """`--client httpx`: the requests timed through httpx, as before the bench's
    own client (bench/sse_client.py); every row still reads its tokens."""
    done = _run("relay", ["--runs", "1", "--max-tokens", "2", "--client", "httpx"])
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    rows = [line.split(" first token ")[0].strip() for line in lines if "  [vs " in line]
    for row in RELAY_BASES:  # in each of the three blocks
        assert rows.count(row) == 3, (row, done.stdout[-3000:])
    assert "queen cells meeting both targets (sequential, both orders): " in done.stdout


@pytest.mark.parametrize("name", ["fanout", "scale"])
def test_benchmark_on_test_hosts_runs_its_smallest_configuration(name: str) -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    args, expected = SMALLEST[name]
    done = _run(name, args)  # fanout's Fabric included: the extra `bench` installs it
    assert done.returncode == 0, done.stderr[-3000:]
    assert expected in done.stdout, done.stdout[-3000:]


def test_gpu_benchmark_runs_or_says_why_not() -> None:
    """Without a usable CUDA GPU and exllamav2 it exits 1 with the reason the
    worker's own GPU check gives; with one, its smallest run reports."""
    from rbee_worker.backends.gpu_check import diagnose, gather_facts

    reason = diagnose(gather_facts(), 0, need_exllamav2=True)
    done = _run("gpu", ["--streams", "1", "--max-tokens", "4"])
    if reason is None:
        assert done.returncode == 0, done.stderr[-3000:]
        assert "rbee single stream / bare single stream" in done.stdout, done.stdout[-3000:]
    else:
        assert done.returncode == 1
        assert f"bench.gpu needs a CUDA GPU with exllamav2: {reason}" in done.stderr


def test_queen_profile_sums_py_spy_samples_by_function() -> None:
    """bench.relay_capacity's profile table: self and inclusive samples by
    function (line numbers and folders dropped), the frames every main-thread
    sample passes through left out of the inclusive count."""
    from bench.queen_profile import summarize

    main = "_run_module_as_main (<frozen runpy>:198);main (/x/rbee_queen/__main__.py:9)"
    loop = f"{main};Runner.run (/usr/lib/python3.11/asyncio/runners.py:118)"
    send = "send (/v/lib/python3.11/site-packages/uvicorn/protocols/http/httptools_impl.py:12)"
    thread = "_bootstrap (threading.py:1);work (/x/rbee_queen/audit.py:9)"
    raw = f"{thread} 3\n{loop} 15\n{loop};{send} 8\n"  # the main thread not first
    total, own, anywhere = summarize(raw)
    assert total == 26
    assert own == {
        "Runner.run (asyncio/runners.py)": 15,
        "send (uvicorn/protocols/http/httptools_impl.py)": 8,
        "work (rbee_queen/audit.py)": 3,
    }
    assert anywhere["send (uvicorn/protocols/http/httptools_impl.py)"] == 8
    assert "main (rbee_queen/__main__.py)" not in anywhere
    assert "Runner.run (asyncio/runners.py)" not in anywhere  # in every main-thread sample
    assert anywhere["_bootstrap (threading.py)"] == 3
