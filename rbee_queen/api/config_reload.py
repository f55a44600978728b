"""Reload the queen's settings on a running queen (SIGHUP, POST /v2/admin/reload).

The file and the environment are read again with the flags the queen started
with. Settings the schema marks reloadable take effect at once through the
services' `reconfigure`; a changed setting that needs a restart keeps its old
value and is reported; settings that fail validation change nothing at all,
the token and keys included. Every reload is audited and published as a
`config_reloaded` event naming the settings, never their values.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

from rbee_queen.config import QueenConfig
from rbee_queen.config_load import ConfigInvalid, ConfigOrigin, resolve
from rbee_queen.config_schema import SETTINGS
from rbee_queen.errors import RbeeError
from rbee_queen.services import Services
from rbee_wire.queen_events import ConfigReloaded

log = logging.getLogger("rbee.queen.config")


def read_again(config: QueenConfig) -> QueenConfig:
    """The settings as the file and the environment say now; raises ConfigInvalid."""
    base = config.origin or ConfigOrigin(config.home / os.devnull, False, {})
    origin = base.again()
    return QueenConfig.from_values(config.home, resolve(origin, os.environ), origin)


def changes(old: QueenConfig, new: QueenConfig) -> tuple[list[str], list[str]]:
    """(reloadable settings that changed, changed settings that need a restart)."""
    changed = [s for s in SETTINGS if getattr(old, s.field) != getattr(new, s.field)]
    return [s.path for s in changed if s.reloadable], [s.path for s in changed if not s.reloadable]


def merged(old: QueenConfig, new: QueenConfig, applied: list[str]) -> QueenConfig:
    """`old` with the applied settings taken from `new`; sources follow the values."""
    taken = {s.field: getattr(new, s.field) for s in SETTINGS if s.path in applied}
    assert new.origin is not None
    sources = dict(new.origin.sources)
    if old.origin is not None:
        for s in SETTINGS:
            if getattr(old, s.field) != getattr(new, s.field) and s.path not in applied:
                sources[s.path] = old.origin.sources.get(s.path, "default")
    origin = dataclasses.replace(new.origin, sources=sources)
    return dataclasses.replace(old, **taken, origin=origin)


def reload_config(svc: Services) -> dict[str, Any]:
    """Apply what changed; returns the outcome (as the event says it)."""
    old = svc.config
    try:
        new = read_again(old)
        applied, restart_needed = changes(old, new)
        reload_keys(svc, new)
    except (ConfigInvalid, RbeeError) as exc:
        problems = exc.problems if isinstance(exc, ConfigInvalid) else [exc.message]
        return failed(svc, problems)
    svc.reconfigure(merged(old, new, applied))
    for path in restart_needed:
        log.warning("config reload: %s changed but needs a restart; kept as it was", path)
    log.info("config reloaded: applied %s", ", ".join(applied) or "nothing new")
    svc.audit.record(
        "config.reloaded",
        applied=",".join(applied),
        restart_needed=",".join(restart_needed),
        owner_source=svc.keys.owner.source if svc.keys.owner else "none",
    )
    return publish(
        svc,
        ConfigReloaded(
            type="config_reloaded",
            ok=True,
            applied=applied,
            restart_needed=restart_needed,
            error=None,
        ),
    )


def reload_keys(svc: Services, new: QueenConfig) -> None:
    """The token and named keys, from the token file in force after this reload;
    on failure the key ring keeps its old file and keys."""
    previous = svc.keys.token_file
    svc.keys.token_file = new.token_file
    try:
        svc.keys.load(create=False)
    except RbeeError:
        svc.keys.token_file = previous
        raise


def failed(svc: Services, problems: list[str]) -> dict[str, Any]:
    reason = "; ".join(problems)
    log.error("config reload failed, nothing changed: %s", reason)
    svc.audit.record("config.reload_failed", reason=reason[:200])
    return publish(
        svc,
        ConfigReloaded(
            type="config_reloaded", ok=False, applied=[], restart_needed=[], error=reason
        ),
    )


def publish(svc: Services, event: ConfigReloaded) -> dict[str, Any]:
    svc.bus.publish(event)
    return dict(event)


def install(svc: Services) -> Callable[[], None]:
    """Hook SIGHUP to a reload; returns the undo."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, reload_config, svc)
    except (ValueError, RuntimeError):  # not the main thread (an in-process test client)
        return lambda: None

    def uninstall() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return uninstall
