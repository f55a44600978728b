"""`python -m rbee_worker`: bind, publish the port, serve while the model loads.

The socket is bound here (port 0 lets the OS choose) and the port written to the
state file before anything slow happens, so whoever spawned us can connect and
watch /health while the model loads in a background thread.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import ipaddress
import json
import logging
import os
import re
import signal
import socket
import sys
from pathlib import Path
from types import FrameType

from rbee_worker.auth import TOKEN_ENV, RequireToken, take_token
from rbee_worker.backends import BACKENDS, create_backend
from rbee_worker.gpu_args import add_gpu_arguments, check_gpu_arguments
from rbee_worker.loading import BackendHolder

log = logging.getLogger("rbee_worker")

WORKER_ID = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
# Shorter than the owner's 10 s stop grace: a job in flight may finish, then it is cut.
GRACEFUL_SHUTDOWN_S = 8
# A token made in the generation thread reaches the client only once the event
# loop's thread holds the GIL, which CPython takes from a busy thread after its
# switch interval (5 ms by default; a small model's generation loop is always
# busy). Traces put up to 8.6 ms between a token made and its event loop having
# it at the default, 0.1-1.1 ms at this, under load (docs/benchmarks.md).
GIL_HANDOFF_S = 0.0005


class OneLineFormatter(logging.Formatter):
    """The log file is read line by line (log tails), so tracebacks stay on one line."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


class QuietProbes(logging.Filter):
    """Owners poll /health and /v1/ready several times a second while we load;
    logging each poll would bury the events that matter."""

    PROBES = ("/health", "/v1/ready")

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and args[1] == "GET":
            return args[2] not in self.PROBES
        return True


def _configure_logging(worker_id: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        OneLineFormatter(f"%(asctime)s %(levelname)s worker[{worker_id}] %(name)s: %(message)s")
    )
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.getLogger("uvicorn.access").addFilter(QuietProbes())
    logging.getLogger("torch").setLevel(logging.WARNING)  # its exit-time stats are noise
    logging.captureWarnings(True)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m rbee_worker", description="An rbee inference worker."
    )
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--model", required=True, type=Path, help="model directory (HF format)")
    parser.add_argument("--backend", default="torch", choices=BACKENDS)
    parser.add_argument(
        "--device", help="cpu, cuda, cuda:N or a GPU ordinal N (default: cpu; exllamav2: cuda)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--direct-host",
        metavar="ADDR",
        help="also listen on ADDR (same port), for a queen that reaches workers directly; "
        "needs the bearer token",
    )
    parser.add_argument("--port", type=int, default=0, help="0 lets the OS choose")
    parser.add_argument("--state-file", type=Path, help="where to write {pid, port, worker_id}")
    parser.add_argument("--slots", type=int, default=1, help="requests served at once (default 1)")
    add_gpu_arguments(parser)
    args = parser.parse_args(argv)
    check_gpu_arguments(parser, args)
    if not WORKER_ID.match(args.worker_id):
        parser.error("--worker-id must be 1-256 characters of A-Z a-z 0-9 _ -")
    if not 1 <= args.slots <= 64:
        parser.error("--slots must be 1..64")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be 0..65535")
    if not _is_loopback(args.host):
        # Loopback only: the queen reaches it through an SSH forward, never the network.
        parser.error("--host must be a loopback address (reached through an SSH forward only)")
    if args.direct_host is not None and not _is_address(args.direct_host):
        parser.error("--direct-host must be an IP address")
    return args


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit this. Without it Nagle holds each small token event
    # until the client's delayed ACK (~40 ms), which is most of a warm first token.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    # Listening now means early connections queue until uvicorn accepts them.
    sock.listen(128)
    sock.set_inheritable(False)
    return sock


def bind_sockets(host: str, port: int, direct_host: str | None) -> list[socket.socket]:
    """The loopback socket (SSH forwards reach it), and with `direct_host` a second
    one on that address and the same port, so one port is all the state file says.
    Another process may hold the port on the other address: then a new one."""
    for _ in range(20):
        sock = bind_socket(host, port)
        if direct_host is None or direct_host == host:
            return [sock]
        try:
            return [sock, bind_socket(direct_host, sock.getsockname()[1])]
        except OSError as exc:
            sock.close()
            if port or exc.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, f"no port free on both {host} and {direct_host}")


def write_state_file(path: Path, data: dict[str, object]) -> None:
    """Atomically: a reader sees the old file, no file, or the whole new one."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _remove_state_file(path: Path) -> None:
    try:
        data = json.loads(path.read_text())
        if data.get("pid") == os.getpid():  # never remove a successor's file
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def serve(args: argparse.Namespace, token: str | None = None) -> int:
    import uvicorn

    from rbee_worker.app import create_app

    if args.direct_host is not None and not token:
        log.error("--direct-host needs %s: a worker on the network always needs a token", TOKEN_ENV)
        return 1
    try:
        sockets = bind_sockets(args.host, args.port, args.direct_host)
    except OSError as exc:
        where = f"{args.host} and {args.direct_host}" if args.direct_host else args.host
        log.error("cannot listen on %s port %d: %s", where, args.port, exc)
        return 1
    port = sockets[0].getsockname()[1]
    backend = create_backend(
        args.backend,
        args.model,
        args.device,
        slots=args.slots,
        gpu_split=args.gpu_split,
        cache_reserve_mb=args.cache_reserve_mb,
    )
    holder = BackendHolder(backend)
    app = create_app(holder, slots_total=args.slots)
    if token:
        app.add_middleware(RequireToken, token=token)
    else:
        log.warning("no %s: serving without a token (loopback only)", TOKEN_ENV)
    config = uvicorn.Config(
        app,
        log_config=None,  # our handler, one line per event
        lifespan="off",
        loop="asyncio",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    server = uvicorn.Server(config)

    # Until uvicorn installs its own handlers (and again after it restores ours and
    # re-raises the signal it caught), a SIGTERM just asks for a clean stop: exit 0.
    def request_exit(signum: int, frame: FrameType | None) -> None:
        server.should_exit = True

    signal.signal(signal.SIGTERM, request_exit)
    signal.signal(signal.SIGINT, request_exit)

    if args.state_file is not None:
        write_state_file(
            args.state_file, {"pid": os.getpid(), "port": port, "worker_id": args.worker_id}
        )
    hosts = args.host + (f" and {args.direct_host}" if args.direct_host else "")
    log.info("listening on %s port %d, pid %d", hosts, port, os.getpid())
    holder.start_loading()
    try:
        asyncio.run(server.serve(sockets=sockets))
    finally:
        if args.state_file is not None:
            _remove_state_file(args.state_file)
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    token = take_token()  # first: nothing started after this inherits it
    args = _parse_args(argv)
    _configure_logging(args.worker_id)
    sys.setswitchinterval(GIL_HANDOFF_S)
    return serve(args, token)


if __name__ == "__main__":
    sys.exit(main())
