"""Queen settings: where state lives and the timeouts it works by.

Every setting is defined once in `config_schema.py`; `config_load.py` reads
them from the flags, the environment, `queen.toml` and the defaults, in that
order, and checks them. `QueenConfig` is the checked result the queen runs by.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rbee_queen.config_load import ConfigOrigin, resolve
from rbee_queen.config_schema import SETTINGS
from rbee_queen.database_url import PostgresUrl


def rbee_home() -> Path:
    return Path(os.environ.get("RBEE_HOME") or Path.home() / ".rbee").expanduser()


@dataclass(frozen=True)
class QueenConfig:
    home: Path
    host: str = "127.0.0.1"
    port: int = 8080
    allow_low_port: bool = False
    log_level: str = "info"
    ssh_connect_timeout_s: float = 10.0
    ssh_connect_concurrency: int = 16
    worker_loading_timeout_s: float = 120.0
    worker_stop_grace_s: float = 10.0
    worker_memory_limit_mib: int = 0
    workers_max_per_model: int = 0  # 0: one per allowed node, no other limit
    control_timeout_s: float = 30.0
    stop_workers_on_exit: bool = True
    health_interval_s: float = 5.0
    gpu_interval_s: float = 15.0
    gpu_max_temp_c: float = 85.0
    reconnect_max_s: float = 10.0
    # None: the order in rbee_queen/keys.py (a credential, the environment,
    # RBEE_HOME/api-token).
    token_file: Path | None = None
    hf_token_file: Path | None = None
    database: Path | PostgresUrl | None = None  # a SQLite file or a PostgreSQL URL
    audit_path: Path | None = None
    audit_max_file_mb: float = 10.0
    supervisor_interval_s: float = 30.0
    worker_health_timeout_s: float = 5.0
    hung_after_s: float = 60.0
    idle_stop_s: float = 300.0
    restart_max_attempts: int = 3
    restart_base_delay_s: float = 1.0
    restart_max_delay_s: float = 60.0
    breaker_failures: int = 5
    breaker_window_s: float = 300.0
    restart_reset_after_s: float = 300.0
    check_messages: bool = False
    queue_max_length: int = 512
    queue_max_wait_s: float = 60.0
    queue_scale_up_depth: int = 1
    queue_scale_up_after_s: float = 2.0
    http_max_head_bytes: int = 64 * 1024
    http_head_timeout_s: float = 10.0
    http_body_timeout_s: float = 30.0
    http_max_connections_per_client: int = 256
    db_busy_timeout_ms: int = 5000
    db_password_file: Path | None = None  # PostgreSQL's password (else libpq's PGPASSFILE)
    db_backups: int = 5
    db_backup_interval_s: float = 5.0
    db_history_keep_s: float = 86400.0
    db_stopped_workers_keep_s: float = 7 * 86400.0
    audit_min_free_mb: float = 100.0
    audit_disk_check_s: float = 30.0
    download_stall_s: float = 60.0
    queen_id: str = ""  # empty: nodes.lease.default_queen_id
    lease_ttl_s: float = 10.0
    lease_renew_s: float = 3.0
    # Where each value came from, and what a reload reads again.
    origin: ConfigOrigin | None = field(default=None, compare=False, repr=False)

    @property
    def store_location(self) -> Path | PostgresUrl:
        """Where the inventory lives: the SQLite file, or the PostgreSQL server."""
        return self.database or self.home / "queen.db"

    @property
    def db_path(self) -> Path | None:
        """The SQLite file; None when the database is on PostgreSQL."""
        location = self.store_location
        return location if isinstance(location, Path) else None

    @property
    def known_hosts_path(self) -> Path:
        return self.home / "known_hosts"

    @property
    def audit_dir(self) -> Path:
        return self.audit_path or self.home / "audit"

    @property
    def hf_cache_dir(self) -> Path:
        """Where hub downloads land on the queen before they go to a node."""
        return self.home / "hf-cache"

    @classmethod
    def load(
        cls,
        *,
        config_file: Path | None = None,
        flags: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> QueenConfig:
        """Flags, then environment, then the file, then defaults; raises
        ConfigInvalid with every problem found."""
        env = os.environ if environ is None else environ
        home = Path(env.get("RBEE_HOME") or Path.home() / ".rbee").expanduser()
        origin = ConfigOrigin.locate(home, config_file, env, dict(flags or {}))
        values = resolve(origin, env)
        return cls.from_values(home, values, origin)

    @classmethod
    def from_values(
        cls, home: Path, values: Mapping[str, Any], origin: ConfigOrigin | None
    ) -> QueenConfig:
        fields = dict(values)
        if fields.get("hf_token_file") is None:
            fields["hf_token_file"] = home / "hf-token"
        return cls(home=home, origin=origin, **fields)

    @classmethod
    def from_env(cls, **overrides: object) -> QueenConfig:
        """Defaults and the environment only (no file): for tests and tools."""
        config = cls.load(config_file=None, environ={**os.environ, "RBEE_CONFIG": os.devnull})
        return cls(**{**config.__dict__, **overrides})


def effective(config: QueenConfig) -> list[dict[str, Any]]:
    """Every setting in force with where it came from; a secret's value redacted."""
    sources = config.origin.sources if config.origin else {}
    rows = []
    for s in SETTINGS:
        value = getattr(config, s.field)
        if s.secret and value is not None:
            value = "<redacted>"
        elif isinstance(value, (Path, PostgresUrl)):
            value = str(value)
        rows.append(
            {
                "key": s.path,
                "value": value,
                "source": sources.get(s.path, "default"),
                "reloadable": s.reloadable,
            }
        )
    return rows
