"""What the relay costs: time to first token and tokens per second for the same
requests sent straight to a worker, to a worker through an SSH port forward (OpenSSH's client),
through the queen's /v2/tasks and through its /v1/chat/completions, each both
ways the queen reaches a worker (queen + SSH forward + worker, and queen +
worker on a node set to `worker_access = "direct"`), and through two relays
that only copy bytes (bench/byte_relay.py in Python, and socat where it is
installed: what one more hop costs here, the floor for the queen's addition),
on the tiny model:
sequentially with the paths interleaved (every process idle for a while
before each request), sequentially back to back (4 requests of one path in a
row, as under steady load, the paths taking turns), and with 8 concurrent
clients.

    .venv/bin/python -m bench.relay [--runs 30] [--max-tokens 64] [--repeat 1]
        [--pin workers|node|clients|none] [--client lean|httpx] [--trace | --instructions]

`--trace` stamps each hop of each request instead (bench/hop_trace.py) and
prints the median per hop; `--instructions` runs the queen under valgrind's
callgrind and prints the instructions it ran per request of each queen path
(a count a loaded machine does not distort); the back-to-back block prints
the queen's CPU time per request of each queen path. The requests are timed
by a lean client of the bench's own (bench/sse_client.py says why);
`--client httpx` times them with httpx, as the bench did before.

Starts its own loopback sshd, queen and a worker of its own in a temp dir, and
stops them after. The same requests also go straight to each of the queen's
two workers (found in its worker list, each called on its own port with its
own token from the queen's database): worker processes decode at different
speeds from run to run, so each queen path's ratio is to its OWN worker called
straight (for the chat paths, sent the same messages: the worker renders the
chat template, which a prompt does not pay for), and every other path's to
the bench's own worker (bench/relay_paths.py; each row names its base).
Prints medians and those ratios,
the worker's own decode time for each path (from its `end` event), and the
time from the first token event to the last and from the last to the
response's end (a relay's cost during the stream and at its end); last, how
many of the 8 queen cells (4 paths, both sequential orders) meet the relay's
targets: under 1 ms added at the median first token, at least 97 % of its
base's tokens/s. On a small shared machine one run can miss where the next
meets: each sequential block also gives every queen cell a 95 % interval for
both figures (bench/relay_stats.py), and says whether it meets both targets,
misses one or is undecided beyond the run's noise; `--repeat N` runs both
sequential orders N times in one process, counts each time, and ends with how
many of the N each cell met (the concurrent clients run once).

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
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import hop_trace, relay_stats
from bench.relay_paths import (
    CLIENTS,
    CONCURRENCY,
    Ports,
    QueenWorker,
    Sample,
    add_nodes_and_models,
    base_of,
    build_paths,
)
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
from tests.plugins.sshd import start_sshd

CHECKOUT = Path(__file__).resolve().parent.parent
BLOCK = 4  # requests in a row per path and turn, back to back
# The relay's targets, on every queen path in both sequential orders.
TARGET_ADDED_MS = 1.0
TARGET_KEPT = 0.97
TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"


Block = tuple[dict[str, dict[str, float]], dict[str, list[Sample]]]  # medians, requests


def sequential(paths: dict[str, Callable[[], Sample]], runs: int) -> Block:
    """Each path once per round, `runs` rounds: on a shared, noisy machine a slow
    spell then slows every path alike instead of the one measured at the time.
    Each round takes the paths in a new (seeded) order: the first request a
    worker gets after other workers served some is a millisecond or two slower,
    and in any fixed cyclic order that always fell on the same paths (several
    paths share each worker, so one of them always came second, warm)."""
    samples: dict[str, list[Sample]] = {name: [] for name in paths}
    order = random.Random(0)
    for _ in range(runs):
        names = list(paths)
        order.shuffle(names)
        for name in names:
            samples[name].append(paths[name]())
    return _medians(samples), samples


def back_to_back(paths: dict[str, Callable[[], Sample]], runs: int, queen_pid: int) -> Block:
    """Each path's requests in a row: the queen and the worker as they are
    under steady load, where the interleaved rounds catch each process after
    ~0.4 s asleep. In blocks of BLOCK (after 2 not counted), the paths taking
    turns in a new seeded order each round: one path's 30 requests in one
    stretch, minutes from its base's, put the machine's drift between the two
    into the ratio (a base 20 % slow or fast in one stretch). With each path's
    figures, the queen's CPU time per request meanwhile."""
    samples: dict[str, list[Sample]] = {name: [] for name in paths}
    cpu = dict.fromkeys(paths, 0.0)
    order = random.Random(1)
    for _ in range(-(-runs // BLOCK)):
        names = list(paths)
        order.shuffle(names)
        for name in names:
            for _ in range(2):
                paths[name]()
            started = cpu_seconds(queen_pid)
            samples[name] += [paths[name]() for _ in range(BLOCK)]
            cpu[name] += cpu_seconds(queen_pid) - started
    medians = _medians(samples)
    return {
        name: {**medians[name], "queen_cpu_ms": cpu[name] / len(samples[name]) * 1000}
        for name in paths
    }, samples


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
        print(f"  {name:39s} {each} [{', '.join(f'{c:.2f}' for c in got)}]")


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
        add_nodes_and_models(queen.url, auth, sshd, root, model, python)
        tunnel_proc, forwarded = forward(sshd, worker_port)
        helpers.append(tunnel_proc)
        relays = _byte_relays(worker_port)
        helpers += [proc for proc, _ in relays]
        ports = Ports(worker=worker_port, forwarded=forwarded, relays=[p for _, p in relays])
        paths, queen_workers = build_paths(
            queen.url, token, home, ports, args.max_tokens, args.client
        )
        _say_which(queen_workers)
        cpus = os.sched_getaffinity(0)
        if args.pin != "none" and len(cpus) > 1:
            node_side = [sshd_proc.pid, *descendants(sshd_proc.pid)]
            relay_pids = [tunnel_proc.pid, *(p.pid for p, _ in relays)]
            relay_pids += [d for p, _ in relays for d in descendants(p.pid)]  # socat forks
            workers = [worker.pid, *(w.pid for w in queen_workers.values())]
            pin_all(args.pin, cpus, workers, node_side, queen.proc.pid, relay_pids)
        if args.trace:
            hop_trace.traced_rounds(paths, args.runs, trace)
        elif args.instructions:
            _count_instructions(paths, args.runs, args.max_tokens, queen.proc.pid, root)
        else:
            _measure_and_print(paths, args.runs, args.max_tokens, queen.proc.pid, args.repeat)
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
    parser.add_argument(
        "--repeat", type=int, default=1, help="the sequential orders this many times, each counted"
    )
    parser.add_argument(
        "--client", choices=CLIENTS, default="lean", help="what times the requests (sse_client.py)"
    )
    parser.add_argument("--trace", action="store_true", help="per-hop timestamps, interleaved")
    parser.add_argument(
        "--instructions", action="store_true", help="the queen's instructions per request"
    )
    return parser.parse_args()


def _byte_relays(worker_port: int) -> list[tuple[subprocess.Popen[bytes], int]]:
    relays = [byte_relay(worker_port)]
    socat = socat_relay(worker_port)
    if socat is not None:
        relays.append(socat)
    return relays


def _measure_and_print(
    paths: dict[str, Callable[[], Sample]], runs: int, max_tokens: int, queen_pid: int, repeats: int
) -> None:
    """The two sequential orders `repeats` times, each time with its count of
    queen cells meeting the targets; then the concurrent clients, once; with
    several repeats, last, how often each cell met them."""
    sequential_modes: dict[str, Callable[[], Block]] = {
        "sequential, interleaved": lambda: sequential(paths, runs),
        "sequential, back to back": lambda: back_to_back(paths, runs, queen_pid),
    }
    tallies: list[dict[str, bool]] = []
    sure: list[tuple[int, int]] = []  # cells meeting both, missing one, beyond the noise
    for repeat in range(repeats):
        kept: dict[str, bool] = {}
        verdicts: list[str] = []
        for title, run in sequential_modes.items():
            what = f"{title}, repeat {repeat + 1} of {repeats}" if repeats > 1 else title
            results, samples = _print_block(what, run, max_tokens)
            order = title.split(", ")[1]
            kept |= {f"{n}, {order}": ok for n, ok in _meeting_targets(results).items()}
            verdicts += _print_intervals(samples)
        tallies.append(kept)
        sure.append((verdicts.count("meets"), verdicts.count("misses")))
        if repeats > 1:
            print(f"\nqueen cells meeting both targets: {sum(kept.values())} of {len(kept)}")
    _print_block(
        f"{CONCURRENCY} concurrent clients",
        lambda: ({name: concurrent(call, runs) for name, call in paths.items()}, {}),
        max_tokens,
    )
    if repeats > 1:
        print(f"\neach cell, the repeats meeting both targets (of {repeats}):")
        for cell in tallies[0]:
            print(f"  {cell:50s} {sum(t[cell] for t in tallies)}")
    each = ", each repeat" if repeats > 1 else ""
    print(
        f"\nqueen cells whose 95 % intervals meet both targets / miss one{each}: "
        + ", ".join(f"{meets} / {misses}" for meets, misses in sure)
        + f" of {len(tallies[0])}"
    )
    counts = ", ".join(str(sum(t.values())) for t in tallies)
    print(
        f"\nqueen cells meeting both targets (sequential, both orders){each}: "
        f"{counts} of {len(tallies[0])}"
    )


def _print_block(title: str, run: Callable[[], Block], max_tokens: int) -> Block:
    """One block's rows, each against its base; returns the results."""
    print(f"\n{title} ({max_tokens} tokens per request; +ms and % against [vs ...]):")
    results, samples = run()
    for name, r in results.items():
        print(_row(name, r, base_of(name), results[base_of(name)]))
    return results, samples


def _print_intervals(samples: dict[str, list[Sample]]) -> list[str]:
    """Each queen cell's 95 % intervals (bench/relay_stats.py) and whether
    they meet both targets, miss one, or straddle one: the verdicts."""
    print("  each queen path's 95 % intervals, its requests drawn again by place in the run:")
    verdicts = []
    for name in (n for n in samples if n.startswith("queen")):
        got = relay_stats.interval(samples[name], samples[base_of(name)])
        verdict = got.verdict(TARGET_ADDED_MS, TARGET_KEPT)
        print(f"    {name:37s} {got.text()}  {verdict}")
        verdicts.append(verdict)
    return verdicts


def _meeting_targets(results: dict[str, dict[str, float]]) -> dict[str, bool]:
    """Each queen path's cell against the relay's targets: under TARGET_ADDED_MS
    added at the median first token and TARGET_KEPT of its base's tokens/s."""
    kept = {}
    for name, r in results.items():
        if name.startswith("queen"):
            base = results[base_of(name)]
            added = r["ttft_ms"] - base["ttft_ms"]
            kept[name] = added < TARGET_ADDED_MS and r["tok_s"] >= TARGET_KEPT * base["tok_s"]
    return kept


def _say_which(queen_workers: dict[str, QueenWorker]) -> None:
    """Which of the queen's workers each node's direct paths call (no token)."""
    for node, w in queen_workers.items():
        print(f"node {node}: the queen's worker {w.worker_id}, port {w.port}, pid {w.pid}")


def _row(name: str, r: dict[str, float], base_name: str, base: dict[str, float]) -> str:
    """One path's line: its medians and how they compare with its base's."""
    return (
        f"  {name:39s} first token {r['ttft_ms']:7.2f} ms "
        f"({r['ttft_ms'] - base['ttft_ms']:+6.2f})  {r['tok_s']:7.0f} tok/s "
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
        + f"  [vs {base_name}]"
    )


if __name__ == "__main__":
    main()
