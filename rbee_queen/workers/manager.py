"""Workers: start one per (node, model) on demand, relay inference, stop them.

A worker binds 127.0.0.1 on its node; the queen reaches it through a port
forward on the node's SSH connection, so no worker port is ever open to the
network. A node set to `worker_access = "direct"` trades that for one hop
less: its workers also listen on the node's address (the one the queen's SSH
connection reached), still behind their bearer token, and the queen calls
them there. The worker's pid and port live in the database and, on the node,
in pid files the helper keeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import secrets
import socket
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import httpx

from rbee_queen import requestcontext as ctx
from rbee_queen.audit import AuditLog
from rbee_queen.config import QueenConfig
from rbee_queen.errors import (
    AllSlotsBusy,
    BackendUnavailable,
    InferenceFailed,
    InsufficientVram,
    InvalidRequest,
    LoadingTimeout,
    ModelNotFound,
    RbeeError,
    RequestTimeout,
    WorkerDraining,
    WorkerNotFound,
    WorkerStartFailed,
)
from rbee_queen.fleet import worker_stream
from rbee_queen.fleet.pool import SessionPool
from rbee_queen.fleet.session import NodeSession
from rbee_queen.fleet.worker_auth import TOKEN_ENV, WorkerTokens
from rbee_queen.fleet.worker_stream import (
    ConnectionPool,
    StreamError,
    WorkerStream,
    tcp_opener,
)
from rbee_queen.models.node_models import local_path_for_worker
from rbee_queen.nodes.inventory import NodeInventory, get_node, target_of
from rbee_queen.store.tables import Node, Worker
from rbee_queen.validation import model_path
from rbee_queen.workers.devices import engine_for, serves
from rbee_queen.workers.lifecycle import LifecycleMixin, TokenFile
from rbee_queen.workers.resources import preflight_worker
from rbee_queen.workers.restart_policy import RestartPolicy, RestartSettings
from rbee_queen.workers.states import LIVE, WorkerState, record_new, transition

log = logging.getLogger("rbee.queen.workers")
S = WorkerState

# A worker's recorded idle/busy state follows its in-memory request count this
# long after a change, and only if the change still holds then: a write costs
# about a millisecond of CPU, which every request would otherwise pay twice,
# right beside its first token. So back-to-back requests make one busy spell
# in the database and a request shorter than this none. Routing, the
# supervisor and GET /v2/workers read the exact in-memory count instead.
STATE_RECORD_DELAY_S = 0.25

# A worker reached directly has no SSH keepalive watching its link: a link that
# goes dead mid-stream is noticed by TCP keepalives instead, as soon as the SSH
# one would (idle 2 s, then 3 probes 2 s apart).
# (Options a platform lacks are left out: there the OS's defaults apply.)
KEEPALIVE_SOCKET_OPTIONS = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)] + [
    (socket.IPPROTO_TCP, getattr(socket, name), value)
    for name, value in (("TCP_KEEPIDLE", 2), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3))
    if hasattr(socket, name)
]


@dataclass
class LiveWorker:
    """What the queen holds in memory for a running worker."""

    worker_id: str
    node: str
    model_ref: str
    remote_port: int
    local_port: int
    slots: int = 1
    in_flight: int = 0  # streams the queen has open to it; routing reads this
    draining: bool = False  # being shut down: routing skips it
    # Set while no stream is open; a drain waits on it.
    no_streams: asyncio.Event = field(default_factory=asyncio.Event)
    # The node connection that holds the forward; once it is closed (the link
    # went down), the next request forwards again on a new connection.
    session: NodeSession | None = None
    # The node's address when the queen calls the worker directly (no forward).
    direct_host: str | None = None
    device: str = "cpu"  # cpu or cuda:N; routing matches requests on it
    # Kept-alive connections for inference streams (see worker_stream); made on
    # first use, dropped when the node's connection is made anew.
    streams: ConnectionPool | None = None
    state_record: asyncio.TimerHandle | None = None  # see STATE_RECORD_DELAY_S

    @property
    def free_slots(self) -> int:
        return self.slots - self.in_flight

    @property
    def address(self) -> tuple[str, int]:
        """Where the queen's HTTP calls reach the worker: its node's address, or
        the local end of the forward."""
        if self.direct_host is not None:
            return self.direct_host, self.remote_port
        return "127.0.0.1", self.local_port

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def stream_pool(self) -> ConnectionPool:
        if self.streams is None:
            if self.direct_host is not None:
                opener = tcp_opener(self.direct_host, self.remote_port, KEEPALIVE_SOCKET_OPTIONS)
            else:
                assert self.session is not None
                opener = functools.partial(self.session.open_channel, self.remote_port)
            self.streams = ConnectionPool(opener)
        return self.streams

    def drop_streams(self) -> None:
        if self.streams is not None:
            self.streams.close()
            self.streams = None

    def forget_address(self, tokens: WorkerTokens) -> None:
        """Stop sending the worker's token to where the queen called it."""
        if self.direct_host is not None:
            tokens.forget(self.remote_port, host=self.direct_host)
        tokens.forget(self.local_port)
        self.drop_streams()


class WorkerManager(LifecycleMixin):
    def __init__(self, config: QueenConfig, pool: SessionPool, inventory: NodeInventory) -> None:
        self.config = config
        self.pool = pool
        self.inventory = inventory
        self.tokens = WorkerTokens()
        self.audit: AuditLog | None = None  # set by the queen's services
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(10.0, read=None),
            auth=self.tokens,
            transport=httpx.AsyncHTTPTransport(socket_options=KEEPALIVE_SOCKET_OPTIONS),
        )
        self._live: dict[str, LiveWorker] = {}
        self._start_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._shutdowns: dict[str, asyncio.Future[dict[str, Any]]] = {}
        restart = RestartSettings(
            base_delay_s=config.restart_base_delay_s,
            max_delay_s=config.restart_max_delay_s,
            max_attempts=config.restart_max_attempts,
            breaker_failures=config.breaker_failures,
            breaker_window_s=config.breaker_window_s,
            stable_after_s=config.restart_reset_after_s,
        )
        self.init_lifecycle(RestartPolicy(restart), TokenFile(config.home / "worker-tokens.json"))

    @property
    def live(self) -> dict[str, LiveWorker]:
        return self._live

    # --- sessions ------------------------------------------------------------

    async def session_for(self, node: Node) -> NodeSession:
        try:
            session = await self.pool.get(target_of(node))
        except RbeeError as exc:
            self.inventory.mark(node, error=exc)
            raise
        if node.status != "reachable":
            self.inventory.mark(node, error=None)
        return session

    # --- starting ------------------------------------------------------------

    async def ensure_worker(
        self, node_name: str, model_ref: str, slots: int = 1, device: str = "cpu"
    ) -> LiveWorker:
        node = get_node(node_name)
        await self.adoption_done.wait()
        lock = self._start_locks.setdefault((node_name, model_ref), asyncio.Lock())
        async with lock:  # two cold requests for one model start one worker
            for live in self._live.values():
                if (
                    live.node == node_name
                    and live.model_ref == model_ref
                    and serves(live.device, device)
                ):
                    if live.draining:
                        raise draining_error(live)
                    row = Worker.get_or_none(Worker.worker_id == live.worker_id)
                    if row is not None and row.state in (S.IDLE, S.BUSY):
                        return live
            return await self._start(node, model_ref, slots, device)

    async def _start(
        self, node: Node, model_ref: str, slots: int = 1, device: str = "cpu"
    ) -> LiveWorker:
        key = (node.name, model_ref)
        if self.policy.circuit_open(key):
            raise WorkerStartFailed(
                f"not starting {model_ref} on {node.name}: it failed "
                f"{self.policy.settings.breaker_failures} times in "
                f"{self.policy.settings.breaker_window_s:g}s (circuit open); see its log"
            )
        try:
            live = await self._start_new(node, model_ref, slots, device)
        except (WorkerStartFailed, LoadingTimeout):
            self.policy.failed(key)  # counts towards the circuit breaker
            raise
        self.policy.started(key)
        return live

    @staticmethod
    def model_dir(node_name: str, model_ref: str) -> str | None:
        """The folder on the node a worker loads: a `file:` path as given, an
        `hf:` reference through the node's model catalog (never a download)."""
        return model_path(model_ref) or local_path_for_worker(node_name, model_ref)

    async def _start_new(
        self, node: Node, model_ref: str, slots: int, device: str = "cpu"
    ) -> LiveWorker:
        path = self.model_dir(node.name, model_ref)
        if path is None:
            raise InvalidRequest(
                f"model reference {model_ref!r} is not supported: use file:/absolute/path",
                fields=[{"field": "model", "constraint": "pattern", "message": "file:/path"}],
            )
        session = await self.session_for(node)
        info = await session.call("path_info", path=path)
        if not info["is_dir"]:
            raise ModelNotFound(f"model not found on {node.name}: {path}")
        # The device (a GPU picked or checked), then RAM/VRAM, before spawning.
        placement = await preflight_worker(
            session,
            node.name,
            path,
            device,
            model_ref=model_ref,
            slots=slots,
            max_temp_c=self.config.gpu_max_temp_c,
        )
        worker_id = f"w-{secrets.token_hex(4)}"
        row = Worker.create(
            worker_id=worker_id,
            node=node,
            model_ref=model_ref,
            backend=engine_for(placement.device),
            device=placement.device,
            gpu_name=placement.gpu_name,
            state=S.SPAWNING.value,
        )
        record_new(row, "requested")
        try:
            return await self._spawn_and_wait(session, node, row, path, slots)
        except BaseException as exc:
            await self._stop_after_failure(session, row, exc)
            raise

    async def _spawn_and_wait(
        self, session: NodeSession, node: Node, row: Worker, path: str, slots: int
    ) -> LiveWorker:
        argv = [
            node.worker_python or "python3",
            "-m",
            "rbee_worker",
            "--worker-id",
            row.worker_id,
            "--model",
            path,
            "--backend",
            row.backend,
            "--device",
            row.device,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--slots",
            str(slots),
        ]
        direct_host = node_address(session) if node.worker_access == "direct" else None
        if direct_host is not None:
            argv += ["--direct-host", direct_host]
        token = self.tokens.new()  # in the spawn environment, never argv
        self.token_file.put(row.worker_id, token)  # a restarted queen re-adopts with it
        spawned = await session.call(
            "spawn_worker",
            worker_id=row.worker_id,
            run_dir=session.run_dir,
            argv=argv,
            pythonpath=session.helper_dir,
            env={"HF_HUB_OFFLINE": "1", TOKEN_ENV: token},
        )
        row.pid = spawned["pid"]
        row.save()
        deadline = time.monotonic() + self.config.worker_loading_timeout_s
        remote_port = await self._wait_for_port(session, row, deadline)
        row.port = remote_port
        transition(row, S.LOADING, f"listening on node port {remote_port}")
        if direct_host is not None:
            local_port = 0  # no forward: the queen calls the node's address
            self.tokens.bind(remote_port, token, host=direct_host)
        else:
            local_port = await session.forward(remote_port)
            self.tokens.bind(local_port, token)
        live = LiveWorker(
            row.worker_id,
            node.name,
            row.model_ref,
            remote_port,
            local_port,
            slots=slots,
            session=session,
            direct_host=direct_host,
            device=row.device,
        )
        await self._wait_until_ready(session, row, live, deadline)
        row.vram_bytes = await self._loaded_vram(live)  # saved with the state below
        self._live[row.worker_id] = live
        self.mark_idle(row.worker_id)
        transition(row, S.IDLE, "model loaded")
        return live

    async def _wait_for_port(self, session: NodeSession, row: Worker, deadline: float) -> int:
        while True:
            status = await session.call(
                "worker_status", worker_id=row.worker_id, run_dir=session.run_dir
            )
            if status["port"]:
                return int(status["port"])
            if not status["alive"]:
                raise WorkerStartFailed(
                    f"worker exited during start: {await self._last_log_line(session, row)}"
                )
            if time.monotonic() > deadline:
                raise LoadingTimeout(f"worker {row.worker_id} did not start listening in time")
            await asyncio.sleep(0.1)

    async def _wait_until_ready(
        self, session: NodeSession, row: Worker, live: LiveWorker, deadline: float
    ) -> None:
        while True:
            try:
                resp = await self.http.get(f"{live.url}/health", timeout=5.0)
            except httpx.HTTPError:
                resp = None
            if resp is not None and resp.status_code == 200:
                return
            if resp is not None and resp.status_code == 500:
                raise _load_failure(_json_or_empty(resp.content))
            if time.monotonic() > deadline:
                raise LoadingTimeout(
                    f"worker {row.worker_id} still loading after "
                    f"{self.config.worker_loading_timeout_s:g}s"
                )
            if resp is None:
                status = await session.call(
                    "worker_status", worker_id=row.worker_id, run_dir=session.run_dir
                )
                if not status["alive"]:
                    raise WorkerStartFailed(
                        f"worker exited while loading: {await self._last_log_line(session, row)}"
                    )
            await asyncio.sleep(0.1)

    async def _loaded_vram(self, live: LiveWorker) -> int | None:
        """What a loaded worker holds on its GPU(s), from its /v1/ready: the next
        start of the model on this GPU model is checked against it. None on the
        CPU, or when the worker does not answer (the start goes on without it)."""
        try:
            resp = await self.http.get(f"{live.url}/v1/ready", timeout=5.0)
        except httpx.HTTPError:
            return None
        vram = _json_or_empty(resp.content).get("vram_bytes") if resp.status_code == 200 else None
        return vram if isinstance(vram, int) and not isinstance(vram, bool) else None

    async def _last_log_line(self, session: NodeSession, row: Worker) -> str:
        tail = await session.call(
            "log_tail", worker_id=row.worker_id, run_dir=session.run_dir, lines=20
        )
        lines = [line for line in tail["lines"] if line.strip()]
        return lines[-1].strip() if lines else "no output"

    async def _stop_after_failure(
        self, session: NodeSession, row: Worker, exc: BaseException
    ) -> None:
        reason = exc.message if isinstance(exc, RbeeError) else type(exc).__name__
        log.warning("worker %s failed to start: %s", row.worker_id, reason)
        row = Worker.get_by_id(row.worker_id)
        if row.state != S.FAILED:
            transition(row, S.FAILED, reason)
        transition(row, S.KILLING, "start failed")
        try:
            await asyncio.shield(self._stop_on_node(session, row))
        finally:
            transition(row, S.STOPPED, "start failed")

    # --- inference -------------------------------------------------------------

    def claim(self, live: LiveWorker, job_id: str) -> None:
        """Count a stream against the worker's slots. Synchronous, so a router's
        choice and its claim happen with no other request in between."""
        live.in_flight += 1
        if live.in_flight == 1:
            self._record_state_soon(live)
        live.no_streams.clear()
        self.mark_progress(live.worker_id)  # the watchdog's clock starts with the request
        self.publish(
            "request_started",
            job_id=job_id,
            worker_id=live.worker_id,
            node=live.node,
            model=live.model_ref,
        )

    def release(self, live: LiveWorker) -> None:
        live.in_flight = max(0, live.in_flight - 1)
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
        row = Worker.get_or_none(Worker.worker_id == live.worker_id)
        if row is None or row.state not in (S.IDLE, S.BUSY):
            return  # draining, stopped ...: not the request count's to change
        if live.in_flight and row.state == S.IDLE:
            transition(row, S.BUSY, f"{live.in_flight} request(s) in flight")
        elif not live.in_flight and row.state == S.BUSY:
            transition(row, S.IDLE, "no request in flight")

    async def open_stream(self, live: LiveWorker, payload: dict[str, Any]) -> WorkerStream:
        """Start an inference on a worker already claimed; errors before the first
        byte release the claim and raise. The request's correlation id and
        deadline go along as headers."""
        body = json.dumps(payload).encode()
        try:
            await self._reattach(live)  # may move the forward: the address comes after
            host, port = live.address
            headers = [("content-type", "application/json"), *ctx.outgoing_headers().items()]
            token = self.tokens.token_at(host, port)
            if token is not None:
                headers.append(("authorization", f"Bearer {token}"))
            response = await worker_stream.open_stream(
                live.stream_pool(), f"{host}:{port}", "/v1/inference", body, headers
            )
        except StreamError as exc:
            self.release(live)
            raise InferenceFailed(f"worker {live.worker_id} did not answer: {exc}") from exc
        except BaseException:
            self.release(live)
            raise
        if response.status != 200:
            self.release(live)
            try:
                answer = await response.read()
            except StreamError:
                answer = b""
            finally:
                await response.aclose()
            raise _worker_error(response.status, answer)
        # With the request's correlation id, like every line logged for it.
        log.info(
            "job %s: streaming from worker %s on %s",
            payload.get("job_id"),
            live.worker_id,
            live.node,
        )
        if self.audit is not None:  # ids and counts only: never the prompt's text
            self.audit.record(
                "inference.started",
                job_id=payload.get("job_id"),
                worker_id=live.worker_id,
                node=live.node,
                model_ref=live.model_ref,
                prompt_chars=len(str(payload.get("prompt", ""))),
            )
        return response

    async def relay(self, live: LiveWorker, response: WorkerStream) -> AsyncGenerator[bytes, None]:
        """The worker's bytes as they come, and what they said once they end."""
        sent = 0
        started = time.monotonic()
        first_token_s: float | None = None
        tail = b""  # the end of the stream, where the worker's `end` event is
        outcome = "CANCELLED"  # the client went away, unless the stream says otherwise
        try:
            try:
                async for chunk in response.chunks():
                    sent += len(chunk)
                    self.mark_progress(live.worker_id)
                    tail = (tail + chunk)[-4096:]
                    if first_token_s is None and b'"token"' in chunk:
                        first_token_s = time.monotonic() - started
                    yield chunk
            except StreamError as exc:
                # The worker died, was killed, or its node's link went down
                # mid-stream: end the stream with an error event the client can
                # act on, instead of a silent cut.
                if await self._connection_lost(live):
                    outcome = "NODE_UNREACHABLE"
                    message = f"lost the connection to node {live.node} mid-stream"
                else:
                    outcome = "WORKER_DIED"
                    message = f"worker {live.worker_id} stopped mid-stream ({exc})"
                yield _error_event(outcome, message)
            else:
                outcome = "INCOMPLETE"
        finally:
            await response.aclose()
            if self.audit is not None:
                self.audit.record_soon("inference.completed", worker_id=live.worker_id, bytes=sent)
            self.release(live)
            # The figures at the loop's next turn, after the client's response has
            # ended (reading them was about 0.1 ms before its last bytes), and
            # after release()'s idle record, queued the same way: a dashboard
            # sees the worker idle before the request's figures.
            asyncio.get_running_loop().call_soon(
                self._publish_finished, live, tail, outcome, first_token_s
            )

    def _publish_finished(
        self, live: LiveWorker, tail: bytes, outcome: str, first_token_s: float | None
    ) -> None:
        end = _last_event(tail, "end") or {}
        error = None if end else _last_event(tail, "error")
        if end:
            outcome = str(end.get("stop_reason", outcome))
        elif error:
            outcome = str(error.get("code", outcome))
        tokens = int(end.get("tokens_out") or 0)
        decode_ms = end.get("decode_time_ms") or 0
        self.publish(
            "request_finished",
            job_id=end.get("job_id"),
            worker_id=live.worker_id,
            node=live.node,
            outcome=outcome,
            tokens_out=tokens,
            ttft_ms=round(first_token_s * 1000, 2) if first_token_s is not None else None,
            decode_time_ms=decode_ms,
            tokens_per_s=round(tokens / (decode_ms / 1000), 1) if decode_ms else None,
        )

    async def _connection_lost(self, live: LiveWorker) -> bool:
        """Whether a stream broke because the node's connection closed (it closes
        its forwards first, itself a moment later)."""
        if live.session is None:
            return False
        for _ in range(10):
            if not live.session.alive:
                return True
            await asyncio.sleep(0.05)
        return False

    async def _reattach(self, live: LiveWorker) -> None:
        """Forward to a worker again once its node's connection was lost and made
        anew: the worker kept running on the node, so it keeps its id and slots."""
        if live.session is None or live.session.alive:
            return
        session = await self.session_for(get_node(live.node))  # NODE_UNREACHABLE if still cut
        if live.session is session:
            return
        if live.direct_host is not None:  # reached without a forward: nothing to redo
            live.drop_streams()
            live.session = session
            return
        status = await session.call(
            "worker_status", worker_id=live.worker_id, run_dir=session.run_dir
        )
        token = self.token_file.load().get(live.worker_id)
        if not status["alive"] or token is None:
            raise InferenceFailed(f"worker {live.worker_id} is gone from {live.node}")
        local_port = await session.forward(live.remote_port)
        live.drop_streams()  # they ran over the connection that was lost
        self.tokens.forget(live.local_port)
        self.tokens.bind(local_port, token)
        live.local_port, live.session = local_port, session
        log.info("worker %s: forwarded again after its node reconnected", live.worker_id)

    # --- stopping ----------------------------------------------------------------

    async def shutdown(self, worker_id: str, reason: str = "shutdown requested") -> dict[str, Any]:
        """Drain, then stop. New requests skip the worker (503 WORKER_DRAINING when
        it was the only one that could serve them); the streams in flight get
        `worker_stop_grace_s` to finish; then SIGTERM, and SIGKILL of its group after
        the same grace. `forced`: a stream was still running or SIGKILL was needed.
        A second call for the same worker waits for the first one's answer."""
        pending = self._shutdowns.get(worker_id)
        if pending is None:
            row = Worker.get_or_none(Worker.worker_id == worker_id)
            if row is None or row.state not in LIVE:
                raise WorkerNotFound(f"no running worker {worker_id!r}")
            pending = asyncio.ensure_future(self._drain_and_stop(row, reason))
            self._shutdowns[worker_id] = pending
            pending.add_done_callback(lambda _: self._shutdowns.pop(worker_id, None))
        return await asyncio.shield(pending)

    async def _drain_and_stop(self, row: Worker, reason: str) -> dict[str, Any]:
        if row.state in (S.IDLE, S.BUSY):
            transition(row, S.DRAINING, reason)
        live = self._live.get(row.worker_id)
        cut = 0
        if live is not None:
            live.draining = True
            if live.in_flight > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(live.no_streams.wait(), self.config.worker_stop_grace_s)
            cut = live.in_flight
        session = await self.session_for(row.node)
        result = await self._stop_on_node(session, row)
        forced = bool(result["forced"]) or cut > 0
        if cut:
            why = f"forced: {cut} stream(s) still running after the grace period"
        else:
            why = "forced kill" if result["forced"] else "stopped"
        transition(row, S.STOPPED, why)
        return {"worker_id": row.worker_id, "stopped": result["stopped"], "forced": forced}

    async def _stop_on_node(self, session: NodeSession, row: Worker) -> dict[str, Any]:
        live = self._live.pop(row.worker_id, None)
        if live is not None:
            live.forget_address(self.tokens)
            session.close_forward(live.remote_port)
        self.token_file.drop(row.worker_id)
        return dict(
            await session.call(
                "stop_worker",
                worker_id=row.worker_id,
                run_dir=session.run_dir,
                grace_s=self.config.worker_stop_grace_s,
                timeout=self.config.worker_stop_grace_s + 10.0,
            )
        )

    async def stop_all(self, node_name: str | None = None) -> dict[str, int]:
        """Stop every live worker (of one node, or all) in parallel."""
        query = Worker.select().where(Worker.state.in_([s.value for s in LIVE]))
        if node_name is not None:
            query = query.where(Worker.node == node_name)
        results = await asyncio.gather(
            *(self.shutdown(w.worker_id) for w in query), return_exceptions=True
        )
        counts = {"graceful": 0, "forced": 0, "failed": 0}
        for result in results:
            if isinstance(result, BaseException):
                counts["failed"] += 1
                log.warning("stopping a worker failed: %s", result)
            else:
                counts["forced" if result["forced"] else "graceful"] += 1
        return counts

    async def aclose(self) -> None:
        for live in self._live.values():
            live.drop_streams()
        await self.http.aclose()


def node_address(session: NodeSession) -> str:
    """The node's address as the queen's SSH connection reached it: where its
    workers listen and are called when the node is set to direct access."""
    peer = session.conn.get_extra_info("peername")
    if not peer:
        raise WorkerStartFailed(f"no address known for node {session.target.name}")
    return str(peer[0])


def draining_error(live: LiveWorker) -> WorkerDraining:
    return WorkerDraining(
        f"worker {live.worker_id} ({live.model_ref} on {live.node}) is shutting down; "
        "retry once it has stopped",
        worker_id=live.worker_id,
    )


def worker_json(row: Worker, live: LiveWorker | None) -> dict[str, Any]:
    state = row.state
    if live is not None and state in (S.IDLE, S.BUSY):  # the exact count, not the record
        state = S.BUSY.value if live.in_flight else S.IDLE.value
    return {
        "worker_id": row.worker_id,
        "node": row.node_id,  # type: ignore[attr-defined]
        "state": state,
        "model_ref": row.model_ref,
        "backend": row.backend,
        "device": row.device,
        "pid": row.pid,
        "port": row.port,
        "url": live.url if live else None,
        "started_at": row.started_at.isoformat() if row.started_at else None,
        "last_error": row.last_error,
        "vram_bytes": row.vram_bytes,
    }


def _error_event(code: str, message: str) -> bytes:
    event = json.dumps({"type": "error", "code": code, "message": message})
    return f"data: {event}\n\ndata: [DONE]\n\n".encode()


def _last_event(tail: bytes, kind: str) -> dict[str, Any] | None:
    """The last event of `kind` in the end of a stream, if it is there whole."""
    for line in reversed(tail.split(b"\n")):
        if line.startswith(b"data: {") and f'"type": "{kind}"'.encode() in line:
            try:
                event = json.loads(line[len(b"data: ") :])
            except ValueError:
                return None
            return event if isinstance(event, dict) else None
    return None


def _json_or_empty(body: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(body)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _load_failure(health: dict[str, Any]) -> RbeeError:
    """A worker's failed load (its /health 500 body) as the error its code names:
    a GPU stack the node cannot use is BACKEND_UNAVAILABLE, a cache that does not
    fit INSUFFICIENT_VRAM; anything else a failed start."""
    message = str(health.get("message") or "no reason given")
    code = health.get("code")
    if code == BackendUnavailable.code:
        return BackendUnavailable(f"the worker cannot use its GPU: {message}")
    if code == InsufficientVram.code:
        return InsufficientVram(f"the worker ran out of VRAM while loading: {message}")
    return WorkerStartFailed(f"worker could not load the model: {message}")


def _worker_error(status: int, body: bytes) -> RbeeError:
    error = _json_or_empty(body).get("error") or {}
    message = str(error.get("message") or f"worker answered HTTP {status}")
    details = error.get("details") or {}
    code = error.get("code")
    if code == "ALL_SLOTS_BUSY":
        return AllSlotsBusy(message, **details)
    if code == "REQUEST_TIMEOUT":
        return RequestTimeout(message)
    if status == 400:
        return InvalidRequest(message, **details)
    return InferenceFailed(message, worker_code=code)
