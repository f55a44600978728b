"""The worker's token reaches it in a 0600 file the worker deletes once read,
never in its environment, which /proc/<pid>/environ shows for its whole life.
The helper's real spawn starts a real process that runs the worker's own read."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

from rbee_hive import processes

REMOTE = str(Path(__file__).resolve().parent.parent / "remote")
# Reports its environment as the kernel shows it, whether the token file was
# private, the token as the worker takes it, and whether the file was left.
PROBE = """
import json, os, stat
from rbee_worker.auth import take_token
environ = open("/proc/self/environ", "rb").read().decode()
path = os.environ.get("RBEE_WORKER_TOKEN_FILE", "")
mode = stat.S_IMODE(os.stat(path).st_mode) if path else None
token = take_token()
print(json.dumps({"environ": environ, "path": path, "mode": mode, "token": token,
                  "left": os.path.exists(path)}), flush=True)
"""


def test_the_token_travels_in_a_private_file_the_worker_deletes(tmp_path: Path) -> None:
    run = str(tmp_path / "run")
    token = "wt-" + os.urandom(16).hex()
    argv = [sys.executable, "-c", PROBE]
    spawned = processes.spawn("w-tok", run, argv, REMOTE, {"RBEE_WORKER_TOKEN": token})
    log = Path(spawned["log_file"])
    deadline = time.monotonic() + 20
    while "}" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
    report = json.loads(log.read_text().splitlines()[0])
    assert report["token"] == token  # the worker got it
    assert token not in report["environ"]  # the kernel's copy of its environment
    assert report["mode"] == stat.S_IRUSR | stat.S_IWUSR  # 0600 until read
    assert report["left"] is False  # deleted once read
    assert not list(Path(run).glob("*.token"))
