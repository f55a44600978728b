"""JSON-lines RPC over stdin/stdout.

Request:  {"id": 1, "op": "probe", "args": {...}}
Response: {"id": 1, "ok": true, "result": {...}}
      or  {"id": 1, "ok": false, "error": {"code": "...", "message": "..."}}

Each request runs in its own thread so a slow `stop_worker` (which waits for a
process to exit) never holds up a health check behind it. When stdin closes
(the SSH session ended) the helper exits; the workers it started keep running
in their own sessions and are found again through their pid files.
"""

from __future__ import annotations

import importlib
import json
import sys
import threading

from rbee_hive.errors import OpError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a few ms at every helper start; only mypy needs it
    from collections.abc import Callable
    from typing import Any, TextIO

    Handler = Callable[..., Any]

# op -> "module:function", imported on first use: a fresh helper only has to
# answer `ping` to be up, so its start pays for json and threading alone, not
# for subprocess, ctypes, hashlib and the rest that the other ops need.
HANDLERS: dict[str, str] = {
    "ping": "alive:ping",
    "probe": "ops:probe",
    "path_info": "ops:path_info",
    "spawn_worker": "ops:spawn_worker",
    "worker_status": "ops:worker_status",
    "stop_worker": "ops:stop_worker",
    "list_workers": "ops:list_workers",
    "log_tail": "ops:log_tail",
    "install_status": "install:install_status",
    "install_venv": "install:install_venv",
    "model_store": "models:model_store",
    "model_scan": "models:model_scan",
    "model_prepare": "models:model_prepare",
    "model_commit": "models:model_commit",
    "model_remove": "models:model_remove",
    "model_size": "models:model_size",
    "model_fetch_start": "fetches:model_fetch_start",
    "model_fetch_events": "fetches:model_fetch_events",
    "model_fetch_cancel": "fetches:model_fetch_cancel",
}
_import_lock = threading.Lock()


def _handler(op: str) -> Handler:
    module, name = HANDLERS[op].split(":")
    with _import_lock:  # requests run in threads; import each module once
        return getattr(importlib.import_module(f"rbee_hive.{module}"), name)  # type: ignore[no-any-return]


def handle(request: dict[str, Any]) -> dict[str, Any]:
    req_id = request.get("id")
    op = request.get("op")
    if not isinstance(op, str) or op not in HANDLERS:
        return _error(req_id, "UNKNOWN_OP", f"unknown op: {op!r}")
    args = request.get("args") or {}
    if not isinstance(args, dict):
        return _error(req_id, "INVALID_REQUEST", "args must be an object")
    try:
        return {"id": req_id, "ok": True, "result": _handler(op)(**args)}
    except OpError as exc:
        return _error(req_id, exc.code, str(exc))
    except TypeError as exc:
        return _error(req_id, "INVALID_REQUEST", f"{op}: {exc}")
    except Exception as exc:  # report, never die: the channel serves other calls
        return _error(req_id, "HELPER_FAILED", f"{op}: {type(exc).__name__}: {exc}")


def _error(req_id: Any, code: str, message: str) -> dict[str, Any]:
    return {"id": req_id, "ok": False, "error": {"code": code, "message": message}}


def serve(stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> None:
    write_lock = threading.Lock()

    def reply(response: dict[str, Any]) -> None:
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
