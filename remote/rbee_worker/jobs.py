"""Slots and the jobs running in them.

A slot is claimed in one step under a lock before any response is sent, so two
racing requests cannot both win; it is released by the thread that ran the job.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass(eq=False)
class Job:
    job_id: str
    correlation_id: str = "-"  # the queen's request id, in every log line of the job
    cancel: threading.Event = field(default_factory=threading.Event)


class Slots:
    def __init__(self, total: int = 1) -> None:
        self.total = total
        self._lock = threading.Lock()
        self._running: list[Job] = []

    @property
    def busy(self) -> int:
        with self._lock:
            return len(self._running)

    def try_claim(self, job: Job) -> bool:
        with self._lock:
            if len(self._running) >= self.total:
                return False
            self._running.append(job)
            return True

    def release(self, job: Job) -> None:
        with self._lock:
            if job in self._running:
                self._running.remove(job)

    def cancel(self, job_id: str) -> bool:
        """Ask every running job with this id to stop; True if there was one."""
        with self._lock:
            matches = [job for job in self._running if job.job_id == job_id]
        for job in matches:
            job.cancel.set()
        return bool(matches)

    def cancel_all(self) -> None:
        with self._lock:
            running = list(self._running)
        for job in running:
            job.cancel.set()
