"""`setup install`: give a node a venv that can run workers.

The queen builds (or finds cached) the project's wheel, uploads it once per
content hash, and asks the node's helper to build `<install_path>/venv` with
it. The helper does the work in a temporary folder and swaps it in at the end,
so a failure leaves the node as it was; only a success changes the node's
`worker_python`. A request whose wheel and options are already installed
changes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import posixpath
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rbee_queen.errors import (
    DependenciesMissing,
    HelperFailed,
    InstallFailed,
    InstallInProgress,
    RbeeError,
)
from rbee_queen.fleet.pool import SessionPool
from rbee_queen.nodes.inventory import get_node, target_of
from rbee_queen.nodes.wheel import Wheel, build_wheel

# pip may download torch and friends (GBs on a CUDA index): allow for a slow link.
INSTALL_TIMEOUT_S = 3600.0
_HIVE_ERRORS: dict[str, type[RbeeError]] = {
    "INSTALL_FAILED": InstallFailed,
    "DEPENDENCIES_MISSING": DependenciesMissing,
    "INSTALL_IN_PROGRESS": InstallInProgress,
}


@dataclass(frozen=True)
class InstallOptions:
    python: str = ""  # the node's interpreter to build the venv from; "" = its python3
    system_site_packages: bool = False
    no_deps: bool = False
    index_url: str = ""

    def key(self, wheel: Wheel) -> str:
        """Names what is installed: the same key on the node means nothing to do."""
        blob = json.dumps({"wheel": wheel.digest, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Installer:
    def __init__(self, pool: SessionPool, home: Path) -> None:
        self.pool = pool
        self.home = home
        self._build_lock = asyncio.Lock()

    async def wheel(self) -> Wheel:
        async with self._build_lock:  # two installs at once build the wheel once
            return await asyncio.to_thread(build_wheel, self.home)

    async def install(self, node_name: str, options: InstallOptions) -> dict[str, Any]:
        node = get_node(node_name)
        steps: list[dict[str, Any]] = []
        started = time.monotonic()
        wheel = await self.wheel()
        steps.append(_step("wheel", f"{wheel.filename} ({wheel.digest})", started))
        session = await self.pool.get(target_of(node))
        key = options.key(wheel)
        status = await session.ops.install_status(install_path=session.install_dir)
        if status.get("installed") and status.get("key") == key:
            python = str(status["python"])
            _set_worker_python(node_name, python)
            return {
                "node_name": node_name,
                "changed": False,
                "worker_python": python,
                "steps": [*steps, {"step": "check", "detail": "already installed"}],
            }
        started = time.monotonic()
        remote_wheel = posixpath.join(session.install_dir, "wheels", wheel.digest, wheel.filename)
        uploaded = await session.upload(remote_wheel, wheel.path.read_bytes())
        steps.append(_step("upload", remote_wheel if uploaded else "already on the node", started))
        try:
            result = await session.ops.install_venv(
                timeout=INSTALL_TIMEOUT_S + 60.0,
                install_path=session.install_dir,
                wheel=remote_wheel,
                key=key,
                python=options.python,
                system_site_packages=options.system_site_packages,
                no_deps=options.no_deps,
                index_url=options.index_url,
                timeout_s=INSTALL_TIMEOUT_S,
            )
        except HelperFailed as exc:
            raise _translated(exc, node_name) from exc
        python = str(result["python"])
        _set_worker_python(node_name, python)
        return {
            "node_name": node_name,
            "changed": bool(result["changed"]),
            "worker_python": python,
            "steps": steps + list(result["steps"]),
        }


def _step(name: str, detail: str, started: float) -> dict[str, Any]:
    return {"step": name, "detail": detail, "seconds": round(time.monotonic() - started, 2)}


def _set_worker_python(node_name: str, python: str) -> None:
    node = get_node(node_name)  # re-read: the node may have changed during a long install
    if node.worker_python != python:
        node.worker_python = python
        node.save()


def _translated(exc: HelperFailed, node_name: str) -> RbeeError:
    cls = _HIVE_ERRORS.get(str(exc.details.get("helper_code")))
    if cls is None:
        return exc
    # The helper's message is "<op> on <node>: <what>"; keep the what, name the node once.
    what = exc.message.split(": ", 1)[-1]
    return cls(f"install on {node_name}: {what}; the node was left as it was", node=node_name)
