"""JSON-lines RPC over stdin/stdout.

Request:  {"id": 1, "op": "probe", "args": {...}}
Response: {"id": 1, "ok": true, "result": {...}}
      or  {"id": 1, "ok": false, "error": {"code": "...", "message": "..."}}

Each request runs in its own thread so a slow `stop_worker` (which waits for a
process to exit) never holds up a health check behind it. When stdin closes
(the SSH session ended) the helper exits; the workers it started keep running
in their own sessions and are found again through their pid files.

The ops, their parameters and results are defined once, in
`rbee_wire.helper_ops`: a request whose op or argument names are not there is
refused before any handler runs.
"""

from __future__ import annotations

import importlib
import json
import sys
import threading

from rbee_hive.errors import OpError
from rbee_wire.helper_ops import OPS

TYPE_CHECKING = False
if TYPE_CHECKING:  # only mypy needs these
    from collections.abc import Callable
    from typing import Any, TextIO

    Handler = Callable[..., Any]

# Where each op of the contract (rbee_wire.helper_ops.OPS) is implemented: the
# function of that name in this module of rbee_hive, imported on first use. A
# fresh helper only has to answer `ping` to be up, so its start pays for json,
# threading and the contract (typing, about 5 ms) alone, not for subprocess,
# ctypes, hashlib and the rest that the other ops need.
_MODULES: dict[str, tuple[str, ...]] = {
    "alive": ("ping",),
    "ops": (
        "probe",
        "path_info",
        "spawn_worker",
        "worker_status",
        "stop_worker",
        "list_workers",
        "log_tail",
    ),
    "install": ("install_status", "install_venv"),
    "models": (
        "model_store",
        "model_scan",
        "model_prepare",
        "model_commit",
        "model_remove",
        "model_size",
    ),
    "fetches": ("model_fetch_start", "model_fetch_events", "model_fetch_cancel"),
}
_MODULE_OF = {op: module for module, ops in _MODULES.items() for op in ops}
# op -> "module:function", for every op of the contract and no other: an op the
# contract names without an implementation here stops the helper at import.
HANDLERS: dict[str, str] = {op: f"{_MODULE_OF[op]}:{op}" for op in OPS}
_import_lock = threading.Lock()


def _handler(op: str) -> Handler:
    module, name = HANDLERS[op].split(":")
    with _import_lock:  # requests run in threads; import each module once
        return getattr(importlib.import_module(f"rbee_hive.{module}"), name)  # type: ignore[no-any-return]


def handle(request: dict[str, Any]) -> dict[str, Any]:
    req_id = request.get("id")
    op = request.get("op")
    if not isinstance(op, str) or op not in OPS:
        return _error(req_id, "UNKNOWN_OP", f"unknown op: {op!r}")
    args = request.get("args") or {}
    if not isinstance(args, dict):
        return _error(req_id, "INVALID_REQUEST", "args must be an object")
    wrong = OPS[op].bad_args(args)
    if wrong is not None:
        return _error(req_id, "INVALID_REQUEST", wrong)
    try:
        return {"id": req_id, "ok": True, "result": _handler(op)(**args)}
    except OpError as exc:
        return _error(req_id, exc.code, str(exc))
    except TypeError as exc:
        return _error(req_id, "INVALID_REQUEST", f"{op}: {exc}")
    except Exception as exc:  # report, never die: the channel serves other calls
        return _error(req_id, "HELPER_FAILED", f"{op}: {type(exc).__name__}: {exc}")


def _utf8(stream: TextIO) -> None:
    """The queen writes UTF-8 (`rbee_wire.codec.encode_line`) whatever the node's
    locale says, which could decode a non-ASCII path as Latin-1; text streams
    in tests have no encoding to change."""
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(encoding="utf-8", errors="replace")


def _error(req_id: Any, code: str, message: str) -> dict[str, Any]:
    return {"id": req_id, "ok": False, "error": {"code": code, "message": message}}


def serve(stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> None:
    _utf8(stdin)
    write_lock = threading.Lock()

    def reply(response: dict[str, Any]) -> None:
        # ASCII out (json's escapes): a log line or path may hold U+2028 and its
        # kin, which a reader splitting on every line break would cut in two.
        line = json.dumps(response, separators=(",", ":"))
        with write_lock:
            stdout.write(line + "\n")
            stdout.flush()

    def run(request: dict[str, Any]) -> None:
        reply(handle(request))

    in_flight: list[threading.Thread] = []
    for raw in stdin:
        raw = raw.strip()
        if not raw:
            continue
        try:
            request = json.loads(raw)
        except ValueError:
            reply(_error(None, "INVALID_REQUEST", "not JSON"))
            continue
        if not isinstance(request, dict):
            reply(_error(None, "INVALID_REQUEST", "request must be an object"))
            continue
        if request.get("op") == "ping":  # fast path: no thread for the cheapest call
            run(request)
            continue
        thread = threading.Thread(target=run, args=(request,), daemon=True)
        thread.start()
        in_flight[:] = [t for t in in_flight if t.is_alive()] + [thread]
    # stdin closed: finish what was asked (a stop in progress must not be cut short).
    for thread in in_flight:
        thread.join(timeout=30)
