"""Queen settings: where state lives and the timeouts it works by.

Everything has a default that works on a laptop; environment variables
override them (RBEE_HOME and friends), so tests point a queen at a temp dir.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def rbee_home() -> Path:
    return Path(os.environ.get("RBEE_HOME") or Path.home() / ".rbee").expanduser()


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


@dataclass(frozen=True)
class QueenConfig:
    home: Path
    host: str = "127.0.0.1"
    port: int = 8080
    ssh_connect_timeout_s: float = 10.0
    worker_loading_timeout_s: float = 120.0
    worker_stop_grace_s: float = 10.0
    control_timeout_s: float = 30.0
    stop_workers_on_exit: bool = True
    # Seconds between node health rounds (0: no health loop), and the cap on the
    # backoff between reconnects to a node that keeps failing.
    health_interval_s: float = 5.0
    gpu_interval_s: float = 15.0
    # No worker starts on a GPU hotter than this (GPU_TOO_HOT); cards throttle
    # from about 83-87 C.
    gpu_max_temp_c: float = 85.0
    reconnect_max_s: float = 10.0
    # The owner's API token from a file (else a credential, the environment or
    # RBEE_HOME/api-token, in that order: see rbee_queen/keys.py).
    token_file: Path | None = None
    # A Hugging Face token for gated or private repos (a 0600 file, one line).
    hf_token_file: Path | None = None
    # Worker supervision (0: no supervisor): a health check every interval, a
    # worker with a request in flight and no token for `hung_after_s` is hung,
    # an idle worker is stopped after `idle_stop_s` (0: never).
    supervisor_interval_s: float = 30.0
    worker_health_timeout_s: float = 5.0
    hung_after_s: float = 60.0
    idle_stop_s: float = 300.0
    # Restarts: 1, 2, 4 ... s (capped) at most `restart_max_attempts` in a row; the
    # circuit opens after `breaker_failures` in `breaker_window_s`; stable uptime
    # of `restart_reset_after_s` resets the counts.
    restart_max_attempts: int = 3
    restart_base_delay_s: float = 1.0
    restart_max_delay_s: float = 60.0
    breaker_failures: int = 5
    breaker_window_s: float = 300.0
    restart_reset_after_s: float = 300.0
    # Check every message that crosses a process boundary against its
    # definition in rbee_wire, logging "message contract violated" on a
    # mismatch. For test runs: it costs a parse per relayed chunk.
    check_messages: bool = False

    @property
    def db_path(self) -> Path:
        return self.home / "queen.db"

    @property
    def known_hosts_path(self) -> Path:
        return self.home / "known_hosts"

    @property
    def audit_dir(self) -> Path:
        return self.home / "audit"

    @property
    def hf_cache_dir(self) -> Path:
        """Where hub downloads land on the queen before they go to a node."""
        return self.home / "hf-cache"

    @classmethod
    def from_env(cls, **overrides: object) -> QueenConfig:
        values: dict[str, object] = {
            "home": rbee_home(),
            "ssh_connect_timeout_s": _env_float("RBEE_SSH_CONNECT_TIMEOUT", 10.0),
            "worker_loading_timeout_s": _env_float("RBEE_WORKER_LOADING_TIMEOUT", 120.0),
            "worker_stop_grace_s": _env_float("RBEE_WORKER_STOP_GRACE", 10.0),
            "health_interval_s": _env_float("RBEE_HEALTH_INTERVAL", 5.0),
            "gpu_interval_s": _env_float("RBEE_GPU_INTERVAL", 15.0),
            "gpu_max_temp_c": _env_float("RBEE_GPU_MAX_TEMP", 85.0),
            "reconnect_max_s": _env_float("RBEE_RECONNECT_MAX", 10.0),
            "supervisor_interval_s": _env_float("RBEE_SUPERVISOR_INTERVAL", 30.0),
            "worker_health_timeout_s": _env_float("RBEE_WORKER_HEALTH_TIMEOUT", 5.0),
            "hung_after_s": _env_float("RBEE_HUNG_AFTER", 60.0),
            "idle_stop_s": _env_float("RBEE_IDLE_STOP", 300.0),
            "restart_max_attempts": int(_env_float("RBEE_RESTART_MAX_ATTEMPTS", 3)),
            "restart_base_delay_s": _env_float("RBEE_RESTART_BASE_DELAY", 1.0),
            "breaker_failures": int(_env_float("RBEE_BREAKER_FAILURES", 5)),
            "check_messages": os.environ.get("RBEE_CHECK_MESSAGES") == "1",
            "hf_token_file": Path(os.environ.get("RBEE_HF_TOKEN_FILE") or rbee_home() / "hf-token"),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
