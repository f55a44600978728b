"""Hub downloads that run on this node (for nodes whose model source is the hub).

The helper is standard library only, so the download itself runs in a child:
the worker's interpreter with `-m rbee_worker.hubfetch`, given its job (and
the hub token) on stdin, never in argv. The child writes JSON event lines; a
thread here collects them, and the queen long-polls `model_fetch_events` for
what is new, so progress reaches it while the bytes flow. The files land in
the model's partial folder; `model_commit` checks them like any upload.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import threading
from collections import deque
from typing import Any

from rbee_hive import models
from rbee_hive.errors import OpError

# Only the hub's own settings pass into the child's environment.
_ENV_NAME = re.compile(r"^HF_[A-Z_]{1,40}$")
_JOBS: dict[str, _Job] = {}


class _Job:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self.stderr: deque[str] = deque(maxlen=5)
        self.finished = False
        self.changed = threading.Condition()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        threading.Thread(target=self._read_events, daemon=True).start()

    def _read_events(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a stray print from a library is not an event
            with self.changed:
                self.events.append(event)
                self.changed.notify_all()
        self.proc.wait()
        with self.changed:
            self.finished = True
            self.changed.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if line.strip():
                self.stderr.append(line.strip()[:300])


def model_fetch_start(
    install_path: str,
    rel: str,
    python: str,
    pythonpath: str,
    repo_id: str,
    commit: str,
    files: list[dict[str, Any]],
    token: str = "",
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Start downloading `files` of `repo_id` at `commit` into the model's partial folder."""
    _, folder = models.resolve(install_path, rel, partial=True)
    for item in files:
        models.check_file_name(item.get("name"))
    extra = {k: str(v) for k, v in (env or {}).items() if _ENV_NAME.match(k)}
    child_env = {**os.environ, **extra, "PYTHONPATH": pythonpath}
    os.makedirs(folder, exist_ok=True)
    try:
        proc = subprocess.Popen(
            [python, "-u", "-m", "rbee_worker.hubfetch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env,
            cwd=folder,
        )
    except OSError as exc:
        raise OpError("BACKEND_UNAVAILABLE", f"cannot start {python}: {exc.strerror}") from exc
    job = {"repo_id": repo_id, "commit": commit, "files": files, "folder": folder, "token": token}
    assert proc.stdin is not None
    try:
        proc.stdin.write(json.dumps(job) + "\n")
        proc.stdin.close()
    except BrokenPipeError:
        pass  # the child died at once; its exit and stderr reach the queen as events do
    job_id = secrets.token_hex(8)
    _JOBS[job_id] = _Job(proc)
    return {"job": job_id, "path": folder}


def model_fetch_events(job: str, cursor: int = 0, wait_s: float = 1.0) -> dict[str, Any]:
    """The events after `cursor`, waiting up to `wait_s` for one to come."""
    found = _JOBS.get(job)
    if found is None:
        raise OpError("INVALID_REQUEST", "no such download on this node")
    with found.changed:
        found.changed.wait_for(lambda: len(found.events) > cursor or found.finished, wait_s)
        events, finished = found.events[cursor:], found.finished
    answer: dict[str, Any] = {"events": events, "cursor": cursor + len(events)}
    if finished:
        _JOBS.pop(job, None)
        answer.update(finished=True, returncode=found.proc.returncode)
        answer["stderr"] = list(found.stderr)
    return answer


def model_fetch_cancel(job: str) -> dict[str, Any]:
    """Stop a download; what it wrote stays in the partial folder for the next run."""
    found = _JOBS.pop(job, None)
    if found is None:
        return {"cancelled": False}
    found.proc.terminate()
    try:
        found.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        found.proc.kill()
    return {"cancelled": True}
