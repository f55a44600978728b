"""The registry of live workers: who runs, how many streams each has open, and
the clocks the supervisor reads (last token, idle since).

Claiming and releasing a slot is synchronous, so a router's choice and its
claim happen with no other request in between.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from peewee import DatabaseError

from rbee_queen.store.tables import Worker
from rbee_queen.workers.devices import serves
from rbee_queen.workers.live import LiveWorker
from rbee_queen.workers.states import StateRecorder, WorkerState
from rbee_wire.queen_events import QueenEvent, RequestStarted

S = WorkerState
Publish = Callable[[QueenEvent], object]
# Publishes the event a call makes, its place among the events taken now and
# the call made when it is handed on (EventBus.publish_built).
PublishBuilt = Callable[[Callable[[], QueenEvent]], object]

# A worker's recorded idle/busy state follows its in-memory request count this
# long after a change, and only if the change still holds then: a write costs
# about a millisecond of CPU, which every request would otherwise pay twice,
# right beside its first token. So back-to-back requests make one busy spell
# in the database and a request shorter than this none. Routing, the
# supervisor and GET /v2/workers read the exact in-memory count instead.
STATE_RECORD_DELAY_S = 0.25

log = logging.getLogger("rbee.queen.workers")


class WorkerRegistry:
    def __init__(self, states: StateRecorder, publish: Publish) -> None:
        self.states = states
        self.publish = publish
        self.live: dict[str, LiveWorker] = {}
        self._progress: dict[str, float] = {}
        self._idle_since: dict[str, float] = {}
        # Set once the workers of a previous queen are adopted or cleaned up;
        # until then no new worker starts, so none is started twice.
        self.adoption_done = asyncio.Event()
        # The request queue's hand-over: called as a slot frees, before the
        # worker can count as idle, so a waiting request takes it first.
        self.on_slot_free: Callable[[LiveWorker], None] | None = None

    def add(self, live: LiveWorker) -> None:
        self.live[live.worker_id] = live
        self.mark_idle(live.worker_id)

    def remove(self, worker_id: str) -> LiveWorker | None:
        return self.live.pop(worker_id, None)

    def running(self, node: str, model_ref: str, device: str) -> LiveWorker | None:
        """A live worker of the model on the node that serves `device`."""
        for live in self.live.values():
            if live.node == node and live.model_ref == model_ref and serves(live.device, device):
                return live
        return None

    # --- slots -------------------------------------------------------------------

    def claim(self, live: LiveWorker, job_id: str) -> None:
        """Count a stream against the worker's slots."""
        live.in_flight += 1
        if live.in_flight == 1:
            self._record_state_soon(live)
        live.no_streams.clear()
        self.mark_progress(live.worker_id)  # the watchdog's clock starts with the request
        self.publish(
            RequestStarted(
                type="request_started",
                job_id=job_id,
                worker_id=live.worker_id,
                node=live.node,
                model=live.model_ref,
            )
        )

    def release(self, live: LiveWorker) -> None:
        live.in_flight = max(0, live.in_flight - 1)
        if self.on_slot_free is not None:
            self.on_slot_free(live)
        if live.in_flight == 0:
            live.no_streams.set()
            self.mark_idle(live.worker_id)
            self._record_state_soon(live)

    def _record_state_soon(self, live: LiveWorker) -> None:
        if live.state_record is None:
            live.state_record = asyncio.get_running_loop().call_later(
                STATE_RECORD_DELAY_S, self._record_state, live
            )

    def _record_state(self, live: LiveWorker) -> None:
        live.state_record = None
        try:
            self._write_state(live)
        except DatabaseError as exc:
            # The database refuses writes (locked, full): the streams go on from
            # memory, and the record is tried again until the outage passes.
            log.warning("worker %s: state not recorded, retrying: %s", live.worker_id, exc)
            if live.worker_id in self.live:
                self._record_state_soon(live)

    def _write_state(self, live: LiveWorker) -> None:
        row = Worker.get_or_none(Worker.worker_id == live.worker_id)
        if row is None or row.state not in (S.IDLE, S.BUSY):
            return  # draining, stopped ...: not the request count's to change
        if live.in_flight and row.state == S.IDLE:
            self.states.transition(row, S.BUSY, f"{live.in_flight} request(s) in flight")
        elif not live.in_flight and row.state == S.BUSY:
            self.states.transition(row, S.IDLE, "no request in flight")

    # --- clocks the supervisor reads -------------------------------------------------

    def mark_progress(self, worker_id: str) -> None:
        self._progress[worker_id] = time.monotonic()

    def mark_idle(self, worker_id: str) -> None:
        self._idle_since[worker_id] = time.monotonic()
        self._progress.pop(worker_id, None)

    def stalled_for(self, worker_id: str) -> float | None:
        """Seconds since the last token of a worker with a request in flight."""
        live = self.live.get(worker_id)
        if live is None or live.in_flight == 0 or worker_id not in self._progress:
            return None
        return time.monotonic() - self._progress[worker_id]

    def idle_for(self, worker_id: str) -> float | None:
        live = self.live.get(worker_id)
        if live is None or live.in_flight > 0:
            return None
        return time.monotonic() - self._idle_since.setdefault(worker_id, time.monotonic())
