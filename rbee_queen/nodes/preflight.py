"""Preflight for `add-node`: named checks, each failure with a suggestion.

The checks run in order and stop at the first failure, since each needs the
one before it: key, connect, host_key, authenticate, run (the helper starts),
latency, python, install_path, disk. A failure keeps its own error code
(SSH_AUTH_FAILED, ...) and gains `details.check` and `details.suggestion`,
and its message names both, so the keeper's one line says what to do.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from dataclasses import asdict, dataclass
from typing import Any

from rbee_queen.errors import (
    ConnectionTimeout,
    HelperFailed,
    HostKeyUnknown,
    NodeError,
    NodeUnreachable,
    PreflightFailed,
    RbeeError,
    SshAuthFailed,
)
from rbee_queen.fleet.pool import SessionPool
from rbee_queen.fleet.session import NodeSession, NodeTarget
from rbee_wire.error_text import NOT_SHOWN, shown
from rbee_wire.helper_ops import ProbeResult

MIN_PYTHON = (3, 10)
MIN_DISK_FREE_BYTES = 2 * 1024**3
UNWRITABLE_FIX = "choose an --install-path the SSH user may write to"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Preflight:
    session: NodeSession
    probe: ProbeResult
    checks: list[Check]


def _fail(error: RbeeError, check: str, suggestion: str) -> RbeeError:
    """The same error class, its message naming the check and what to do."""
    details = {**error.details, "check": check, "suggestion": suggestion}
    return type(error)(f"preflight {check}: {error.message}; try: {suggestion}", **details)


def _key_shown(path: str | None) -> str | None:
    """The key path as a suggested command may hold it: plain characters only
    (safe in a shell unquoted), else a pointer to the field."""
    return path if path is None or shown(path) != NOT_SHOWN else "the ssh_key_path file"


def _connect_failure(error: RbeeError, target: NodeTarget) -> RbeeError:
    where = f"{target.user}@{target.host}:{target.port}"
    key = _key_shown(target.key_path)
    if isinstance(error, SshAuthFailed):
        suggestion = (
            f"check that {key}.pub is in ~{target.user}/.ssh/authorized_keys on the"
            f" node, that `ssh -i {key} {where}` works, and `chmod 600` the key"
        )
        if _loose_mode(target.key_path):
            suggestion = f"chmod 600 {key} (others can read it), then retry"
        return _fail(error, "authenticate", suggestion)
    if isinstance(error, HostKeyUnknown):
        return _fail(error, "host_key", "verify the fingerprint, then add --accept-new-host-key")
    if isinstance(error, NodeUnreachable | ConnectionTimeout):
        return _fail(error, "connect", f"check that sshd listens on {where} and is reachable")
    if isinstance(error, HelperFailed):
        if error.details.get("check") == "install_path":
            return _fail(_unwritable(error, target), "install_path", UNWRITABLE_FIX)
        return _fail(error, "run", "check that `python3` (3.10+) is on the node's PATH")
    if isinstance(error, NodeError) and "key" in error.code.lower():
        return _fail(error, "key", f"chmod 600 {key}")
    return error


def _unwritable(error: HelperFailed, target: NodeTarget) -> PreflightFailed:
    """The helper goes under the install path, so an unwritable one stops the
    connect at its upload: the login, key and host key passed, the path did not."""
    reason = error.message.rsplit(f" on {target.name}: ", 1)[-1]
    detail = f"{target.install_path} not writable ({reason})"
    where = f"{target.user}@{target.host}:{target.port}"
    checks = [Check("key", True, target.key_path or "ssh-agent")]
    checks += [Check(name, True, where) for name in ("connect", "host_key", "authenticate")]
    checks.append(Check("install_path", False, detail))
    return PreflightFailed(f"{target.name}: {detail}", checks=_json(checks))


def _loose_mode(path: str) -> bool:
    try:
        return bool(os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO))
    except OSError:
        return False


async def run_preflight(
    pool: SessionPool, target: NodeTarget, *, accept_new_host_key: bool
) -> Preflight:
    checks = [Check("key", True, target.key_path or "ssh-agent")]
    try:
        session = await pool.get(target, accept_new_host_key=accept_new_host_key, retry_now=True)
    except RbeeError as error:
        raise _connect_failure(error, target) from error
    where = f"{target.user}@{target.host}:{target.port}"
    checks += [Check(name, True, where) for name in ("connect", "host_key", "authenticate")]
    checks.append(Check("run", True, f"helper in {session.helper_dir}"))
    started = time.perf_counter()
    await session.ops.ping(timeout=15.0)
    checks.append(Check("latency", True, f"{(time.perf_counter() - started) * 1000:.1f} ms"))
    probe = await session.ops.probe(install_path=session.install_dir, timeout=30.0)
    checks += _node_checks(target, session, probe)
    failed = next((c for c in checks if not c.ok), None)
    if failed is not None:
        suggestion = {
            "python": "install python 3.10 or newer on the node as `python3`",
            "install_path": UNWRITABLE_FIX,
            "disk": f"free space under {session.install_dir} or choose another --install-path",
        }[failed.name]
        refused = PreflightFailed(f"{target.name}: {failed.detail}", checks=_json(checks))
        raise _fail(refused, failed.name, suggestion)
    return Preflight(session, probe, checks)


def _node_checks(target: NodeTarget, session: NodeSession, probe: ProbeResult) -> list[Check]:
    version = str(probe.get("python", "0"))
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    free = int(probe.get("disk_free_bytes") or 0)
    return [
        Check(
            "python",
            parts >= MIN_PYTHON,
            f"python {version}" + ("" if parts >= MIN_PYTHON else " (3.10+ needed)"),
        ),
        Check(
            "install_path",
            bool(probe.get("install_writable", True)),
            session.install_dir + ("" if probe.get("install_writable", True) else " not writable"),
        ),
        Check(
            "disk",
            free >= MIN_DISK_FREE_BYTES,
            f"{free / 1024**3:.1f} GiB free"
            + ("" if free >= MIN_DISK_FREE_BYTES else f" (needs {MIN_DISK_FREE_BYTES // 1024**3})"),
        ),
    ]


def _json(checks: list[Check]) -> list[dict[str, Any]]:
    return [c.to_json() for c in checks]


async def preflight_report(pool: SessionPool, target: NodeTarget, timeout: float) -> dict[str, Any]:
    """The same checks on a node already added, as a report rather than an error:
    every check that ran, and the failed one with what to do about it."""
    try:
        async with asyncio.timeout(timeout):
            checked = await run_preflight(pool, target, accept_new_host_key=False)
    except TimeoutError:
        error: RbeeError = ConnectionTimeout(f"{target.name}: no answer within {timeout:.0f}s")
        return _failed_report(target.name, _fail(error, "latency", "check the node's load"))
    except RbeeError as refused:
        return _failed_report(target.name, refused)
    return {"node_name": target.name, "ok": True, "checks": _json(checked.checks), "failed": None}


def _failed_report(name: str, error: RbeeError) -> dict[str, Any]:
    # An error that is not a named check's (an RPC that broke mid-way) counts
    # against `run`: the helper did not answer as it should.
    failed = {
        "check": str(error.details.get("check") or "run"),
        "code": error.code,
        "message": error.message.split("; try: ", 1)[0],
        "suggestion": str(error.details.get("suggestion") or ""),
    }
    checks = list(error.details.get("checks") or [])
    return {"node_name": name, "ok": False, "checks": checks, "failed": failed}
