"""bench.scale's bad links at scale: some hosts' links cut (`--cut`) or slowed
(`--slow`), and how soon the other nodes answered the queen's health round
next to the impaired ones, from the queen's own `node` events.

A slowed link is `tc qdisc ... tbf` on both ends of the host's veth pair (the
rate in `--slow-rate`, a burst of one packet, 400 ms of queue) with a filler
stream of UDP datagrams (1200 bytes every 10 ms, to the discard port) that
keeps the queen-to-host queue full, as on a busy slow link: every packet of
the host's SSH session then waits out the queue. Without the filler, tbf
alone lets a small `ping` through at once (its bucket refills between rounds).
"""

from __future__ import annotations

import math
import socket
import statistics
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from bench.scale_queen import Queen
from tests.plugins.testbed import TestHost

FILLER_BYTES = 1200
FILLER_EVERY_S = 0.01
DISCARD_PORT = 9
# The rounds measured: warm ones, then a queen restart ("cold") and the round after it.
PHASES = {"cut": ("warm", "cold"), "slowed": ("warm", "warm", "warm", "cold", "next")}


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def _tc(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


def peer_of(host: TestHost) -> str:
    """The host-side end of the veth pair (its only link besides lo)."""
    listed = subprocess.run(
        ["ip", "-n", host.netns, "-o", "link", "show"], capture_output=True, text=True, check=True
    ).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in listed.splitlines()]
    return next(name for name in names if name != "lo")


def shaping(host: TestHost, rate: str) -> list[list[str]]:
    """The tc commands that slow both directions of the host's link."""
    tbf = ["root", "tbf", "rate", rate, "burst", "1600", "latency", "400ms"]
    inside = ["ip", "netns", "exec", host.netns, "tc", "qdisc", "replace", "dev", peer_of(host)]
    return [["tc", "qdisc", "replace", "dev", host.veth, *tbf], [*inside, *tbf]]


def unshaping(host: TestHost) -> list[list[str]]:
    inside = ["ip", "netns", "exec", host.netns, "tc", "qdisc", "del", "dev", peer_of(host)]
    return [["tc", "qdisc", "del", "dev", host.veth, "root"], [*inside, "root"]]


@contextmanager
def slowed(hosts: list[TestHost], rate: str) -> Iterator[None]:
    """The hosts' links shaped, with the filler running, for the block's length."""
    stop = threading.Event()

    def fill() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            while not stop.wait(FILLER_EVERY_S):
                for host in hosts:
                    try:
                        sock.sendto(b"\0" * FILLER_BYTES, (host.address, DISCARD_PORT))
                    except OSError:
                        continue  # a full queue refuses the datagram: the point

    shaped: list[TestHost] = []
    filler = threading.Thread(target=fill, daemon=True)
    try:
        for host in hosts:
            for argv in shaping(host, rate):
                _tc(argv)
            shaped.append(host)
        filler.start()
        yield
    finally:
        stop.set()
        if filler.is_alive():
            filler.join()
        for host in shaped:
            for argv in unshaping(host):
                _tc(argv)


@contextmanager
def cut(hosts: list[TestHost]) -> Iterator[None]:
    """The hosts' veths down: open sessions go silent, new connects fail at once."""
    try:
        for host in hosts:
            host.set_link(False)
        yield
    finally:
        for host in hosts:
            host.set_link(True)


def answers(queen: Queen, mark: int, since: float) -> dict[str, float]:
    """Seconds from `since` to each node's reachable answer among the events after `mark`."""
    return {
        str(e["node"]): float(str(e["at"])) - since
        for e in queen.events[mark:]
        if e.get("type") == "node" and e.get("status") == "reachable"
    }


def round_figures(queen: Queen, impaired: set[str]) -> tuple[dict[str, float], dict[str, str]]:
    """The queen's next health round: when the others and the impaired answered;
    and the error each impaired host got (its name replaced by NODE)."""
    mark, count = len(queen.events), len(queen.rounds())
    done = queen.wait_rounds(count + 1)[count]
    start = float(str(done["at"])) - float(str(done["duration_s"]))
    got = answers(queen, mark, start)
    errors = {
        str(e["node"]): str(e["last_error"]).replace(str(e["node"]), "NODE")
        for e in queen.events[mark:]
        if e.get("type") == "node" and e.get("node") in impaired and e.get("last_error")
    }
    others = [s for node, s in got.items() if node not in impaired]
    theirs = [s for node, s in got.items() if node in impaired]
    nan = float("nan")
    figures = {
        "others": float(len(others)),
        "others median": statistics.median(others) if others else nan,
        "others last": max(others, default=nan),
        "impaired": float(len(theirs)),
        "impaired median": statistics.median(theirs) if theirs else nan,
        "round": float(str(done["duration_s"])),
        "failed": float(str(done["failed"])),
    }
    return figures, errors


def link_figures(
    queen: Queen,
    hosts: list[TestHost],
    how: str,
    impair: Callable[[], AbstractContextManager[None]],
) -> tuple[list[tuple[str, dict[str, float]]], dict[str, str]]:
    """With the hosts' links impaired (`impair()`, a context manager): the
    rounds of PHASES[how] on a warm queen, then a restart (a cold round); and
    the errors the impaired hosts got. The cold round's first answers may
    precede the event subscription, so fewer may be counted than answered:
    its `failed` says how many did not."""
    impaired = {h.hostname for h in hosts}
    rows = []
    errors: dict[str, str] = {}
    queen.start()
    try:
        queen.wait_rounds(2)
        with impair():
            for phase in PHASES[how]:
                if phase == "cold":
                    queen.stop()
                    queen.start()
                figures, seen = round_figures(queen, impaired)
                rows.append((phase, figures))
                errors.update(seen)
    finally:
        queen.stop()
    return rows, errors


def report_links(
    n: int,
    k: int,
    how: str,
    measured: tuple[list[tuple[str, dict[str, float]]], dict[str, str]],
    detail: str,
) -> None:
    rows, errors = measured
    by_message = Counter(errors.values())
    print(f"\n{k} of {n} hosts' links {how}{detail}, load {loadavg()}")
    print(
        f"| round | the {n - k} others answered | their median | the last of them"
        f" | {how} hosts answered | their median | round took | failed |"
    )
    print("|" + " --- |" * 8)
    for phase, f in rows:
        print(
            f"| {phase} | {f['others']:.0f} | {seconds(f['others median'])}"
            f" | {seconds(f['others last'])} | {f['impaired']:.0f} of {k}"
            f" | {seconds(f['impaired median'])} | {f['round']:.2f} s | {f['failed']:.0f} |"
        )
    for error, count in sorted(by_message.items()):
        print(f"the {how} hosts' last error ({count} of them): {error}")


def seconds(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f} s"
