"""Where a queen process's busy time goes: py-spy samples it for a window
(`py-spy record --nonblocking --format raw`, idle threads not sampled), and the
samples are summed by function, both where the sample was taken (self) and
anywhere on its stack (inclusive). bench.relay_capacity runs it on the queen
during its heaviest window."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

RATE = 200  # samples a second
TOP = 15
LINE_NUMBER = re.compile(r":\d+\)$")


def function_of(frame: str) -> str:
    """`send (/usr/lib/python3.11/asyncio/selector_events.py:1024)` ->
    `send (asyncio/selector_events.py)`: the folders above the package dropped."""
    name = LINE_NUMBER.sub(")", frame.strip())
    name = re.sub(r"\(/\S*/(?:site-packages|python3\.\d+)/", "(", name)
    return re.sub(r"\(/\S*/(rbee_\w+)/", r"(\1/", name)


def summarize(raw: str) -> tuple[int, Counter[str], Counter[str]]:
    """The sample count, and the samples by function: self and inclusive. The
    frames that every sample of the main thread passes through (from runpy to
    the event loop's run) are left out of the inclusive count: they say
    nothing the self count of `Runner.run` and the total do not."""
    stacks: list[tuple[list[str], int]] = []
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append(([function_of(frame) for frame in stack.split(";")], int(count)))
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    roots: Counter[str] = Counter()
    for functions, samples in stacks:
        own[functions[-1]] += samples
        roots[functions[0]] += samples
        for name in set(functions):
            anywhere[name] += samples
    if roots:
        main, in_main = roots.most_common(1)[0]
        for name in {f for functions, _ in stacks if functions[0] == main for f in functions}:
            if anywhere[name] == in_main:
                del anywhere[name]
    return sum(n for _, n in stacks), own, anywhere


class QueenProfile:
    def __init__(self, pid: int, keep: Path | None = None) -> None:
        self.pid = pid
        self.proc: subprocess.Popen[bytes] | None = None
        self.keep = keep  # where py-spy's raw stacks stay, else removed after the report
        self.out = keep or Path(tempfile.mkdtemp(prefix="rbee-profile-")) / "queen.raw"
        self.seconds = 0.0

    def start(self, seconds: float) -> None:
        beside = Path(sys.executable).with_name("py-spy")  # the venv's, where not on PATH
        spy = str(beside) if beside.exists() else shutil.which("py-spy")
        if spy is None:
            raise SystemExit("--profile needs py-spy (pip install -e '.[bench]')")
        self.seconds = seconds
        argv = [spy, "record", "--pid", str(self.pid), "--duration", str(max(1, int(seconds)))]
        argv += ["--rate", str(RATE), "--nonblocking", "--format", "raw", "--output"]
        self.proc = subprocess.Popen([*argv, str(self.out)], stdout=subprocess.DEVNULL)

    def report(self) -> str:
        assert self.proc is not None
        self.proc.wait(timeout=60)
        total, own, anywhere = summarize(self.out.read_text())
        if self.keep is None:
            shutil.rmtree(self.out.parent, ignore_errors=True)
        if not total:
            return "py-spy took no sample of the queen"
        possible = RATE * max(1, int(self.seconds))
        lines = [
            f"\nqueen under py-spy: {total} busy samples of {possible} possible"
            f" ({total / possible * 100:.0f} % of one thread's time; a thread waiting for"
            " a CPU counts as busy, so on a loaded machine this exceeds its CPU share)",
            "| self samples | share | function |",
            "| --- | --- | --- |",
        ]
        lines += [f"| {n} | {n / total * 100:.1f} % | `{f}` |" for f, n in own.most_common(TOP)]
        lines += ["", "| inclusive samples | share | rbee's own function |", "| --- | --- | --- |"]
        ours = [(f, n) for f, n in anywhere.most_common() if "(rbee_" in f][:TOP]
        lines += [f"| {n} | {n / total * 100:.1f} % | `{f}` |" for f, n in ours]
        return "\n".join(lines)
